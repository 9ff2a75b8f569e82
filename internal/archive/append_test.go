package archive

import (
	"bytes"
	"context"
	"crypto/sha1"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/archivefleet/archivefleet/internal/pb"
)

func TestAppender(t *testing.T) {
	for _, tc := range []struct {
		name    string
		offset  int64 // bytes already in the file
		buffers []int // pieces per pushed buffer
	}{
		{"one piece", 0, []int{1}},
		{"one full buffer", 0, []int{bufferPieces}},
		{"more buffers than slots", 0, []int{32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 5}},
		{"odd sizes after existing data", 3 * PieceLength, []int{17, 1, 31, 16, 2}},
	} {
		for _, direct := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/direct=%v", tc.name, direct), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "data")
				f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if err := f.Truncate(tc.offset); err != nil {
					t.Fatal(err)
				}
				rng := rand.New(rand.NewPCG(1, uint64(len(tc.buffers))))
				a := newAppender(f, tc.offset, direct)
				var want []byte
				var wantSums []byte
				for _, n := range tc.buffers {
					b := a.buffer()[:n*PieceLength]
					for i := range b {
						b[i] = byte(rng.Uint32())
					}
					want = append(want, b...)
					for p := 0; p < n; p++ {
						sum := sha1.Sum(b[p*PieceLength : (p+1)*PieceLength])
						wantSums = append(wantSums, sum[:]...)
					}
					if err := a.push(b); err != nil {
						t.Fatal(err)
					}
				}
				sums, err := a.finish()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(sums, wantSums) {
					t.Fatalf("piece hashes differ from SHA-1 of each piece")
				}
				got, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if int64(len(got)) != tc.offset+int64(len(want)) || !bytes.Equal(got[tc.offset:], want) {
					t.Fatalf("file holds %d bytes, want %d after the first %d", len(got), len(want), tc.offset)
				}
			})
		}
	}
}

func TestAppenderRefusesPartialPieces(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a := newAppender(f, 0, true)
	defer a.finish()
	for _, n := range []int{1, PieceLength - 1, PieceLength + 1, bufferBytes + PieceLength} {
		if err := a.push(make([]byte, n)); err == nil {
			t.Errorf("push of %d bytes accepted", n)
		}
	}
}

// TestAppenderReportsWriteErrors writes to /dev/full, where every write fails
// with ENOSPC: the failure must come back from push or finish, never be dropped.
func TestAppenderReportsWriteErrors(t *testing.T) {
	f, err := os.OpenFile("/dev/full", os.O_RDWR, 0)
	if err != nil {
		t.Skip("no /dev/full here")
	}
	defer f.Close()
	a := newAppender(f, 0, true)
	var pushErr error
	for range appendInFlight + 4 {
		if pushErr = a.push(a.buffer()[:PieceLength]); pushErr != nil {
			break
		}
	}
	_, finishErr := a.finish()
	if finishErr == nil || !strings.Contains(finishErr.Error(), "write data") {
		t.Fatalf("finish: %v, want the write error (push said %v)", finishErr, pushErr)
	}
}

// TestBuildUsesDirectIO checks that, where the file system takes O_DIRECT,
// every byte of a plain build bypasses the page cache: the buffers, offsets
// and lengths all have to stay aligned for that, and a change that broke it
// would only show as a slower build.
func TestBuildUsesDirectIO(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("O_DIRECT is used on Linux only")
	}
	l := testLayout(t)
	probe := filepath.Join(l.DataDir, "probe")
	os.MkdirAll(l.DataDir, 0o700)
	f, err := os.Create(probe)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	w := newWriteback(f, 0, true)
	if w.direct == nil {
		t.Skip("the test directory's file system refuses O_DIRECT")
	}
	w.close()
	c := testCommunity(t, 8)
	msgs := genMessages(4, 3000, 1_700_000_000, 3*week, 2000)
	o := BuildOptions{Community: c, Topics: testTopics, From: 1_700_000_000,
		To: 1_700_000_000 + 3*week, Source: NewSliceSource(msgs)}
	res := mustBuild(t, l, o)
	if res.DirectIOBytes != res.DataBytes {
		t.Fatalf("%d of %d data bytes written with O_DIRECT", res.DirectIOBytes, res.DataBytes)
	}
	got, _ := extractAll(t, l.ArchiveDir(c), nil)
	if len(got) != len(msgs) {
		t.Fatalf("extracted %d messages, want %d", len(got), len(msgs))
	}
	// Switched off, the same build goes through the page cache.
	o.BufferedIO = true
	buffered := mustBuild(t, testLayout(t), o)
	if buffered.DirectIOBytes != 0 || buffered.InfoHash != res.InfoHash {
		t.Fatalf("buffered build: %d bytes direct, infohash %s; want 0 and %s", buffered.DirectIOBytes, buffered.InfoHash, res.InfoHash)
	}
}

func TestBuildIsCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l := testLayout(t)
	c := testCommunity(t, 9)
	_, err := Build(ctx, l, BuildOptions{Community: c, From: 1_700_000_000, To: 1_700_000_000 + week,
		Source: NewSliceSource(genMessages(4, 100, 1_700_000_000, week, 200))})
	if err == nil {
		t.Fatal("cancelled build succeeded")
	}
	if _, err := os.Stat(filepath.Join(l.ArchiveDir(c), IndexFile)); err == nil {
		t.Fatal("cancelled build wrote an index")
	}
}

// TestStreamedEncodingMatchesProto checks the builder's own encoder against
// proto's deterministic marshalling of the same archive, with every optional
// field both empty and set.
func TestStreamedEncodingMatchesProto(t *testing.T) {
	base := genMessages(3, 1, 1_700_000_000, week, 300)[0]
	for _, tc := range []struct {
		name string
		edit func(*Message)
	}{
		{"as generated", func(*Message) {}},
		{"zero timestamp", func(m *Message) { m.Timestamp = 0 }},
		{"largest timestamp", func(m *Message) { m.Timestamp = 1<<64 - 1 }},
		{"no sig", func(m *Message) { m.Sig = nil }},
		{"no payload", func(m *Message) { m.Payload = nil }},
		{"padding", func(m *Message) { m.Padding = bytes.Repeat([]byte{7}, 200) }},
		{"no hash", func(m *Message) { m.Hash = nil }},
		{"third party id", func(m *Message) { m.ThirdPartyID = "discord-1234-ü" }},
		{"long payload", func(m *Message) { m.Payload = bytes.Repeat([]byte{1}, 70_000) }},
		{"zero topic", func(m *Message) { m.Topic = Topic{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := base
			m.Sig, m.Payload, m.Hash = bytes.Clone(m.Sig), bytes.Clone(m.Payload), bytes.Clone(m.Hash)
			tc.edit(&m)
			md := &pb.WakuMessageArchiveMetadata{From: 10, To: 20, ContentTopic: [][]byte{{1, 2, 3, 4}}}
			msgs := []Message{m, base, m}
			arch := &pb.WakuMessageArchive{Metadata: md}
			for i := range msgs {
				arch.Messages = append(arch.Messages, msgs[i].toProto())
			}
			got := streamed(t, md, msgs)
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(arch)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("streamed encoding differs from proto.Marshal:\n got %x\nwant %x", got, want)
			}
			if n := wakuMessageSize(&m); n != proto.Size(m.toProto()) {
				t.Fatalf("wakuMessageSize = %d, proto.Size = %d", n, proto.Size(m.toProto()))
			}
		})
	}
}

// streamed encodes an archive through a stream into a file, as a build does,
// and returns its bytes without the padding.
func streamed(t *testing.T, md *pb.WakuMessageArchiveMetadata, msgs []Message) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a := newAppender(f, 0, true)
	defer a.finish()
	s := &stream{app: a}
	if err := s.metadata(md); err != nil {
		t.Fatal(err)
	}
	for i := range msgs {
		if err := s.message(&msgs[i]); err != nil {
			t.Fatal(err)
		}
	}
	n := s.n
	_, padding := paddedSize(int(n))
	if err := s.zeros(padding); err != nil {
		t.Fatal(err)
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.finish(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return raw[:n]
}
