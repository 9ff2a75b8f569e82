package archive

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/archivefleet/archivefleet/internal/pb"
)

// Encrypter seals an archive or index for a token-gated community. Each call
// may advance ratchet state the caller must persist once the build commits.
type Encrypter interface {
	Encrypt(plaintext []byte) ([]byte, error)
}

// Decrypter opens what an Encrypter sealed.
type Decrypter interface {
	Decrypt(blob []byte) ([]byte, error)
}

// ErrKeyNotFound is status-go's ErrHashRatchetGroupIDNotFound: the blob was
// sealed with a ratchet key this reader does not hold.
var ErrKeyNotFound = errors.New("hash ratchet key not found")

// noInstallationID is the map key status-go uses for hash-ratchet messages,
// which are addressed to every device.
const noInstallationID = "none"

// maxSeqNoDelta is status-go's maxHashRatchetSeqNoDelta: how far a reader
// walks a key's hash chain before giving up.
const maxSeqNoDelta = 100000

// RatchetKey is one community hash-ratchet key as status-go distributes it to
// members: the key bytes and the timestamp (ms) that names it.
type RatchetKey struct {
	Timestamp uint64   `json:"timestamp"`
	Key       HexBytes `json:"key"`
}

// keyID is status-go's generateHashRatchetKeyID:
// Keccak-256(groupID || little-endian uint64(timestamp) || key).
func (k RatchetKey) keyID(group CommunityID) []byte {
	var ts [8]byte
	binary.LittleEndian.PutUint64(ts[:], k.Timestamp)
	return keccak256(group[:], ts[:], k.Key)
}

// RatchetState is the sender's position on its current key's hash chain.
// Hash is empty before the first message; SeqNo counts messages sealed.
type RatchetState struct {
	Key   RatchetKey `json:"key"`
	SeqNo uint32     `json:"seqNo"`
	Hash  HexBytes   `json:"hash,omitempty"`
}

// HashRatchet seals and opens archives with status-go's community hash
// ratchet: message n under a key is AES-256-GCM encrypted with
// Keccak-256^n(key), output as ciphertext || 12-byte nonce, and wrapped in a
// ProtocolMessage with an HRHeader naming group, key and n.
type HashRatchet struct {
	Community CommunityID
	// InstallationID is the owner device id put in every ProtocolMessage.
	InstallationID string
	// State is the sending position; Encrypt advances it. Persist it after a
	// build commits. Nil for a reader that only decrypts.
	State *RatchetState
	// Keys are the community keys a reader holds, newest or oldest first.
	Keys []RatchetKey
	// MaxSeqAhead bounds the hash-chain steps one Decrypt may walk; 0 means
	// status-go's limit of 100,000 (a few tens of milliseconds).
	MaxSeqAhead uint32

	mu    sync.Mutex
	cache map[string]chainPos // key id hex -> furthest hash computed
}

type chainPos struct {
	seq  uint32
	hash []byte
}

// CheckInstallationID rejects installation ids with which a sealed archive
// would also decode as a plain (empty) WakuMessageArchive: status-go members
// try the plain decoding first, so such an archive would import nothing.
func CheckInstallationID(id string) error {
	if id == "" {
		return errors.New("installation id is empty: a member would read the sealed archive as an empty plain one")
	}
	pm := &pb.ProtocolMessage{InstallationId: id}
	b, err := proto.Marshal(pm)
	if err != nil {
		return err
	}
	if proto.Unmarshal(b, &pb.WakuMessageArchive{}) == nil {
		return fmt.Errorf("installation id %q also parses as archive metadata: a member would read the sealed archive as an empty plain one", truncate(id, 60))
	}
	return nil
}

// Encrypt implements Encrypter.
func (h *HashRatchet) Encrypt(plaintext []byte) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.State == nil || len(h.State.Key.Key) == 0 {
		return nil, errors.New("hash ratchet: no sending key")
	}
	if h.State.Key.Timestamp == 0 {
		return nil, errors.New("hash ratchet: sending key has no timestamp")
	}
	if err := CheckInstallationID(h.InstallationID); err != nil {
		return nil, fmt.Errorf("hash ratchet: %w", err)
	}
	prev := h.State.Hash
	if len(prev) == 0 {
		prev = h.State.Key.Key
	}
	next := keccak256(prev)
	sealed, err := sealGCM(next, plaintext)
	if err != nil {
		return nil, err
	}
	seq := h.State.SeqNo + 1
	pm := &pb.ProtocolMessage{
		InstallationId: h.InstallationID,
		EncryptedMessage: map[string]*pb.EncryptedMessageProtocol{
			noInstallationID: {
				HRHeader: &pb.HRHeader{
					DeprecatedKeyId: uint32(h.State.Key.Timestamp),
					SeqNo:           seq,
					GroupId:         h.Community[:],
					KeyId:           h.State.Key.keyID(h.Community),
				},
				Payload: sealed,
			},
		},
	}
	out, err := proto.MarshalOptions{Deterministic: true}.Marshal(pm)
	if err != nil {
		return nil, fmt.Errorf("hash ratchet: marshal envelope: %w", err)
	}
	h.State.SeqNo, h.State.Hash = seq, next
	return out, nil
}

// Decrypt implements Decrypter.
func (h *HashRatchet) Decrypt(blob []byte) ([]byte, error) {
	var pm pb.ProtocolMessage
	if err := proto.Unmarshal(blob, &pm); err != nil {
		return nil, malformed("protocol message: %v", err)
	}
	msg := pm.GetEncryptedMessage()[noInstallationID]
	if msg == nil {
		return nil, malformed("protocol message has no hash-ratchet payload")
	}
	hdr := msg.GetHRHeader()
	if hdr == nil {
		return nil, malformed("protocol message has no hash-ratchet header")
	}
	if !bytes.Equal(hdr.GetGroupId(), h.Community[:]) {
		return nil, fmt.Errorf("%w: sealed for group %x, not community %s", ErrKeyNotFound, truncate(string(hdr.GetGroupId()), 40), h.Community)
	}
	if hdr.GetSeqNo() == 0 {
		// status-go: a key-exchange message, nothing to decrypt.
		return msg.GetPayload(), nil
	}
	key, ok := h.findKey(hdr)
	if !ok {
		return nil, fmt.Errorf("%w: key id %x", ErrKeyNotFound, hdr.GetKeyId())
	}
	hash, err := h.chainHash(key, hdr.GetSeqNo())
	if err != nil {
		return nil, err
	}
	plain, err := openGCM(hash, msg.GetPayload())
	if err != nil {
		return nil, fmt.Errorf("hash ratchet: %w", err)
	}
	return plain, nil
}

func (h *HashRatchet) findKey(hdr *pb.HRHeader) (RatchetKey, bool) {
	for _, k := range h.allKeys() {
		if len(hdr.GetKeyId()) > 0 {
			if bytes.Equal(k.keyID(h.Community), hdr.GetKeyId()) {
				return k, true
			}
		} else if hdr.GetDeprecatedKeyId() != 0 && uint32(k.Timestamp) == hdr.GetDeprecatedKeyId() {
			return k, true
		}
	}
	return RatchetKey{}, false
}

func (h *HashRatchet) allKeys() []RatchetKey {
	if h.State != nil && len(h.State.Key.Key) > 0 {
		return append([]RatchetKey{h.State.Key}, h.Keys...)
	}
	return h.Keys
}

// chainHash returns Keccak-256^seq(key), resuming from the furthest point
// already computed so reading archives in order costs one step each.
func (h *HashRatchet) chainHash(k RatchetKey, seq uint32) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cache == nil {
		h.cache = make(map[string]chainPos)
	}
	id := string(k.keyID(h.Community))
	pos, ok := h.cache[id]
	if !ok || pos.seq > seq {
		pos = chainPos{seq: 0, hash: k.Key}
	}
	limit := h.MaxSeqAhead
	if limit == 0 {
		limit = maxSeqNoDelta
	}
	if seq-pos.seq > limit {
		return nil, fmt.Errorf("%w: hash ratchet seq_no %d is more than %d steps ahead", ErrMalformed, seq, limit)
	}
	hash := pos.hash
	for i := pos.seq; i < seq; i++ {
		hash = keccak256(hash)
	}
	h.cache[id] = chainPos{seq: seq, hash: hash}
	return hash, nil
}

func sealGCM(key, plaintext []byte) ([]byte, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	// Sized up front: an archive is up to 30 MB and appending the nonce must not copy it.
	out := make([]byte, 0, len(plaintext)+aead.Overhead()+len(nonce))
	return append(aead.Seal(out, nonce, plaintext, nil), nonce...), nil
}

func openGCM(key, sealed []byte) ([]byte, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	ns := aead.NonceSize()
	if len(sealed) < ns+aead.Overhead() {
		return nil, malformed("ciphertext of %d bytes is too short", len(sealed))
	}
	cut := len(sealed) - ns
	return aead.Open(nil, sealed[cut:], sealed[:cut], nil)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
