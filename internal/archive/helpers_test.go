package archive

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
)

const week = uint64(7 * 24 * 3600)

// testCommunity derives a community id from a seed, like a real key pair.
func testCommunity(t testing.TB, seed byte) CommunityID {
	t.Helper()
	var k [32]byte
	k[31] = seed
	k[0] = 1
	priv := secp256k1.PrivKeyFromBytes(k[:])
	var id CommunityID
	copy(id[:], priv.PubKey().SerializeCompressed())
	return id
}

var testTopics = []Topic{{0xaa, 0, 0, 1}, {0xaa, 0, 0, 2}, {0xbb, 0, 0, 3}}

// genMessages makes n messages spread over [start, start+span) with payloads of
// payloadLen bytes, deterministically from seed.
func genMessages(seed uint64, n int, start, span uint64, payloadLen int) []Message {
	out := make([]Message, n)
	for i := range out {
		x := seed*1_000_003 + uint64(i)
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], x)
		sig := make([]byte, 65)
		sig[0] = 0x04
		copy(sig[1:], keccak256(b[:], []byte("sig")))
		copy(sig[33:], keccak256(b[:], []byte("sig2")))
		payload := make([]byte, payloadLen)
		for j := range payload {
			payload[j] = byte(x>>uint(j%8)) ^ byte(j)
		}
		out[i] = Message{
			Sig:       sig,
			Timestamp: start + uint64(i)*span/uint64(n) + (x*7919)%max(1, span/uint64(n)),
			Topic:     testTopics[i%len(testTopics)],
			Payload:   payload,
			Padding:   []byte{1},
			Hash:      keccak256(b[:], payload),
		}
		if i%17 == 0 {
			out[i].ThirdPartyID = "discord-" + string(rune('a'+i%26))
		}
	}
	return out
}

func sortedMessages(msgs []Message) []Message {
	s := slices.Clone(msgs)
	slices.SortStableFunc(s, func(a, b Message) int { return compareMessages(&a, &b) })
	return s
}

func testLayout(t testing.TB) Layout {
	d := t.TempDir()
	return Layout{DataDir: filepath.Join(d, "archivedata"), TorrentDir: filepath.Join(d, "torrents")}
}

func mustBuild(t testing.TB, l Layout, o BuildOptions) *BuildResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Build(ctx, l, o)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	return res
}

// extractAll reads every archive of a folder, oldest first.
func extractAll(t testing.TB, dir string, dec Decrypter) ([]Message, *Index) {
	t.Helper()
	f, err := OpenFolder(dir, dec, Limits{})
	if err != nil {
		t.Fatalf("open folder: %v", err)
	}
	defer f.Close()
	var out []Message
	for _, e := range f.Index.ByFrom() {
		a, err := ReadArchive(f.Data, e, dec)
		if err != nil {
			t.Fatalf("read archive: %v", err)
		}
		if a.From != e.From || a.To != e.To {
			t.Fatalf("archive %s: metadata [%d,%d) differs from index [%d,%d)", e.ID, a.From, a.To, e.From, e.To)
		}
		out = append(out, a.Messages...)
	}
	return out, f.Index
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newTestRatchet(t testing.TB, c CommunityID) *HashRatchet {
	t.Helper()
	return &HashRatchet{
		Community:      c,
		InstallationID: "f3a1c2d4-0000-4000-8000-archivefleet",
		State: &RatchetState{Key: RatchetKey{
			Timestamp: 1700000000123,
			Key:       keccak256([]byte("community key"), c[:]),
		}},
	}
}
