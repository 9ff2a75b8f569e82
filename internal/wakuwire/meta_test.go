package wakuwire_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

// TestVerifyMetaNodeVector checks a signature made by Node.js 20 (OpenSSL
// ECDSA over secp256k1, ieee-p1363 R‖S, S normalised low) over the digest
// assembled in JavaScript from go-waku's msgHash layout: SHA-256(topic ‖
// payload ‖ content topic ‖ LE timestamp ‖ ephemeral byte). Passing means
// our digest and encoding match that layout, including the ephemeral byte.
func TestVerifyMetaNodeVector(t *testing.T) {
	key := secp256k1.PrivKeyFromBytes(wwHex(t, "1f01010101010101010101010101010101010101010101010101010101010101"))
	nodePub := wwHex(t, "04b73a14f0ccb8306c87a9f9bae5d5ad207955a44da26322006bbc391a48946306c21e3fcad552d837abe31629555fc5a0c6ac419bb6d7fc22abd49694f7119380")
	if !bytes.Equal(key.PubKey().SerializeUncompressed(), nodePub) {
		t.Fatalf("public key differs from node's")
	}
	m := wakuwire.Message{
		Payload:      []byte("hello protected shard"),
		ContentTopic: "/waku/1/0xf8946aac/rfc26",
		Timestamp:    1700000000123456789,
		Ephemeral:    true,
		Meta:         wwHex(t, "b8e2deaa34207d3fd93adb531b415197c291017b2cae266cdb50e8ba518bced8253d70ce2fd89e7ac389d5736fd394ada538aee12d233f8aa11d170cf8966f26"),
	}
	if !wakuwire.VerifyMeta("/waku/2/rs/16/32", &m, key.PubKey()) {
		t.Fatal("node-made signature does not verify")
	}
	m.Ephemeral = false
	if wakuwire.VerifyMeta("/waku/2/rs/16/32", &m, key.PubKey()) {
		t.Error("digest ignores the ephemeral byte")
	}
}

func TestSignVerifyMeta(t *testing.T) {
	const topic = "/waku/2/rs/16/32"
	key := wwKey(t, 10)
	base := wakuwire.Message{Payload: []byte("payload"), ContentTopic: "/waku/1/0x01020304/rfc26", Version: 1, Timestamp: 1700000000000000000}
	sign := func() wakuwire.Message {
		m := base
		m.Payload = bytes.Clone(base.Payload)
		sig, err := wakuwire.SignMeta(topic, &m, key)
		if err != nil {
			t.Fatal(err)
		}
		if len(sig) != 64 || !bytes.Equal(sig, m.Meta) {
			t.Fatalf("SignMeta returned %x, Meta %x", sig, m.Meta)
		}
		return m
	}
	m := sign()
	if again := sign(); !bytes.Equal(again.Meta, m.Meta) {
		t.Error("signing is not deterministic (RFC 6979)")
	}
	if !wakuwire.VerifyMeta(topic, &m, key.PubKey()) {
		t.Fatal("own signature does not verify")
	}
	// Meta is not part of its own digest, and version is not covered.
	if m2 := m; true {
		m2.Version = 7
		if !wakuwire.VerifyMeta(topic, &m2, key.PubKey()) {
			t.Error("version should not be covered by the digest")
		}
	}

	for _, tc := range []struct {
		name   string
		topic  string
		mutate func(*wakuwire.Message)
		pub    *secp256k1.PublicKey
	}{
		{"wrong key", topic, func(*wakuwire.Message) {}, wwKey(t, 11).PubKey()},
		{"other shard", "/waku/2/rs/16/64", func(*wakuwire.Message) {}, nil},
		{"payload", topic, func(m *wakuwire.Message) { m.Payload[0] ^= 1 }, nil},
		{"content topic", topic, func(m *wakuwire.Message) { m.ContentTopic += "x" }, nil},
		{"timestamp", topic, func(m *wakuwire.Message) { m.Timestamp++ }, nil},
		{"ephemeral", topic, func(m *wakuwire.Message) { m.Ephemeral = true }, nil},
		{"meta with V", topic, func(m *wakuwire.Message) { m.Meta = append(m.Meta, 0) }, nil},
		{"meta short", topic, func(m *wakuwire.Message) { m.Meta = m.Meta[:63] }, nil},
		{"no meta", topic, func(m *wakuwire.Message) { m.Meta = nil }, nil},
		{"high S", topic, func(m *wakuwire.Message) { m.Meta = wwHighS(t, m.Meta) }, nil},
		{"zero R", topic, func(m *wakuwire.Message) { clear(m.Meta[:32]) }, nil},
		{"R ≥ N", topic, func(m *wakuwire.Message) { copy(m.Meta[:32], bytes.Repeat([]byte{0xff}, 32)) }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := sign()
			m.Meta = bytes.Clone(m.Meta)
			tc.mutate(&m)
			pub := tc.pub
			if pub == nil {
				pub = key.PubKey()
			}
			if wakuwire.VerifyMeta(tc.topic, &m, pub) {
				t.Error("verified")
			}
		})
	}
	if _, err := wakuwire.SignMeta(topic, &base, nil); err == nil {
		t.Error("signed with a nil key")
	}
	if wakuwire.VerifyMeta(topic, nil, key.PubKey()) || wakuwire.VerifyMeta(topic, &m, nil) {
		t.Error("nil message or key verified")
	}
}

// wwHighS returns the same signature with S replaced by N-S: valid ECDSA,
// but rejected by libsecp256k1-based relays.
func wwHighS(t *testing.T, sig []byte) []byte {
	t.Helper()
	var s secp256k1.ModNScalar
	if s.SetByteSlice(sig[32:]) {
		t.Fatal("S overflows")
	}
	s.Negate()
	out := bytes.Clone(sig)
	var b [32]byte
	s.PutBytes(&b)
	copy(out[32:], b[:])
	return out
}

func TestMetaFresh(t *testing.T) {
	now := time.Unix(1700000000, 0)
	for _, tc := range []struct {
		name string
		ts   int64
		want bool
	}{
		{"now", now.UnixNano(), true},
		{"4m59s ago", now.Add(-4*time.Minute - 59*time.Second).UnixNano(), true},
		{"4m59s ahead", now.Add(4*time.Minute + 59*time.Second).UnixNano(), true},
		{"exactly 5m ago", now.Add(-5 * time.Minute).UnixNano(), false},
		{"6m ahead", now.Add(6 * time.Minute).UnixNano(), false},
		{"zero", 0, false},
	} {
		if got := wakuwire.MetaFresh(&wakuwire.Message{Timestamp: tc.ts}, now); got != tc.want {
			t.Errorf("%s: MetaFresh = %v", tc.name, got)
		}
	}
}
