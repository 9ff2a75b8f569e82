package wakuwire_test

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"testing"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
)

// wwHex decodes a hex literal in a test table, failing the test on typos.
func wwHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// wwKey returns a fixed secp256k1 key so failures reproduce.
func wwKey(t testing.TB, seed byte) *secp256k1.PrivateKey {
	t.Helper()
	var b [32]byte
	for i := range b {
		b[i] = seed + byte(i)
	}
	return secp256k1.PrivKeyFromBytes(b[:])
}

// wwSealPlain encrypts an arbitrary rfc26 plaintext with AES-256-GCM in the
// rfc26 output layout, independently of SealSymmetric, so tests can feed
// OpenSymmetric plaintexts SealSymmetric would never produce.
func wwSealPlain(t testing.TB, plain, key, nonce []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return append(aead.Seal(nil, nonce, plain, nil), nonce...)
}

// wwOpenPlain is the inverse of wwSealPlain: it lets tests inspect the
// plaintext SealSymmetric produced.
func wwOpenPlain(t testing.TB, payload, key []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	n := len(payload) - 12
	plain, err := aead.Open(nil, payload[n:], payload[:n], nil)
	if err != nil {
		t.Fatalf("independent AES-GCM open: %v", err)
	}
	return plain
}
