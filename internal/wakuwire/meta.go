package wakuwire

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
)

// MetaWindow is how far a protected-shard message's timestamp may be from a
// relay's clock: go-waku accepts |now-ts| <= 5 min, nwaku < 5 min
// (relay/validators.go, validator_signed.nim).
const MetaWindow = 5 * time.Minute

// metaDigest is the protected-shard digest of go-waku relay/validators.go
// msgHash and nwaku validator_signed.nim msgHash, which agree:
// SHA-256(pubsubTopic ‖ payload ‖ content_topic ‖ timestamp as 8-byte
// LITTLE-endian ‖ ephemeral as one byte 0/1). Unlike the message hash it
// leaves out meta (which carries the signature) and uses little-endian.
func metaDigest(pubsubTopic string, m *Message) []byte {
	h := sha256.New()
	h.Write([]byte(pubsubTopic))
	h.Write(m.Payload)
	h.Write([]byte(m.ContentTopic))
	var ts [8]byte
	binary.LittleEndian.PutUint64(ts[:], uint64(m.Timestamp))
	h.Write(ts[:])
	if m.Ephemeral {
		h.Write([]byte{1})
	} else {
		h.Write([]byte{0})
	}
	return h.Sum(nil)
}

// SignMeta signs m for a protected shard, whose relays drop messages not
// signed by the shard's key: a 64-byte R‖S secp256k1 ECDSA signature
// (RFC 6979, low S) over the protected-shard digest, the layout go-waku's
// SignMessage writes (V dropped) and nwaku's SkSignature.fromRaw reads. Like
// go-waku it stores the signature in m.Meta, and also returns it. Sign after
// every other field is final: the digest covers payload, content topic,
// timestamp and ephemeral. Relays also require a non-zero timestamp within
// MetaWindow of their clock (see MetaFresh).
func SignMeta(pubsubTopic string, m *Message, key *secp256k1.PrivateKey) ([]byte, error) {
	if m == nil || key == nil {
		return nil, errors.New("wakuwire: SignMeta needs a message and a key")
	}
	compact := ecdsa.SignCompact(key, metaDigest(pubsubTopic, m), false) // [27+V] ‖ R ‖ S
	sig := append([]byte(nil), compact[1:]...)
	m.Meta = sig
	return append([]byte(nil), sig...), nil
}

// VerifyMeta reports whether m.Meta is a valid protected-shard signature by
// pub, checked the way relays check it: exactly 64 bytes R‖S, R and S in
// [1, N-1], and S in the lower half (libsecp256k1's verify, behind go-waku's
// cgo and nwaku, rejects high-S, so a high-S signature would not propagate
// even though it is mathematically valid). It does not look at the clock;
// see MetaFresh.
func VerifyMeta(pubsubTopic string, m *Message, pub *secp256k1.PublicKey) bool {
	if m == nil || pub == nil || len(m.Meta) != 64 {
		return false
	}
	var r, s secp256k1.ModNScalar
	if r.SetByteSlice(m.Meta[:32]) || s.SetByteSlice(m.Meta[32:]) { // overflow: ≥ N
		return false
	}
	if r.IsZero() || s.IsZero() || s.IsOverHalfOrder() {
		return false
	}
	return ecdsa.NewSignature(&r, &s).Verify(metaDigest(pubsubTopic, m), pub)
}

// MetaFresh reports whether m's timestamp would pass a protected shard's
// clock check at now: non-zero and strictly within MetaWindow (nwaku's
// stricter "<"; go-waku allows equality).
func MetaFresh(m *Message, now time.Time) bool {
	if m == nil || m.Timestamp == 0 {
		return false
	}
	d := now.Sub(time.Unix(0, m.Timestamp))
	return d < MetaWindow && d > -MetaWindow
}
