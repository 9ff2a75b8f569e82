package testenv

import (
	"context"
	"testing"
	"time"

	g "github.com/anacrolix/generics"
	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
)

// TorrentClient is an anacrolix client on 127.0.0.1 with no DHT, trackers or
// port forwarding, so it finds peers only through x.pe or explicit peers.
// Like status-go's v1.41 client it writes files in place (no .part files)
// under dir/<torrent name>, with piece completion kept in memory. tune
// adjusts the configuration before the client starts.
func TorrentClient(t testing.TB, dir string, seed bool, tune ...func(*torrent.ClientConfig)) *torrent.Client {
	t.Helper()
	cfg := torrent.NewDefaultClientConfig()
	cfg.ListenHost = func(string) string { return "127.0.0.1" }
	cfg.ListenPort = 0
	cfg.NoDHT, cfg.DisableTrackers, cfg.NoDefaultPortForwarding, cfg.DisableIPv6 = true, true, true, true
	cfg.Seed = seed
	cfg.DataDir = dir
	cfg.DefaultStorage = storage.NewFileOpts(storage.NewFileClientOpts{ClientBaseDir: dir, UsePartFiles: g.Some(false),
		PieceCompletion: storage.NewMapPieceCompletion()})
	for _, f := range tune {
		f(cfg)
	}
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		t.Fatalf("torrent client: %v", err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// Download fetches a magnet link with a fresh TorrentClient writing under
// dir and returns the torrent once complete, failing the test at timeout.
// A client with no DHT or tracker knows its peers only from the magnet's
// x.pe: when nothing arrives for 5 s and no peer is connected, it dials them
// again, as a member's client would rediscover them, and logs that it did
// (with the peer counts) so a seeder that stops serving still fails the test.
func Download(t testing.TB, dir, magnet string, timeout time.Duration) *torrent.Torrent {
	t.Helper()
	m, err := metainfo.ParseMagnetUri(magnet)
	if err != nil {
		t.Fatalf("magnet %s: %v", magnet, err)
	}
	tt, err := TorrentClient(t, dir, false).AddMagnet(magnet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	select {
	case <-tt.GotInfo():
	case <-ctx.Done():
		t.Fatalf("no metadata for %s within %v", magnet, timeout)
	}
	tt.DownloadAll()
	Await(ctx, t, tt, m.Params["x.pe"], "download", func() bool { return tt.Complete().Bool() })
	return tt
}

// Await waits until done, failing the test when ctx ends. A client with no
// DHT or tracker knows its peers only from x.pe: when nothing arrives for
// 5 s and no peer is connected, it dials them again, as a member's client
// would rediscover them, and logs that it did (with the peer counts), so a
// seeder that stops serving still fails the test.
func Await(ctx context.Context, t testing.TB, tt *torrent.Torrent, xpe []string, what string, done func() bool) {
	t.Helper()
	last, since := int64(-1), time.Now()
	for !done() {
		st := tt.Stats()
		if n := tt.BytesCompleted(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) > 5*time.Second && st.ActivePeers == 0 && st.HalfOpenPeers == 0 {
			t.Logf("%s of %s stalled at %d bytes with no peer connected (%d pending, %d known): dialling x.pe again",
				what, tt.InfoHash().HexString(), n, st.PendingPeers, len(tt.KnownSwarm()))
			var peers []torrent.PeerInfo
			for _, a := range xpe {
				peers = append(peers, torrent.PeerInfo{Addr: torrent.StringAddr(a), Source: torrent.PeerSourceDirect, Trusted: true})
			}
			tt.AddPeers(peers)
			since = time.Now()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s incomplete: %d of %d bytes (peers: %d active, %d half-open, %d pending, %d seeders, %d known)",
				what, tt.BytesCompleted(), tt.Length(), st.ActivePeers, st.HalfOpenPeers, st.PendingPeers, st.ConnectedSeeders, len(tt.KnownSwarm()))
		case <-time.After(50 * time.Millisecond):
		}
	}
}
