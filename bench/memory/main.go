// Command memory builds a 1 GiB archive from a streaming source and reports
// the process's peak resident memory (VmHWM): the archive core holds at most
// one 30,000,000-byte chunk of messages, its marshalled form and a write
// buffer, whatever the archive size.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"iter"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/archivefleet/archivefleet/bench/proc"
	"github.com/archivefleet/archivefleet/internal/archive"
)

// stream generates messages on the fly, like a store read, never holding more than one.
type stream struct{ n, size int }

func (s stream) Messages(ctx context.Context, from, to uint64) iter.Seq2[archive.Message, error] {
	return func(yield func(archive.Message, error) bool) {
		sig := make([]byte, 65)
		sig[0] = 4
		for i := 0; i < s.n; i++ {
			ts := 1_700_000_000 + uint64(i)
			if ts < from || ts >= to {
				continue
			}
			p := make([]byte, s.size)
			rand.Read(p)
			if !yield(archive.Message{Sig: sig, Timestamp: ts, Topic: archive.Topic{1}, Payload: p, Hash: p[:32]}, nil) {
				return
			}
		}
	}
}

func main() {
	size := flag.Int64("size", 1<<30, "archive bytes")
	flag.Parse()
	dir, err := os.MkdirTemp("", "membench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	id, _ := archive.ParseCommunityID("0x02cfca2ca218f099107c5d4b61cb17bd6566137dbecf7e4557984c882a16accd87")
	const msg = 64 << 10
	n := int(*size / msg)
	before := proc.StatusKB(os.Getpid(), "VmHWM")
	t0 := time.Now()
	res, err := archive.Build(context.Background(), archive.Layout{DataDir: filepath.Join(dir, "d"), TorrentDir: filepath.Join(dir, "t")},
		archive.BuildOptions{Community: id, From: 1_700_000_000, To: 1_700_000_000 + uint64(n), Interval: 24 * time.Hour, Source: stream{n, msg}})
	if err != nil {
		log.Fatal(err)
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"archive_MB": float64(res.DataBytes) / 1e6, "archives": len(res.Archives), "seconds": time.Since(t0).Seconds(),
		"peak_rss_MB_before": float64(before) / 1024, "peak_rss_MB": float64(proc.StatusKB(os.Getpid(), "VmHWM")) / 1024,
	})
}
