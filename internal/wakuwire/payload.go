package wakuwire

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
	"golang.org/x/crypto/sha3"
)

// rfc26 "version 1" layout constants (go-waku waku/v2/payload/waku_payload.go).
const (
	flagSigned   = byte(0x04) // set in flags when a 65-byte signature trails the padding
	sizeMask     = byte(0x03) // low bits of flags: width of the little-endian size field
	padBlock     = 256        // plaintext is padded to a multiple of this
	sigLen       = 65         // R ‖ S ‖ V, V in {0,1}
	gcmNonceLen  = 12
	gcmTagLen    = 16
	symKeyLen    = 32
	maxSizeField = 3 // sizeMask allows 3; a 4-byte field would set flagSigned
)

// MaxSealSize is the largest data SealSymmetric accepts: the size field is at
// most 3 bytes wide because its width shares the flags byte with the signed
// flag (go-waku would write width 4 for ≥ 16 MiB, which reads back as
// "signed, no size field" — a corrupt message). Waku relays cap messages far
// lower (150 KiB nwaku default, 1 MiB Status).
const MaxSealSize = 1<<24 - 1

// Envelope is an opened rfc26 payload: what status-go keeps of a received
// message besides its hash (the archive record's payload, padding and sig).
type Envelope struct {
	Data    []byte // the sealed bytes (for Status, a ProtocolMessage)
	Padding []byte // kept because archives store it
	// Signer is the 65-byte uncompressed public key recovered from the
	// signature, the "sig" of an archived message; nil when unsigned.
	Signer []byte
}

// SealSymmetric builds an rfc26 version-1 symmetric payload, the bytes of a
// WakuMessage's payload field, as go-waku's payload.Encode does:
//
//	plaintext = flags | size (LE, 1–3 bytes) | data | padding | [signature]
//	output    = AES-256-GCM(key, nonce, plaintext) ‖ tag(16) ‖ nonce(12)
//
// flags holds the size-field width, OR 0x04 when signed. Random padding
// brings the plaintext (signature included) to a multiple of 256 bytes, a
// full 256 when it already is one (go-waku's paddingSize = 256 - raw%256),
// so lengths leak little. The signature is secp256k1 R‖S‖V over
// Keccak-256(flags … padding) with the signed flag already set; receivers
// recover the sender from it, and status-go drops messages without one.
// signer may be nil for an unsigned payload. The nonce and padding come from
// crypto/rand: with a key every chat member knows, a repeated nonce would
// leak plaintext.
func SealSymmetric(data, key []byte, signer *secp256k1.PrivateKey) ([]byte, error) {
	if len(key) != symKeyLen {
		return nil, fmt.Errorf("%w: got %d bytes", ErrKeySize, len(key))
	}
	if len(data) > MaxSealSize {
		return nil, fmt.Errorf("wakuwire: data is %d bytes, rfc26 size field holds at most %d", len(data), MaxSealSize)
	}
	width := sizeFieldWidth(len(data))
	raw := 1 + width + len(data)
	if signer != nil {
		raw += sigLen
	}
	padLen := padBlock - raw%padBlock

	plain := make([]byte, 0, raw+padLen+gcmTagLen+gcmNonceLen)
	plain = append(plain, byte(width))
	var size [4]byte
	binary.LittleEndian.PutUint32(size[:], uint32(len(data)))
	plain = append(plain, size[:width]...)
	plain = append(plain, data...)
	pad := plain[len(plain) : len(plain)+padLen]
	if _, err := rand.Read(pad); err != nil {
		return nil, fmt.Errorf("wakuwire: padding: %w", err)
	}
	plain = plain[:len(plain)+padLen]

	if signer != nil {
		plain[0] |= flagSigned // signed over, so it must be set first
		plain = append(plain, signRecoverable(signer, keccak256(plain))...)
	}

	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	var nonce [gcmNonceLen]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("wakuwire: nonce: %w", err)
	}
	out := aead.Seal(plain[:0], nonce[:], plain, nil) // in place: plain has room for the tag
	return append(out, nonce[:]...), nil
}

// OpenSymmetric decrypts and parses an rfc26 version-1 symmetric payload
// (go-waku payload.DecodePayload + validateAndParse). Every failure — short
// input, wrong key or tampering (the GCM tag fails), a size field pointing
// past the end, a signature that recovers no key — is an error wrapping
// ErrMalformed and never a panic, because payloads come from anyone on the
// network. The parsing is as lenient as go-waku's where go-waku is lenient
// (unknown flag bits ignored; width 0 means no data), so the fleet reads what
// status-go reads.
func OpenSymmetric(payload, key []byte) (*Envelope, error) {
	if len(key) != symKeyLen {
		return nil, fmt.Errorf("%w: %w: got %d bytes", ErrMalformed, ErrKeySize, len(key))
	}
	if len(payload) < gcmTagLen+gcmNonceLen {
		return nil, malformed("rfc26 payload", fmt.Errorf("%d bytes is shorter than tag and nonce", len(payload)))
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	split := len(payload) - gcmNonceLen
	plain, err := aead.Open(nil, payload[split:], payload[:split], nil)
	if err != nil {
		return nil, malformed("rfc26 payload", err)
	}
	return parsePlaintext(plain)
}

func parsePlaintext(in []byte) (*Envelope, error) {
	end := len(in)
	if end < 1 {
		return nil, malformed("rfc26 plaintext", errors.New("empty"))
	}
	env := &Envelope{}
	if in[0]&flagSigned != 0 {
		end -= sigLen
		if end <= 1 { // go-waku: a signed payload needs more than the flags byte
			return nil, malformed("rfc26 plaintext", errors.New("too short for its signature"))
		}
		pub, err := recoverSigner(in[end:], keccak256(in[:end]))
		if err != nil {
			return nil, malformed("rfc26 signature", err)
		}
		env.Signer = pub.SerializeUncompressed()
	}
	beg := 1
	if width := int(in[0] & sizeMask); width != 0 {
		if end < beg+width {
			return nil, malformed("rfc26 plaintext", errors.New("truncated size field"))
		}
		var size uint64
		for i := width - 1; i >= 0; i-- {
			size = size<<8 | uint64(in[beg+i])
		}
		beg += width
		if size > uint64(end-beg) {
			return nil, malformed("rfc26 plaintext", fmt.Errorf("size %d exceeds the %d bytes left", size, end-beg))
		}
		env.Data = in[beg : beg+int(size)]
		beg += int(size)
	}
	env.Padding = in[beg:end]
	return env, nil
}

// sizeFieldWidth is go-waku's getSizeOfPayloadSizeField: the fewest bytes
// that hold n.
func sizeFieldWidth(n int) int {
	w := 1
	for ; n >= 256; n /= 256 {
		w++
	}
	return w
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeySize, err)
	}
	return cipher.NewGCM(block) // 12-byte nonce, 16-byte tag: go-waku's and js-waku's choice
}

func keccak256(b []byte) []byte {
	h := sha3.NewLegacyKeccak256()
	h.Write(b)
	return h.Sum(nil)
}

// signRecoverable returns go-ethereum's crypto.Sign layout, R ‖ S ‖ V with
// V in {0,1}, which is what rfc26 and status-go carry.
func signRecoverable(key *secp256k1.PrivateKey, hash []byte) []byte {
	compact := ecdsa.SignCompact(key, hash, false) // [27+V] ‖ R ‖ S
	sig := make([]byte, sigLen)
	copy(sig, compact[1:])
	sig[64] = compact[0] - 27
	return sig
}

// recoverSigner accepts V in 0..3 as go-ethereum's SigToPub does (2 and 3
// are legal, merely rare, recovery ids).
func recoverSigner(sig, hash []byte) (*secp256k1.PublicKey, error) {
	if len(sig) != sigLen {
		return nil, fmt.Errorf("signature is %d bytes, want %d", len(sig), sigLen)
	}
	if sig[64] > 3 {
		return nil, fmt.Errorf("recovery id %d, want 0..3", sig[64])
	}
	var compact [sigLen]byte
	compact[0] = sig[64] + 27
	copy(compact[1:], sig[:64])
	pub, _, err := ecdsa.RecoverCompact(compact[:], hash)
	return pub, err
}
