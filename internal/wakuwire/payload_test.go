package wakuwire_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

func TestSealOpenSizes(t *testing.T) {
	key := wakuwire.ChatKey("wakuwire test chat")
	signer := wwKey(t, 1)
	wantSigner := signer.PubKey().SerializeUncompressed()
	for _, size := range []int{0, 1, 189, 190, 191, 253, 254, 255, 256, 65535, 65536, 1 << 20} {
		for _, signed := range []bool{false, true} {
			data := make([]byte, size)
			if _, err := rand.Read(data); err != nil {
				t.Fatal(err)
			}
			var sk *secp256k1.PrivateKey
			if signed {
				sk = signer
			}
			payload, err := wakuwire.SealSymmetric(data, key, sk)
			if err != nil {
				t.Fatalf("size %d signed %v: %v", size, signed, err)
			}

			// The layout, read with an independent AES-GCM open.
			plain := wwOpenPlain(t, payload, key)
			if len(payload) != len(plain)+16+12 {
				t.Errorf("size %d: payload %d bytes, plaintext %d: want ciphertext‖tag(16)‖nonce(12)", size, len(payload), len(plain))
			}
			width := 1
			switch {
			case size >= 1<<16:
				width = 3
			case size >= 1<<8:
				width = 2
			}
			raw := 1 + width + size
			wantFlags := byte(width)
			if signed {
				raw += 65
				wantFlags |= 0x04
			}
			wantPad := 256 - raw%256 // a full 256 when raw is already a multiple
			if plain[0] != wantFlags {
				t.Errorf("size %d signed %v: flags %#x, want %#x", size, signed, plain[0], wantFlags)
			}
			var sz [4]byte
			copy(sz[:], plain[1:1+width])
			if got := binary.LittleEndian.Uint32(sz[:]); int(got) != size {
				t.Errorf("size %d: size field says %d", size, got)
			}
			if len(plain) != raw+wantPad || len(plain)%256 != 0 {
				t.Errorf("size %d signed %v: plaintext %d bytes, want %d (padding %d)", size, signed, len(plain), raw+wantPad, wantPad)
			}

			env, err := wakuwire.OpenSymmetric(payload, key)
			if err != nil {
				t.Fatalf("size %d signed %v: open: %v", size, signed, err)
			}
			if !bytes.Equal(env.Data, data) {
				t.Errorf("size %d signed %v: data differs", size, signed)
			}
			if len(env.Padding) != wantPad {
				t.Errorf("size %d signed %v: padding %d bytes, want %d", size, signed, len(env.Padding), wantPad)
			}
			if signed && !bytes.Equal(env.Signer, wantSigner) {
				t.Errorf("size %d: signer %x, want %x", size, env.Signer, wantSigner)
			}
			if !signed && env.Signer != nil {
				t.Errorf("size %d: unsigned payload reports signer %x", size, env.Signer)
			}
		}
	}
}

func TestSealIsRandomized(t *testing.T) {
	key := wakuwire.ChatKey("wakuwire test chat")
	a, err := wakuwire.SealSymmetric([]byte("same"), key, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := wakuwire.SealSymmetric([]byte("same"), key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a[len(a)-12:], b[len(b)-12:]) {
		t.Error("two seals used the same nonce")
	}
	pa, pb := wwOpenPlain(t, a, key), wwOpenPlain(t, b, key)
	if bytes.Equal(pa[6:], pb[6:]) {
		t.Error("two seals used the same padding")
	}
}

// TestOpenGolden decrypts a payload built by Node.js 20 (OpenSSL AES-256-GCM,
// node's own PBKDF2 for the key) from the rfc26 layout, with a fixed nonce
// and padding. go-waku, js-waku and status-go have no fixed-nonce vector
// (their tests round-trip random keys), so this is the independent one.
func TestOpenGolden(t *testing.T) {
	const chatID = "0x02dcec6041fb999d65f1d33363e08c93d3c1f6f0fbbb26add383e2cf46c2b921f4-memberUpdate"
	payload := wwHex(t, "febd6ec9b8dc23d3ff6db9fda7f39bfbf93ca8d84332a0509b79593c011fd647795957217a8b46d1dc59d068e579f899e95451540a68d96e4583c5635dcfec293d37c0b0d90688edef7c2157414fe8e20046133ff4b198ca69eb35fd5a40547b05cb1d5ba5c406b61afd2aa8a4bf4fb6a99ddc605e3cf8cd815791c32749f2f9857a44fdcba2c0a8dd847bbaa1d1283ff7b08c2264f917ed302f0887a2e345768efc1ece02ec7d56c9eb423de1fee21cdfd262c7ba909b771475dcc9d75c84cc28c0fd64336a56a4ed6f1b3253c56e2ef2ae608ff2df953598c980d98fdac42e2d63e8198caf2d831ee5bbebd2c2cde043388333985d80d86319d670cc0a11839e9c25c5d62a9616233461a89f8f9cb1000102030405060708090a0b")
	env, err := wakuwire.OpenSymmetric(payload, wakuwire.ChatKey(chatID))
	if err != nil {
		t.Fatal(err)
	}
	if string(env.Data) != "archivefleet golden rfc26 payload" {
		t.Errorf("data %q", env.Data)
	}
	if len(env.Padding) != 221 {
		t.Fatalf("padding %d bytes, want 221", len(env.Padding))
	}
	for i, p := range env.Padding {
		if p != byte(i*7+3) {
			t.Fatalf("padding[%d] = %d, want %d", i, p, byte(i*7+3))
		}
	}
	if env.Signer != nil {
		t.Errorf("unsigned vector reports signer %x", env.Signer)
	}
}

func TestOpenRejectsTampering(t *testing.T) {
	key := wakuwire.ChatKey("wakuwire test chat")
	payload, err := wakuwire.SealSymmetric([]byte("hello"), key, wwKey(t, 2))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(payload)
		b[i] ^= 0x01
		return b
	}
	n := len(payload)
	wrongKey := bytes.Clone(key)
	wrongKey[0] ^= 0xff
	for _, tc := range []struct {
		name          string
		payload, key  []byte
		wantKeySizeIs bool
	}{
		{"ciphertext bit", flip(0), key, false},
		{"last ciphertext byte", flip(n - 29), key, false},
		{"tag bit", flip(n - 20), key, false},
		{"nonce bit", flip(n - 1), key, false},
		{"wrong key", payload, wrongKey, false},
		{"empty", nil, key, false},
		{"27 bytes", payload[:27], key, false},
		{"28 bytes", payload[:28], key, false},
		{"one short", payload[:n-1], key, false},
		{"one long", append(bytes.Clone(payload), 0), key, false},
		{"short key", payload, key[:16], true},
		{"nil key", payload, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := wakuwire.OpenSymmetric(tc.payload, tc.key)
			if !errors.Is(err, wakuwire.ErrMalformed) || env != nil {
				t.Fatalf("OpenSymmetric = %v, %v; want ErrMalformed", env, err)
			}
			if tc.wantKeySizeIs != errors.Is(err, wakuwire.ErrKeySize) {
				t.Errorf("errors.Is(err, ErrKeySize) = %v for %v", !tc.wantKeySizeIs, err)
			}
		})
	}
}

// TestOpenPlaintexts feeds OpenSymmetric plaintexts SealSymmetric never
// produces, to pin the parse rules shared with go-waku's validateAndParse.
func TestOpenPlaintexts(t *testing.T) {
	key := wakuwire.ChatKey("wakuwire test chat")
	nonce := make([]byte, 12)
	signer := wwKey(t, 3)
	// A genuine signed plaintext comes from SealSymmetric; the bad-signature
	// cases are edits of it.
	good, err := wakuwire.SealSymmetric([]byte("xyz"), key, signer)
	if err != nil {
		t.Fatal(err)
	}
	goodPlain := wwOpenPlain(t, good, key)
	sig := goodPlain[len(goodPlain)-65:]
	body := goodPlain[:len(goodPlain)-65]

	withV := func(v byte) []byte {
		p := bytes.Clone(goodPlain)
		p[len(p)-1] = v
		return p
	}
	zeroR := bytes.Clone(goodPlain)
	clear(zeroR[len(zeroR)-65 : len(zeroR)-33])
	alteredBody := bytes.Clone(goodPlain)
	alteredBody[len(body)-1] ^= 1 // padding byte: recovers some other key

	for _, tc := range []struct {
		name      string
		plain     []byte
		ok        bool
		data, pad []byte
		signed    bool
	}{
		{"flags only", []byte{0x00}, true, nil, []byte{}, false},
		{"width 0 means no data", []byte{0x00, 1, 2, 3}, true, nil, []byte{1, 2, 3}, false},
		{"width 1", []byte{0x01, 2, 'h', 'i', 9}, true, []byte("hi"), []byte{9}, false},
		{"width 2 little-endian", append([]byte{0x02, 0x01, 0x00, 'a'}, 7), true, []byte("a"), []byte{7}, false},
		{"width 3", []byte{0x03, 0x00, 0x00, 0x00}, true, []byte{}, []byte{}, false},
		{"unknown flag bits ignored", []byte{0xf9, 1, 'z'}, true, []byte("z"), []byte{}, false},
		{"size past end", []byte{0x01, 3, 'a', 'b'}, false, nil, nil, false},
		{"truncated size field", []byte{0x02, 1}, false, nil, nil, false},
		{"empty plaintext", []byte{}, false, nil, nil, false},
		{"signed but only 65 bytes", append([]byte{0x04}, make([]byte, 64)...), false, nil, nil, false},
		{"signed, flags and signature only", append([]byte{0x04}, sig...), false, nil, nil, false},
		{"good signature", goodPlain, true, []byte("xyz"), body[5:], true},
		{"recovery id 4", withV(4), false, nil, nil, false},
		{"recovery id 27", withV(27), false, nil, nil, false},
		{"zero R", zeroR, false, nil, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := wakuwire.OpenSymmetric(wwSealPlain(t, tc.plain, key, nonce), key)
			if !tc.ok {
				if !errors.Is(err, wakuwire.ErrMalformed) {
					t.Fatalf("got %+v, %v; want ErrMalformed", env, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(env.Data, tc.data) || (tc.data == nil) != (env.Data == nil) || !bytes.Equal(env.Padding, tc.pad) {
				t.Errorf("got data %q padding %x, want %q %x", env.Data, env.Padding, tc.data, tc.pad)
			}
			if tc.signed != (env.Signer != nil) {
				t.Errorf("signer %x", env.Signer)
			}
			if tc.signed && !bytes.Equal(env.Signer, signer.PubKey().SerializeUncompressed()) {
				t.Errorf("signer %x is not the sealing key", env.Signer)
			}
		})
	}

	// A changed byte under the signature still opens (GCM is fine) but
	// recovers a different key: receivers attribute it to someone else.
	env, err := wakuwire.OpenSymmetric(wwSealPlain(t, alteredBody, key, nonce), key)
	if err == nil && bytes.Equal(env.Signer, signer.PubKey().SerializeUncompressed()) {
		t.Error("altered signed bytes still recover the original signer")
	}
}

func TestSealRejects(t *testing.T) {
	key := wakuwire.ChatKey("wakuwire test chat")
	for _, k := range [][]byte{nil, key[:16], key[:24], append(bytes.Clone(key), 0)} {
		if _, err := wakuwire.SealSymmetric([]byte("x"), k, nil); !errors.Is(err, wakuwire.ErrKeySize) {
			t.Errorf("key of %d bytes: %v, want ErrKeySize", len(k), err)
		}
	}
	// 16 MiB needs a 4-byte size field, whose width would collide with the
	// signed flag; the largest 3-byte size still works.
	big := make([]byte, wakuwire.MaxSealSize+1)
	if _, err := wakuwire.SealSymmetric(big, key, nil); err == nil {
		t.Error("sealed 16 MiB")
	}
	p, err := wakuwire.SealSymmetric(big[:wakuwire.MaxSealSize], key, nil)
	if err != nil {
		t.Fatal(err)
	}
	env, err := wakuwire.OpenSymmetric(p, key)
	if err != nil || len(env.Data) != wakuwire.MaxSealSize {
		t.Errorf("MaxSealSize round trip: %v", err)
	}
}
