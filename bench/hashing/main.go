// Command hashing compares the archive build with three references on the
// same data file, round after round: sha1sum and a single-stream SHA-1 in this
// process (the SHA-1 floor, once by coreutils and once by Go's SHA-NI code)
// and mktorrent (a multi-threaded torrent builder). mktorrent needs a
// power-of-two piece length, so it hashes the file with 128 KiB pieces; the
// work is the same SHA-1 over the same bytes. The references read the file
// from the page cache (it is read once, untimed, first: the build writes with
// O_DIRECT); the build encodes, writes and fsyncs it. It prints one
// JSON object with every round's ratios and their medians.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/archivefleet/archivefleet/internal/archive"
)

func main() {
	size := flag.Int64("size", 512<<20, "bytes of message payload")
	nRounds := flag.Int("rounds", 5, "builds, each followed by the references")
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
	var rounds []map[string]float64
	for r := range *nRounds {
		rd := filepath.Join(dir, fmt.Sprint(r))
		l := archive.Layout{DataDir: filepath.Join(rd, "data"), TorrentDir: filepath.Join(rd, "torrents")}
		t0 := time.Now()
		res, err := archive.Build(context.Background(), l, archive.BuildOptions{Community: id, From: 1_700_000_000,
			To: 1_700_000_000 + 600000, Source: src})
		check(err)
		build := time.Since(t0)
		data := filepath.Join(l.ArchiveDir(id), archive.DataFile)
		// The build writes with O_DIRECT: read the file once, untimed, so
		// that every reference hashes from the page cache.
		warm(data)
		sha := timed("sha1sum", data)
		gosha := goSHA1(data)
		mk := timed("mktorrent", "-l", "17", "-o", filepath.Join(rd, "mk.torrent"), data)
		mb := float64(res.DataBytes) / 1e6
		rounds = append(rounds, map[string]float64{
			"data_MB": mb, "archives": float64(len(res.Archives)),
			"build_seconds": build.Seconds(), "build_MBps": mb / build.Seconds(), "build_msgs_per_s": float64(n) / build.Seconds(),
			"sha1sum_MBps": mb / sha.Seconds(), "go_sha1_MBps": mb / gosha.Seconds(), "mktorrent_MBps": mb / mk.Seconds(),
			"build_over_sha1sum": build.Seconds() / sha.Seconds(), "build_over_go_sha1": build.Seconds() / gosha.Seconds(),
			"build_over_mktorrent": build.Seconds() / mk.Seconds(),
		})
		check(os.RemoveAll(rd))
	}
	out := map[string]any{"messages": n, "rounds": rounds}
	for k := range rounds[0] {
		out[k] = median(rounds, k)
	}
	json.NewEncoder(os.Stdout).Encode(out)
}

func median(rounds []map[string]float64, key string) float64 {
	v := make([]float64, len(rounds))
	for i, r := range rounds {
		v[i] = r[key]
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func warm(path string) {
	f, err := os.Open(path)
	check(err)
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	check(err)
}

// goSHA1 hashes the file in one stream, as sha1sum does, with Go's SHA-1.
func goSHA1(path string) time.Duration {
	t0 := time.Now()
	f, err := os.Open(path)
	check(err)
	defer f.Close()
	_, err = io.CopyBuffer(sha1.New(), f, make([]byte, 1<<20))
	check(err)
	return time.Since(t0)
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
