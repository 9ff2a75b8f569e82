// Command hashing compares the archive build with two references on the same
// data file in one run: sha1sum (the SHA-1 floor) and mktorrent (a torrent
// builder). mktorrent needs a power-of-two piece length, so it hashes the
// file with 128 KiB pieces; the work is the same SHA-1 over the same bytes.
// It prints one JSON object with the timings and ratios.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/archivefleet/archivefleet/internal/archive"
)

func main() {
	size := flag.Int64("size", 512<<20, "bytes of message payload")
	flag.Parse()
	dir, err := os.MkdirTemp("", "hashbench-")
	check(err)
	defer os.RemoveAll(dir)
	var id archive.CommunityID
	id, err = archive.ParseCommunityID("0x02cfca2ca218f099107c5d4b61cb17bd6566137dbecf7e4557984c882a16accd87")
	check(err)
	const payload = 1000
	n := int(*size / payload)
	sig := make([]byte, 65)
	sig[0] = 4
	src := archive.NewSliceSource(func() []archive.Message {
		msgs := make([]archive.Message, n)
		buf := make([]byte, n*payload)
		rand.Read(buf)
		for i := range msgs {
			p := buf[i*payload : (i+1)*payload]
			msgs[i] = archive.Message{Sig: sig, Timestamp: 1_700_000_000 + uint64(i%600000), Topic: archive.Topic{1}, Payload: p, Hash: p[:32]}
		}
		return msgs
	}())
	l := archive.Layout{DataDir: filepath.Join(dir, "data"), TorrentDir: filepath.Join(dir, "torrents")}
	t0 := time.Now()
	res, err := archive.Build(context.Background(), l, archive.BuildOptions{Community: id, From: 1_700_000_000,
		To: 1_700_000_000 + 600000, Source: src})
	check(err)
	build := time.Since(t0)
	data := filepath.Join(l.ArchiveDir(id), archive.DataFile)
	sha := timed("sha1sum", data)
	mk := timed("mktorrent", "-l", "17", "-o", filepath.Join(dir, "mk.torrent"), data)
	mb := float64(res.DataBytes) / 1e6
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"data_MB": mb, "messages": n, "archives": len(res.Archives),
		"build_seconds": build.Seconds(), "build_MBps": mb / build.Seconds(), "build_msgs_per_s": float64(n) / build.Seconds(),
		"sha1sum_MBps": mb / sha.Seconds(), "mktorrent_MBps": mb / mk.Seconds(),
		"build_over_sha1sum": build.Seconds() / sha.Seconds(), "build_over_mktorrent": build.Seconds() / mk.Seconds(),
	})
}

func timed(name string, args ...string) time.Duration {
	t0 := time.Now()
	cmd := exec.Command(name, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		log.Fatalf("%s: %v\n%s", name, err, out)
	}
	return time.Since(t0)
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
