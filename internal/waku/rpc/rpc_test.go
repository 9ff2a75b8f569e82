package rpc

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/archivefleet/archivefleet/internal/waku/metadata/metadatapb"
	"github.com/archivefleet/archivefleet/internal/waku/store/storepb"
	"google.golang.org/protobuf/encoding/protowire"
)

func TestUnmarshal(t *testing.T) {
	good := protowire.AppendString(protowire.AppendTag(nil, 2, protowire.BytesType), "/a/1/b/proto") // content_topic
	msg := func(b []byte) []byte {
		// StoreQueryResponse{messages: [{message: b}]}
		kv := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), b)
		return protowire.AppendBytes(protowire.AppendTag(nil, 20, protowire.BytesType), kv)
	}
	for _, tc := range []struct {
		name  string
		wire  []byte
		err   string // in the error; "" for none
		field protowire.Number
	}{
		{"empty", nil, "", 0},
		{"nested message", msg(good), "", 0},
		{"unknown fields skipped", append(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 7), msg(good)...), "", 0},
		{"truncated tag", []byte{0xff}, "unexpected EOF", 0},
		{"truncated value", []byte{0x0a, 0x05, 'x'}, "unexpected EOF", 0},
		{"declared field, other wire type", []byte{0x52, 0x01, 0x01}, "field 10 has wire type 2", 0},
		{"string not UTF-8", []byte{0x0a, 0x01, 0xff}, "invalid UTF-8", 0},
		{"nested: other wire type", msg([]byte{0x10, 0x01}), "field 2 has wire type 0", 20},
		{"nested: string not UTF-8", msg([]byte{0x12, 0x01, 0xff}), "invalid UTF-8", 20},
		{"nested: truncated", msg([]byte{0x0a, 0x07}), "unexpected EOF", 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Unmarshal(tc.wire, new(storepb.StoreQueryResponse))
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
			var fe *FieldError
			if got := protowire.Number(0); errors.As(err, &fe) {
				if got = fe.Field; got != tc.field {
					t.Fatalf("error in field %d, want %d", got, tc.field)
				}
			} else if tc.field != 0 {
				t.Fatalf("err = %v, want it in field %d", err, tc.field)
			}
		})
	}
}

// TestUnmarshalPacked: a repeated scalar field may come packed or not, as in
// protobuf; a packed one must hold whole values.
func TestUnmarshalPacked(t *testing.T) {
	for _, tc := range []struct {
		name string
		wire []byte
		ok   bool
	}{
		{"packed", []byte{0x1a, 0x02, 32, 64}, true},
		{"unpacked", []byte{0x18, 32, 0x18, 64}, true},
		{"packed, truncated value", []byte{0x1a, 0x01, 0x80}, false},
	} {
		var m metadatapb.WakuMetadataResponse
		if err := Unmarshal(tc.wire, &m); (err == nil) != tc.ok {
			t.Errorf("%s: err = %v", tc.name, err)
		} else if tc.ok && len(m.Shards) != 2 {
			t.Errorf("%s: shards %v", tc.name, m.Shards)
		}
	}
}

func TestFrames(t *testing.T) {
	var buf bytes.Buffer
	for _, b := range [][]byte{[]byte("hello"), nil, bytes.Repeat([]byte{7}, 300)} {
		if err := WriteFrame(&buf, b); err != nil {
			t.Fatal(err)
		}
	}
	wire := buf.Bytes()
	for name, read := range map[string]func(*bufio.Reader, uint64) ([]byte, error){"ReadFrame": ReadFrame, "ReadFrameGrowing": ReadFrameGrowing} {
		r := bufio.NewReader(bytes.NewReader(wire))
		for _, want := range []int{5, 0, 300} {
			b, err := read(r, 300)
			if err != nil || len(b) != want {
				t.Fatalf("%s: %d bytes, %v; want %d", name, len(b), err, want)
			}
		}
		if _, err := read(r, 300); err != io.EOF {
			t.Fatalf("%s at the end: %v", name, err)
		}
		if _, err := read(bufio.NewReader(bytes.NewReader(wire[7:])), 299); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("%s over the limit: %v", name, err)
		}
		if _, err := read(bufio.NewReader(bytes.NewReader(wire[:4])), 300); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("%s of a cut frame: %v", name, err)
		}
	}
}

// testCode and otherCode are two protocols' status code types.
type (
	testCode  uint32
	otherCode uint32
)

func (testCode) Protocol() string   { return "test" }
func (c testCode) Retryable() bool  { return c == 429 }
func (otherCode) Protocol() string  { return "other" }
func (c otherCode) Retryable() bool { return false }

func TestStatusError(t *testing.T) {
	var err error = &StatusError[testCode]{Code: 429, Desc: "slow down"}
	var se *StatusError[testCode]
	if !errors.As(err, &se) || !se.IsRetryable() || err.Error() != "waku test refused: status 429: slow down" {
		t.Fatalf("%v", err)
	}
	if e := (&StatusError[testCode]{Code: 400}); e.IsRetryable() || e.Error() != "waku test refused: status 400" {
		t.Fatalf("%v", e)
	}
	// Another protocol's error is not this one's.
	var other *StatusError[otherCode]
	if errors.As(err, &other) {
		t.Fatal("a test status error is another protocol's")
	}
}
