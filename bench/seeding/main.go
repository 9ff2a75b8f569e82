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
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/anacrolix/torrent/metainfo"

	"github.com/archivefleet/archivefleet/bench/proc"
	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/seeder"
)

func main() {
	proc.BurnIfAsked()
	size := flag.Int64("size", 1<<30, "archive data size in bytes")
	work := flag.String("work", "", "work folder (default: a temp dir, removed afterwards)")
	nRounds := flag.Int("rounds", 1, "rounds; each times both seeders in every condition, their order alternating")
	load := flag.Int("load", 0, "CPU burner processes running while each seeder serves (the loaded condition); 0: quiet only")
	quiet := flag.Bool("quiet", true, "also time a quiet condition in every round (always on when -load is 0)")
	traceDir := flag.String("trace", "", "folder for evidence: aria2c debug logs, our client's status every second, its debug log, CPU profiles, expvars")
	flag.StringVar(&variant, "variant", "", "client settings to try instead of the service's (see variants.go); empty: seeder.NewClient as is")
	flag.Parse()
	if _, ok := variants[variant]; variant != "" && !ok {
		log.Fatalf("unknown -variant %q", variant)
	}
	dir := *work
	if dir == "" {
		d, err := os.MkdirTemp("", "seedbench-")
		check(err)
		defer os.RemoveAll(d)
		dir = d
	}
	if *traceDir != "" {
		check(os.MkdirAll(*traceDir, 0o755))
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

	var conds []string
	if *quiet || *load == 0 {
		conds = append(conds, "quiet")
	}
	if *load > 0 {
		conds = append(conds, "load")
	}
	rounds := map[string][]map[string]any{}
	for r := range *nRounds {
		for _, cond := range conds {
			run := &runCtx{dir: dir, l: l, id: id, total: total, tr: tr, trace: *traceDir, tag: fmt.Sprintf("%s-r%d", cond, r)}
			if cond == "load" {
				run.burners = *load
			}
			order := []string{"ours", "qbt"}
			if r%2 == 1 {
				order = []string{"qbt", "ours"}
			}
			var ours, qbt time.Duration
			for _, who := range order {
				tr.reset()
				if who == "ours" {
					ours = runOurs(run)
				} else {
					qbt = runQbittorrent(run)
				}
			}
			ratio := qbt.Seconds() / ours.Seconds()
			log.Printf("round %d %s: ours %.2fs, qbittorrent-nox %.2fs, ratio %.2fx (first: %s)", r, cond, ours.Seconds(), qbt.Seconds(), ratio, order[0])
			rounds[cond] = append(rounds[cond], map[string]any{"round": r, "first": order[0],
				"ours_seconds": ours.Seconds(), "qbittorrent_seconds": qbt.Seconds(), "ratio_ours_over_qbittorrent": ratio})
		}
	}
	out := map[string]any{
		"bytes": total, "downloader": "aria2c 1.36", "rounds": *nRounds, "load_burners": *load, "cores": runtime.NumCPU(),
		"variant": variant,
	}
	for _, cond := range conds {
		rs := rounds[cond]
		c := map[string]any{"rounds": rs}
		for _, k := range []string{"ours_seconds", "qbittorrent_seconds", "ratio_ours_over_qbittorrent"} {
			lo, med, hi := spread(rs, k)
			c[k] = map[string]float64{"min": lo, "median": med, "max": hi}
		}
		out[cond] = c
		if cond == "quiet" {
			// The single-run keys earlier reports read: medians of the quiet rounds.
			_, ours, _ := spread(rs, "ours_seconds")
			_, qs, _ := spread(rs, "qbittorrent_seconds")
			_, ratio, _ := spread(rs, "ratio_ours_over_qbittorrent")
			out["ours_seconds"], out["ours_MBps"] = ours, float64(total)/ours/1e6
			out["qbittorrent_seconds"], out["qbittorrent_MBps"] = qs, float64(total)/qs/1e6
			out["ratio_ours_over_qbittorrent"] = ratio
		}
	}
	json.NewEncoder(os.Stdout).Encode(out)
	for _, cond := range conds {
		lo, med, hi := spread(rounds[cond], "ratio_ours_over_qbittorrent")
		log.Printf("%s: ours/qbittorrent-nox min %.2fx median %.2fx max %.2fx over %d rounds", cond, lo, med, hi, len(rounds[cond]))
	}
}

// runCtx is one timed download: which data, which condition, where evidence goes.
type runCtx struct {
	dir     string
	l       archive.Layout
	id      archive.CommunityID
	total   int64
	tr      *tracker
	burners int    // CPU burners running while aria2c downloads
	trace   string // evidence folder, or ""
	tag     string // condition and round, for file names
}

// runOurs seeds with the seeder's own client configuration and times aria2c.
func runOurs(run *runCtx) time.Duration {
	cfg := seeder.Config{DataDir: run.l.DataDir, Trackers: true}
	logger := slog.New(slog.DiscardHandler)
	if run.trace != "" {
		f, err := os.Create(filepath.Join(run.trace, "ours-"+run.tag+"-client.log"))
		check(err)
		defer f.Close()
		logger = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cl, st, err := newClient(cfg, logger)
	check(err)
	defer st.Close()
	defer cl.Close()
	mi, err := metainfo.LoadFromFile(run.l.TorrentPath(run.id))
	check(err)
	t, err := cl.AddTorrent(mi)
	check(err)
	<-t.GotInfo()
	t.DownloadAll()
	for !t.Complete().Bool() {
		time.Sleep(10 * time.Millisecond)
	}
	log.Printf("our seeder ready on port %d", cl.LocalPort())
	var stopTrace func()
	if run.trace != "" {
		stopTrace = traceOurs(run, cl, t)
	}
	d := aria2(run, "ours")
	if stopTrace != nil {
		stopTrace()
	}
	return d
}

// runQbittorrent seeds the same files with qbittorrent-nox through its Web
// API (localhost needs no login with the config written here).
func runQbittorrent(run *runCtx) time.Duration {
	l, id := run.l, run.id
	profile := filepath.Join(run.dir, "qbt-"+run.tag)
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
	cmd := proc.Command("qbittorrent-nox", "--profile="+profile)
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
	return aria2(run, "qbt")
}

// aria2 downloads the torrent into a fresh folder and returns the time from
// start to the file being complete, with run.burners CPU burners spinning
// for exactly that time.
func aria2(run *runCtx, name string) time.Duration {
	out := filepath.Join(run.dir, "dl-"+name)
	check(os.RemoveAll(out))
	check(os.MkdirAll(out, 0o755))
	port := proc.MustFreePort()
	args := []string{"--dir=" + out, "--seed-time=0", "--enable-dht=false", "--enable-dht6=false",
		"--bt-enable-lpd=false", "--enable-peer-exchange=false", "--bt-tracker-connect-timeout=5",
		"--listen-port=" + strconv.Itoa(port), "--file-allocation=none", "--console-log-level=warn",
		"--summary-interval=0", "--check-integrity=false", "--bt-max-peers=0"}
	if run.trace != "" {
		args = append(args, "--log="+filepath.Join(run.trace, name+"-"+run.tag+"-aria2.log"), "--log-level=debug")
	}
	cmd := proc.Command("aria2c", append(args, run.l.TorrentPath(run.id))...)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	stop := startBurners(run.burners)
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	stop()
	if err != nil {
		log.Fatalf("aria2c from %s: %v\n%s", name, err, logs.String())
	}
	var got int64
	filepath.Walk(out, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && !strings.HasSuffix(p, ".aria2") {
			got += fi.Size()
		}
		return nil
	})
	if got != run.total {
		log.Fatalf("aria2c from %s got %d of %d bytes", name, got, run.total)
	}
	os.RemoveAll(out)
	log.Printf("aria2c downloaded %d bytes from %s in %v (%s, %d burners)", run.total, name, d, run.tag, run.burners)
	return d
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
