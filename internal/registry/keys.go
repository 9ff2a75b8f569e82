package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
)

// Keys holds each community's signing key (the private key that signs its
// magnet announcements) in its own bucket, keyed by community id. The
// registry is read by every process; this bucket only by the announcer and
// the admin (archivectl), as the fleet's NATS permissions say.
type Keys struct{ kv jetstream.KeyValue }

// NewKeys wraps the signing-keys bucket (bus.BucketCommunityKeys).
func NewKeys(kv jetstream.KeyValue) *Keys { return &Keys{kv: kv} }

// ErrNoKey is returned for a community whose signing key is not stored.
var ErrNoKey = errors.New("no signing key stored")

// storedKey is a bucket entry.
type storedKey struct {
	SigningKey archive.HexBytes `json:"signingKey"`
}

// KeyID returns the community a private key belongs to (its compressed
// public key), checking the key's form.
func KeyID(key []byte) (archive.CommunityID, error) {
	var id archive.CommunityID
	if len(key) != 32 {
		return id, errors.New("a community's signing key is its 32-byte private key")
	}
	k := secp256k1.PrivKeyFromBytes(key)
	if k.Key.IsZero() {
		return id, errors.New("the signing key is zero (or the curve order)")
	}
	copy(id[:], k.PubKey().SerializeCompressed())
	return id, nil
}

// Put stores key under the community it belongs to and returns that
// community's id.
func (k *Keys) Put(ctx context.Context, key []byte) (archive.CommunityID, error) {
	id, err := KeyID(key)
	if err != nil {
		return id, err
	}
	b, err := json.Marshal(storedKey{SigningKey: key})
	if err != nil {
		return id, err
	}
	if _, err := k.kv.Put(ctx, id.String(), b); err != nil {
		return id, fmt.Errorf("store the signing key of %s: %w", id, err)
	}
	return id, nil
}

// Get returns c's signing key: ErrNoKey if none is stored, ErrCorrupt if
// what is stored is not c's key.
func (k *Keys) Get(ctx context.Context, c archive.CommunityID) ([]byte, error) {
	e, err := k.kv.Get(ctx, c.String())
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%s: %w", c, ErrNoKey)
	}
	if err != nil {
		return nil, err
	}
	var sk storedKey
	if err := json.Unmarshal(e.Value(), &sk); err != nil {
		return nil, fmt.Errorf("%w: signing key of %s: %v", ErrCorrupt, c, err)
	}
	if id, err := KeyID(sk.SigningKey); err != nil || id != c {
		return nil, fmt.Errorf("%w: the stored signing key of %s is not that community's", ErrCorrupt, c)
	}
	return sk.SigningKey, nil
}

// Delete removes c's signing key (none stored is not an error).
func (k *Keys) Delete(ctx context.Context, c archive.CommunityID) error {
	err := k.kv.Delete(ctx, c.String())
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

// MoveSigningKeys moves every signing key that versions before the keys
// bucket stored in the registry into keys: each key is written to keys
// first, then its community is rewritten without it (a compare-and-set on
// the entry's revision, so a concurrent change is read again, not lost).
// The registry keeps one revision per community, so the old value leaves
// the bucket's stream. It returns the communities it moved; a key that does
// not belong to its community is left where it is and reported.
func (r *Registry) MoveSigningKeys(ctx context.Context, keys *Keys) ([]archive.CommunityID, error) {
	names, err := r.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var moved []archive.CommunityID
	var errs []error
	for name := range names.Keys() {
		id, err := r.moveSigningKey(ctx, keys, name)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("community %s: %w", name, err))
		case id != nil:
			moved = append(moved, *id)
		}
	}
	return moved, errors.Join(errs...)
}

// moveSigningKey moves one entry's key; nil, nil when it holds none.
func (r *Registry) moveSigningKey(ctx context.Context, keys *Keys, name string) (*archive.CommunityID, error) {
	for {
		e, err := r.kv.Get(ctx, name)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		c, err := Decode(e.Value())
		if err != nil {
			return nil, err
		}
		if len(c.LegacySigningKey) == 0 {
			return nil, nil
		}
		if id, err := KeyID(c.LegacySigningKey); err != nil || id != c.ID {
			return nil, errors.New("its stored signing key does not belong to it: left in place; register the right key with archivectl community add -update")
		}
		if stored, err := keys.Get(ctx, c.ID); err == nil && !bytes.Equal(stored, c.LegacySigningKey) {
			return nil, errors.New("the keys bucket holds another key for it: left in place")
		} else if err != nil && !errors.Is(err, ErrNoKey) {
			return nil, err
		}
		if _, err := keys.Put(ctx, c.LegacySigningKey); err != nil {
			return nil, err
		}
		c.LegacySigningKey = nil
		b, err := json.Marshal(c)
		if err != nil {
			return nil, err
		}
		_, err = r.kv.Update(ctx, name, b, e.Revision())
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // changed meanwhile: read it again
		}
		if err != nil {
			return nil, err
		}
		return &c.ID, nil
	}
}
