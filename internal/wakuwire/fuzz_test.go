package wakuwire_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

var wwFuzzKey = bytes.Repeat([]byte{0x5a}, 32)

// FuzzOpenSymmetric throws arbitrary payloads at the decryptor: anything but
// a clean result or ErrMalformed (a panic, another error) is a bug.
func FuzzOpenSymmetric(f *testing.F) {
	for _, size := range []int{0, 1, 254, 300} {
		for _, signed := range []bool{false, true} {
			signer := wwKey(f, 30)
			if !signed {
				signer = nil
			}
			p, err := wakuwire.SealSymmetric(make([]byte, size), wwFuzzKey, signer)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(p)
		}
	}
	f.Add([]byte{})
	f.Add(make([]byte, 28))
	f.Fuzz(func(t *testing.T, payload []byte) {
		env, err := wakuwire.OpenSymmetric(payload, wwFuzzKey)
		if err != nil {
			if !errors.Is(err, wakuwire.ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if env.Signer != nil && len(env.Signer) != 65 {
			t.Fatalf("signer of %d bytes", len(env.Signer))
		}
	})
}

// FuzzOpenPlaintext encrypts arbitrary plaintexts first, so the fuzzer
// reaches the rfc26 parser instead of stopping at the GCM tag.
func FuzzOpenPlaintext(f *testing.F) {
	f.Add([]byte{0x01, 0x02, 'h', 'i', 0, 0})
	f.Add([]byte{0x04})
	f.Add(append([]byte{0x05, 0x00}, make([]byte, 65)...))
	f.Add([]byte{0x03, 0xff, 0xff, 0xff})
	signed, err := wakuwire.SealSymmetric([]byte("seed"), wwFuzzKey, wwKey(f, 31))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(wwOpenPlain(f, signed, wwFuzzKey))
	nonce := make([]byte, 12)
	f.Fuzz(func(t *testing.T, plain []byte) {
		env, err := wakuwire.OpenSymmetric(wwSealPlain(t, plain, wwFuzzKey, nonce), wwFuzzKey)
		if err != nil {
			if !errors.Is(err, wakuwire.ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		// Everything is accounted for: flags, size field, data, padding, signature.
		n := 1 + len(env.Data) + len(env.Padding)
		if w := int(plain[0] & 3); w != 0 {
			n += w
		}
		if env.Signer != nil {
			n += 65
		}
		if n != len(plain) {
			t.Fatalf("parsed %d of %d plaintext bytes", n, len(plain))
		}
	})
}

// FuzzMessageUnmarshal checks that decoding never panics, reports only
// ErrMalformed, and that whatever decodes re-encodes to an equal message.
func FuzzMessageUnmarshal(f *testing.F) {
	for _, tc := range wwMessages {
		f.Add(tc.msg.Marshal())
	}
	f.Add([]byte{0xaa, 0x01, 0x03, 'p', 'r', 'f'}) // rate_limit_proof
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		var m wakuwire.Message
		if err := m.Unmarshal(b); err != nil {
			if !errors.Is(err, wakuwire.ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		var again wakuwire.Message
		if err := again.Unmarshal(m.Marshal()); err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if !wwMessageEqual(m, again) {
			t.Fatalf("round trip changed %+v into %+v", m, again)
		}
	})
}

// FuzzUnwrapPublic checks the ProtocolMessage reader never panics and only
// reports its two sentinel errors.
func FuzzUnwrapPublic(f *testing.F) {
	b, err := wakuwire.WrapPublic("id", []byte("amm"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{0x1a, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, err := wakuwire.UnwrapPublic(b)
		if err != nil && !errors.Is(err, wakuwire.ErrMalformed) && !errors.Is(err, wakuwire.ErrNotPublic) {
			t.Fatalf("unexpected error %v", err)
		}
	})
}
