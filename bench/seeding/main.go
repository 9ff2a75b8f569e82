// Command seeding compares our seeder with qbittorrent-nox (libtorrent) as
// the source of the same archive torrent, downloaded on 127.0.0.1 by the same
// external client, aria2c. DHT, PEX and local discovery are off everywhere;
// peers meet through a tracker of this program's own. It prints one JSON
// object with both throughputs and their ratio.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/anacrolix/torrent/metainfo"

	"github.com/archivefleet/archivefleet/bench/proc"
	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/seed"
)

func main() {
	size := flag.Int64("size", 1<<30, "archive data size in bytes")
	work := flag.String("work", "", "work folder (default: a temp dir, removed afterwards)")
	flag.Parse()
	dir := *work
	if dir == "" {
		d, err := os.MkdirTemp("", "seedbench-")
		check(err)
		defer os.RemoveAll(d)
		dir = d
	}
	tr, announce := startTracker()

	// A community archive torrent of about size bytes.
	id := fixture.ID(fixture.Key())
	const msgSize = 1 << 20
	n := int(*size / msgSize)
	msgs := fixture.Messages{N: n, From: 1_700_000_000, To: 1_700_000_000 + uint64(n), Topics: []archive.Topic{{1}},
		Size: msgSize - 200}.Make()
	l := archive.Layout{DataDir: filepath.Join(dir, "seed"), TorrentDir: filepath.Join(dir, "torrents")}
	t0 := time.Now()
	res, err := archive.Build(context.Background(), l, archive.BuildOptions{Community: id, From: 1_700_000_000, To: 1_700_000_000 + uint64(n) + 1,
		Source: archive.NewSliceSource(msgs), Torrent: archive.TorrentOptions{AnnounceList: [][]string{{announce}}}})
	check(err)
	msgs = nil
	total := res.DataBytes + res.IndexBytes
	log.Printf("built %d archives, %d bytes, in %v", len(res.Archives), total, time.Since(t0))

	ours := runOurs(dir, l, id, total)
	tr.reset()
	qbt := runQbittorrent(dir, l, id, total)
	out := map[string]any{
		"bytes": total, "downloader": "aria2c 1.36",
		"ours_seconds": ours.Seconds(), "ours_MBps": float64(total) / ours.Seconds() / 1e6,
		"qbittorrent_seconds": qbt.Seconds(), "qbittorrent_MBps": float64(total) / qbt.Seconds() / 1e6,
		"ratio_ours_over_qbittorrent": qbt.Seconds() / ours.Seconds(),
	}
	json.NewEncoder(os.Stdout).Encode(out)
}

// runOurs seeds with the seeder's own client configuration and times aria2c.
func runOurs(dir string, l archive.Layout, id archive.CommunityID, total int64) time.Duration {
	cfg := seed.Config{DataDir: l.DataDir, Trackers: true}
	cl, st, err := seed.NewClient(cfg, "127.0.0.1", 0, slog.New(slog.DiscardHandler))
	check(err)
	defer st.Close()
	defer cl.Close()
	mi, err := metainfo.LoadFromFile(l.TorrentPath(id))
	check(err)
	t, err := cl.AddTorrent(mi)
	check(err)
	<-t.GotInfo()
	t.DownloadAll()
	for !t.Complete().Bool() {
		time.Sleep(10 * time.Millisecond)
	}
	log.Printf("our seeder ready on port %d", cl.LocalPort())
	return aria2(dir, "ours", l.TorrentPath(id), total)
}

// runQbittorrent seeds the same files with qbittorrent-nox through its Web
// API (localhost needs no login with the config written here).
func runQbittorrent(dir string, l archive.Layout, id archive.CommunityID, total int64) time.Duration {
	profile := filepath.Join(dir, "qbt")
	conf := filepath.Join(profile, "qBittorrent", "config")
	check(os.MkdirAll(conf, 0o755))
	webPort, btPort := proc.MustFreePort(), proc.MustFreePort()
	check(os.WriteFile(filepath.Join(conf, "qBittorrent.conf"), []byte(fmt.Sprintf(`[LegalNotice]
Accepted=true

[BitTorrent]
Session\DHTEnabled=false
Session\LSDEnabled=false
Session\PeXEnabled=false
Session\Port=%d
Session\Interface=lo
Session\InterfaceName=lo
Session\AnonymousModeEnabled=false
Session\GlobalMaxRatio=-1
Session\QueueingSystemEnabled=false

[Preferences]
WebUI\Port=%d
WebUI\Address=127.0.0.1
WebUI\LocalHostAuth=false
WebUI\CSRFProtection=false
WebUI\HostHeaderValidation=false
Connection\UPnP=false
`, btPort, webPort)), 0o644))
	cmd := exec.Command("qbittorrent-nox", "--profile="+profile)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	check(cmd.Start())
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	api := fmt.Sprintf("http://127.0.0.1:%d/api/v2", webPort)
	for i := 0; ; i++ {
		if resp, err := http.Get(api + "/app/version"); err == nil && resp.StatusCode == 200 {
			resp.Body.Close()
			break
		}
		if i > 300 {
			log.Fatalf("qbittorrent-nox web API did not come up:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Add the torrent pointing at the existing files; let it check them.
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("torrents", "a.torrent")
	raw, err := os.ReadFile(l.TorrentPath(id))
	check(err)
	fw.Write(raw)
	mw.WriteField("savepath", l.DataDir)
	mw.Close()
	resp, err := http.Post(api+"/torrents/add", mw.FormDataContentType(), &body)
	check(err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		log.Fatalf("add torrent: %s %s", resp.Status, b)
	}
	for i := 0; ; i++ {
		resp, err := http.Get(api + "/torrents/info")
		check(err)
		var infos []struct {
			State    string  `json:"state"`
			Progress float64 `json:"progress"`
		}
		json.NewDecoder(resp.Body).Decode(&infos)
		resp.Body.Close()
		if len(infos) == 1 && infos[0].Progress == 1 && (infos[0].State == "uploading" || infos[0].State == "stalledUP") {
			break
		}
		if i > 6000 {
			log.Fatalf("qbittorrent never became a seeder: %+v\n%s", infos, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Make it announce now rather than at its next interval.
	http.Post(api+"/torrents/reannounce", "application/x-www-form-urlencoded", strings.NewReader("hashes=all"))
	log.Printf("qbittorrent-nox seeding on port %d", btPort)
	return aria2(dir, "qbt", l.TorrentPath(id), total)
}

// aria2 downloads the torrent into a fresh folder and returns the time from
// start to the file being complete.
func aria2(dir, name, torrentPath string, total int64) time.Duration {
	out := filepath.Join(dir, "dl-"+name)
	check(os.MkdirAll(out, 0o755))
	port := proc.MustFreePort()
	cmd := exec.Command("aria2c", "--dir="+out, "--seed-time=0", "--enable-dht=false", "--enable-dht6=false",
		"--bt-enable-lpd=false", "--enable-peer-exchange=false", "--bt-tracker-connect-timeout=5",
		"--listen-port="+strconv.Itoa(port), "--file-allocation=none", "--console-log-level=warn",
		"--summary-interval=0", "--check-integrity=false", "--bt-max-peers=0", torrentPath)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		log.Fatalf("aria2c from %s: %v\n%s", name, err, logs.String())
	}
	d := time.Since(t0)
	var got int64
	filepath.Walk(out, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && !strings.HasSuffix(p, ".aria2") {
			got += fi.Size()
		}
		return nil
	})
	if got != total {
		log.Fatalf("aria2c from %s got %d of %d bytes", name, got, total)
	}
	log.Printf("aria2c downloaded %d bytes from %s in %v", total, name, d)
	return d
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
