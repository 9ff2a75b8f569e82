// Command memory builds a 1 GiB archive from a streaming source, plain and
// then sealed with the hash ratchet, and reports the process's peak resident
// memory (VmHWM, reset between the two) for each. A plain build encodes each
// message as it comes and holds only the appender's buffers; a sealed one
// also holds one 30,000,000-byte chunk of messages, its marshalled and its
// sealed form, whatever the archive size.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"iter"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
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
	out := map[string]any{}
	for _, mode := range []string{"plain", "sealed"} {
		o := archive.BuildOptions{Community: id, From: 1_700_000_000, To: 1_700_000_000 + uint64(n),
			Interval: 24 * time.Hour, Source: stream{n, msg}}
		if mode == "sealed" {
			o.Encrypter = &archive.HashRatchet{Community: id, InstallationID: "membench-installation",
				State: &archive.RatchetState{Key: archive.RatchetKey{Timestamp: 1_700_000_000_000, Key: make([]byte, 32)}}}
		}
		// Writing 5 to clear_refs resets VmHWM, so each mode's peak is its own.
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", os.Getpid()), []byte("5"), 0); err != nil {
			log.Fatal(err)
		}
		runtime.GC()
		debug.FreeOSMemory()
		before := proc.StatusKB(os.Getpid(), "VmRSS")
		t0 := time.Now()
		res, err := archive.Build(context.Background(), archive.Layout{DataDir: filepath.Join(dir, mode, "d"),
			TorrentDir: filepath.Join(dir, mode, "t")}, o)
		if err != nil {
			log.Fatal(err)
		}
		out[mode+"_archive_MB"] = float64(res.DataBytes) / 1e6
		out[mode+"_archives"] = len(res.Archives)
		out[mode+"_seconds"] = time.Since(t0).Seconds()
		out[mode+"_rss_MB_before"] = float64(before) / 1024
		out[mode+"_peak_rss_MB"] = float64(proc.StatusKB(os.Getpid(), "VmHWM")) / 1024
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
