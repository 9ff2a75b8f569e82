package archive

import (
	"context"
	"crypto/sha1"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// BenchmarkBuildVsSHA1 builds archives from 64 MiB of messages and, in the same
// iteration, SHA-1 hashes the resulting data file: the floor any torrent
// builder pays. It reports both throughputs and their ratio. The build writes
// with O_DIRECT, so the file is read once, untimed, before it is hashed: the
// reference hashes from the page cache and times SHA-1, not the disk.
func BenchmarkBuildVsSHA1(b *testing.B) {
	const payload = 1024
	n := (64 << 20) / (payload + 65)
	msgs := genMessages(99, n, 1_700_000_000, week, payload)
	src := NewSliceSource(msgs)
	c := testCommunity(b, 61)
	var buildDur, shaDur time.Duration
	var bytesIn, dataBytes int64
	for _, m := range msgs {
		bytesIn += int64(m.Size())
	}
	for b.Loop() {
		l := testLayout(b)
		t0 := time.Now()
		res, err := Build(context.Background(), l, BuildOptions{Community: c, Topics: testTopics,
			From: 1_700_000_000, To: 1_700_000_000 + week, Source: src})
		if err != nil {
			b.Fatal(err)
		}
		buildDur += time.Since(t0)
		dataBytes = res.DataBytes

		data := filepath.Join(l.ArchiveDir(c), DataFile)
		if err := readThrough(data); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		f, err := os.Open(data)
		if err != nil {
			b.Fatal(err)
		}
		h := sha1.New()
		if _, err := io.Copy(h, f); err != nil {
			b.Fatal(err)
		}
		f.Close()
		shaDur += time.Since(t1)
		os.RemoveAll(filepath.Dir(l.DataDir))
	}
	iters := float64(b.N)
	buildMBs := float64(dataBytes) * iters / buildDur.Seconds() / 1e6
	shaMBs := float64(dataBytes) * iters / shaDur.Seconds() / 1e6
	b.ReportMetric(buildMBs, "build-MB/s")
	b.ReportMetric(float64(n)*iters/buildDur.Seconds(), "build-msgs/s")
	b.ReportMetric(shaMBs, "sha1-MB/s")
	b.ReportMetric(shaMBs/buildMBs, "build/sha1-x")
	b.ReportMetric(float64(bytesIn)/1e6, "input-MB")
}

// BenchmarkWeeklyBuild compares the cost of building one more week on a
// community with 1, 52 and 260 weeks of history (2 MB a week). Earlier data
// pieces are reused from the previous torrent, so the cost should not grow
// with history. Each timed build is undone (data truncated, index and torrent
// restored) before the next.
func BenchmarkWeeklyBuild(b *testing.B) {
	const perWeek, payload = 2000, 1000
	var week1 time.Duration
	for _, history := range []int{0, 51, 259} {
		b.Run(fmt.Sprintf("week%d", history+1), func(b *testing.B) {
			c := testCommunity(b, 62)
			l := testLayout(b)
			start := uint64(1_600_000_000)
			if history > 0 {
				old := genMessages(1, perWeek*history, start, uint64(history)*week, payload)
				if _, err := Build(context.Background(), l, BuildOptions{Community: c, Topics: testTopics,
					From: start, To: start + uint64(history)*week, Source: NewSliceSource(old)}); err != nil {
					b.Fatal(err)
				}
			}
			from := start + uint64(history)*week
			src := NewSliceSource(genMessages(2, perWeek, from, week, payload))
			// Flush the freshly written history first, so that its writeback does
			// not land on the timed builds.
			syscall.Sync()
			saved := snapshot(b, l, c)
			var total time.Duration
			var res *BuildResult
			for b.Loop() {
				t0 := time.Now()
				var err error
				res, err = Build(context.Background(), l, BuildOptions{Community: c, Topics: testTopics,
					From: from, To: from + week, Source: src})
				if err != nil {
					b.Fatal(err)
				}
				total += time.Since(t0)
				b.StopTimer()
				saved.restore(b)
				b.StartTimer()
			}
			per := total / time.Duration(b.N)
			if history == 0 {
				week1 = per
			}
			b.ReportMetric(float64(per.Microseconds())/1000, "ms/week")
			b.ReportMetric(float64(res.PiecesHashed), "pieces-hashed")
			b.ReportMetric(float64(res.DataBytes)/1e6, "history-MB")
			if week1 > 0 {
				b.ReportMetric(float64(per)/float64(week1), "x-week1")
			}
		})
	}
}

// readThrough reads a file to bring it into the page cache.
func readThrough(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

type folderSnapshot struct {
	dataPath, indexPath, torrentPath string
	dataLen                          int64
	index, torrent                   []byte
}

func snapshot(b *testing.B, l Layout, c CommunityID) *folderSnapshot {
	s := &folderSnapshot{
		dataPath:    filepath.Join(l.ArchiveDir(c), DataFile),
		indexPath:   filepath.Join(l.ArchiveDir(c), IndexFile),
		torrentPath: l.TorrentPath(c),
	}
	if st, err := os.Stat(s.dataPath); err == nil {
		s.dataLen = st.Size()
		s.index, _ = os.ReadFile(s.indexPath)
		s.torrent, _ = os.ReadFile(s.torrentPath)
	}
	return s
}

func (s *folderSnapshot) restore(b *testing.B) {
	if s.index == nil {
		os.Remove(s.dataPath)
		os.Remove(s.indexPath)
		os.Remove(s.torrentPath)
		return
	}
	if err := os.Truncate(s.dataPath, s.dataLen); err != nil {
		b.Fatal(err)
	}
	os.WriteFile(s.indexPath, s.index, 0o644)
	os.WriteFile(s.torrentPath, s.torrent, 0o644)
}
