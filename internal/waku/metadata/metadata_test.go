package metadata

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
)

func TestMetadataCodec(t *testing.T) {
	c16 := uint32(16)
	ours, err := proto.Marshal(Metadata{ClusterID: &c16, Shards: []uint32{32, 300}}.response())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		wire    []byte
		cluster *uint32
		shards  string
	}{
		{"ours", ours, &c16, "[32 300]"},
		{"go-waku packed field 2", []byte{0x08, 16, 0x12, 2, 32, 64}, &c16, "[32 64]"},
		{"js-waku unpacked field 2", []byte{0x08, 16, 0x10, 32, 0x10, 64}, &c16, "[32 64]"},
		{"field 3 preferred", []byte{0x08, 16, 0x10, 1, 0x1a, 1, 32}, &c16, "[32]"},
		{"empty", nil, nil, "[]"},
		{"unknown field skipped", []byte{0x22, 1, 'x', 0x08, 16}, &c16, "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for side, decode := range map[string]func([]byte) (Metadata, error){"request": decodeRequest, "response": decodeResponse} {
				m, err := decode(tc.wire)
				if err != nil {
					t.Fatal(err)
				}
				if (m.ClusterID == nil) != (tc.cluster == nil) || (m.ClusterID != nil && *m.ClusterID != *tc.cluster) {
					t.Fatalf("%s: cluster = %v, want %v", side, m.ClusterID, tc.cluster)
				}
				if got := fmt.Sprint(m.Shards); got != tc.shards {
					t.Fatalf("%s: shards = %s, want %s", side, got, tc.shards)
				}
			}
		})
	}
	// Field 2 unpacked then field 3 packed, as nwaku encodes it; requests
	// and responses alike.
	m := Metadata{ClusterID: &c16, Shards: []uint32{32}}
	want := []byte{0x08, 16, 0x10, 32, 0x1a, 1, 32}
	for side, msg := range map[string]proto.Message{"request": m.request(), "response": m.response()} {
		if got, err := proto.Marshal(msg); err != nil || string(got) != string(want) {
			t.Fatalf("%s: marshal = %x, %v; want %x", side, got, err, want)
		}
	}
	if _, err := decodeRequest([]byte{0x08}); err == nil {
		t.Fatal("truncated message accepted")
	}
}
