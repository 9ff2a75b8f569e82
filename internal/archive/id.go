package archive

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"golang.org/x/crypto/sha3"
)

// CommunityID is a community's 33-byte compressed secp256k1 public key.
type CommunityID [33]byte

// ErrInvalidCommunityID is returned for community ids that are not "0x" plus
// 66 hex digits naming a compressed point on secp256k1.
var ErrInvalidCommunityID = errors.New("invalid community id")

// ParseCommunityID parses "0x" followed by the hex of a compressed public key.
// Upper-case hex is accepted; String always returns lower case, which is the
// torrent name and folder name members look for.
func ParseCommunityID(s string) (CommunityID, error) {
	var id CommunityID
	h, ok := strings.CutPrefix(s, "0x")
	if !ok {
		h, ok = strings.CutPrefix(s, "0X")
	}
	if !ok || len(h) != 2*len(id) {
		return id, fmt.Errorf("%w %q: want 0x and 66 hex digits", ErrInvalidCommunityID, truncate(s, 80))
	}
	if _, err := hex.Decode(id[:], []byte(h)); err != nil {
		return id, fmt.Errorf("%w %q: %v", ErrInvalidCommunityID, truncate(s, 80), err)
	}
	if id[0] != 0x02 && id[0] != 0x03 {
		return id, fmt.Errorf("%w %q: not a compressed public key", ErrInvalidCommunityID, truncate(s, 80))
	}
	if _, err := secp256k1.ParsePubKey(id[:]); err != nil {
		return id, fmt.Errorf("%w %q: %v", ErrInvalidCommunityID, truncate(s, 80), err)
	}
	return id, nil
}

// String returns "0x" and the lower-case hex of the key: status-go's
// types.HexBytes form, used as the torrent name and folder name.
func (c CommunityID) String() string { return "0x" + hex.EncodeToString(c[:]) }

// MarshalText implements encoding.TextMarshaler.
func (c CommunityID) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParseCommunityID's rules.
func (c *CommunityID) UnmarshalText(b []byte) error {
	id, err := ParseCommunityID(string(b))
	if err != nil {
		return err
	}
	*c = id
	return nil
}

// keccak256 is Ethereum's Keccak-256 (the pre-standard padding), which
// status-go uses for archive ids, key ids and the hash ratchet.
func keccak256(parts ...[]byte) []byte {
	h := sha3.NewLegacyKeccak256()
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
