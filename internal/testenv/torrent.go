package testenv

import (
	"testing"

	g "github.com/anacrolix/generics"
	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/storage"
)

// TorrentClient is an anacrolix client on 127.0.0.1 with no DHT, trackers or
// port forwarding, so it finds peers only through x.pe or explicit peers.
// Like status-go's v1.41 client it writes files in place (no .part files)
// under dir/<torrent name>, with piece completion kept in memory.
func TorrentClient(t testing.TB, dir string, seed bool) *torrent.Client {
	t.Helper()
	cfg := torrent.NewDefaultClientConfig()
	cfg.ListenHost = func(string) string { return "127.0.0.1" }
	cfg.ListenPort = 0
	cfg.NoDHT, cfg.DisableTrackers, cfg.NoDefaultPortForwarding, cfg.DisableIPv6 = true, true, true, true
	cfg.Seed = seed
	cfg.DataDir = dir
	cfg.DefaultStorage = storage.NewFileOpts(storage.NewFileClientOpts{ClientBaseDir: dir, UsePartFiles: g.Some(false),
		PieceCompletion: storage.NewMapPieceCompletion()})
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		t.Fatalf("torrent client: %v", err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}
