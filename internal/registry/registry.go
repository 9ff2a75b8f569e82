// Package registry keeps the communities the fleet archives, in a NATS KV
// bucket keyed by community id that every process reads (channel topics,
// interval, encryption), and their signing keys, in a bucket of their own
// that only the announcer and the admin may read (Keys).
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

// Community is one registered community.
type Community struct {
	ID archive.CommunityID `json:"id"`
	// Topics are the channel content topics. The universal "<id>-memberUpdate"
	// topic is always added: current Status clients send community messages,
	// archive links among them, on it (docs/archive-format.md).
	Topics []archive.Topic `json:"topics"`
	// Interval is the archive window; status-go uses 7 days.
	Interval Duration `json:"interval"`
	// Since is where the first archive starts (unix seconds).
	Since uint64 `json:"since"`
	// Encrypted communities (token-gated) get hash-ratchet sealed archives.
	Encrypted      bool                 `json:"encrypted,omitempty"`
	InstallationID string               `json:"installationId,omitempty"`
	RatchetKey     *archive.RatchetKey  `json:"ratchetKey,omitempty"`
	OldKeys        []archive.RatchetKey `json:"oldKeys,omitempty"`
	// LegacySigningKey is the community's private key as versions before
	// the keys bucket (Keys) stored it here, where every process reads it.
	// Put refuses a community that still carries one; MoveSigningKeys
	// (archivectl setup) moves it. A secret: never log a Community.
	LegacySigningKey archive.HexBytes `json:"signingKey,omitempty"`
	Disabled         bool             `json:"disabled,omitempty"`
	// Shard is the community's Waku shard index in the fleet's cluster
	// (0..1023); nil means status-go's default community shard
	// (wakuwire.DefaultCommunityShard, /waku/2/rs/16/32).
	Shard *uint16 `json:"shard,omitempty"`
	// Chats are the legacy channel chat ids "<0xID><channel uuid>" the
	// operator listed; the universal chat "<0xID>-memberUpdate" is always
	// heard and not listed here (ChatIDs adds it). Their content topics are
	// added to Topics by Validate.
	Chats     []string  `json:"chats,omitempty"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// UniversalChatID is status-go's universal chat of a community, on which
// current clients send every channel message.
func UniversalChatID(c archive.CommunityID) string { return wakuwire.UniversalChatID(c.String()) }

// ChatIDs are the chats the fleet hears for c: the universal chat, then the
// listed channel chats.
func (c *Community) ChatIDs() []string {
	return append([]string{UniversalChatID(c.ID)}, c.Chats...)
}

// ChatTopic is the 4-byte topic of a chat id (wakuwire.ChatTopic).
func ChatTopic(chat string) archive.Topic { return wakuwire.ChatTopic(chat) }

// Duration is a time.Duration written as a Go duration string in JSON.
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// UniversalTopic is the content topic of "<id>-memberUpdate", status-go's
// UniversalChatID.
func UniversalTopic(c archive.CommunityID) archive.Topic { return ChatTopic(UniversalChatID(c)) }

// NextStart is where the community's next archive starts: the end of the
// last archive, or Since when nothing was archived yet (lastEnd 0).
func (c *Community) NextStart(lastEnd uint64) uint64 {
	if lastEnd == 0 {
		return c.Since
	}
	return lastEnd
}

// MaxShard is the highest Waku shard index (RFC 51: 1024 shards per cluster).
const MaxShard = 1023

// Validate checks a community before it is stored and fills defaults.
func (c *Community) Validate() error {
	if c.Interval == 0 {
		c.Interval = Duration(archive.DefaultInterval)
	}
	iv := time.Duration(c.Interval)
	if iv < time.Second || iv%time.Second != 0 {
		return fmt.Errorf("interval %v is not a positive whole number of seconds", iv)
	}
	if len(c.LegacySigningKey) > 0 {
		return errors.New("the entry still carries the community's signing key, readable by every process: " +
			"move it to the keys bucket first (archivectl setup does)")
	}
	if _, err := secp256k1.ParsePubKey(c.ID[:]); err != nil {
		return fmt.Errorf("community id is not a compressed secp256k1 public key: %w", err)
	}
	if c.Shard != nil && *c.Shard > MaxShard {
		return fmt.Errorf("shard %d is out of range 0..%d", *c.Shard, MaxShard)
	}
	seen := map[string]bool{}
	for _, chat := range c.Chats {
		// status-go's channel chat id is the community id followed by the
		// channel's uuid (CommunityDescription chats).
		if rest, ok := strings.CutPrefix(chat, c.ID.String()); !ok || rest == "" || rest == wakuwire.UniversalChatSuffix || rest == wakuwire.MagnetlinksChatSuffix {
			return fmt.Errorf("chat %q is not a channel chat id of this community (%s<channel uuid>)", chat, c.ID)
		}
		if seen[chat] {
			return fmt.Errorf("chat %q listed twice", chat)
		}
		seen[chat] = true
	}
	for _, chat := range c.ChatIDs() {
		if t := ChatTopic(chat); !slices.Contains(c.Topics, t) {
			c.Topics = append(c.Topics, t)
		}
	}
	if c.Encrypted {
		if c.RatchetKey == nil || len(c.RatchetKey.Key) != 32 || c.RatchetKey.Timestamp == 0 {
			return errors.New("an encrypted community needs a ratchet key (32 bytes and a timestamp)")
		}
		if err := archive.CheckInstallationID(c.InstallationID); err != nil {
			return err
		}
	}
	return nil
}

// Registry reads and writes communities.
type Registry struct{ kv jetstream.KeyValue }

// New wraps the communities bucket.
func New(kv jetstream.KeyValue) *Registry { return &Registry{kv: kv} }

// ErrNotFound is returned for unknown communities.
var ErrNotFound = errors.New("community not registered")

// ErrCorrupt is returned for a stored community (or signing key) that does
// not decode or check. It is a bus.ErrCorrupt: a worker dead-letters the
// event that needed it.
var ErrCorrupt = bus.Corrupt("stored community is corrupt")

// Put adds or replaces a community.
func (r *Registry) Put(ctx context.Context, c *Community) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("community %s: %w", c.ID, err)
	}
	c.UpdatedAt = time.Now().UTC()
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	_, err = r.kv.Put(ctx, c.ID.String(), b)
	return err
}

// Get returns one community.
func (r *Registry) Get(ctx context.Context, id archive.CommunityID) (*Community, error) {
	e, err := r.kv.Get(ctx, id.String())
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return Decode(e.Value())
}

// Decode parses a stored community.
func Decode(b []byte) (*Community, error) {
	var c Community
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return &c, nil
}

// SetDisabled stops (or resumes) a community's schedule and seeding, as
// status-go's StopHistoryArchiveTasksInterval does when archives are disabled.
func (r *Registry) SetDisabled(ctx context.Context, id archive.CommunityID, disabled bool) error {
	for {
		e, err := r.kv.Get(ctx, id.String())
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("%s: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		c, err := Decode(e.Value())
		if err != nil {
			return err
		}
		c.Disabled, c.UpdatedAt = disabled, time.Now().UTC()
		b, _ := json.Marshal(c)
		if _, err := r.kv.Update(ctx, id.String(), b, e.Revision()); errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		} else {
			return err
		}
	}
}

// Remove deletes a community; its schedule and seeding stop.
func (r *Registry) Remove(ctx context.Context, id archive.CommunityID) error {
	return r.kv.Delete(ctx, id.String())
}

// List returns every community.
func (r *Registry) List(ctx context.Context) ([]*Community, error) {
	keys, err := r.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []*Community
	for k := range keys.Keys() {
		e, err := r.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		c, err := Decode(e.Value())
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// Watch calls fn for every registered community, then ready (if not nil)
// once, then fn for every change until ctx ends: a put with the community,
// a removal with nil. A community that does not decode is passed as nil too
// (it cannot be served). fn and ready run on Watch's goroutine, in order.
func (r *Registry) Watch(ctx context.Context, fn func(id string, c *Community), ready func()) error {
	w, err := r.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("registry: watch: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("registry: watch ended")
			}
			if e == nil { // the initial values are all delivered
				if ready != nil {
					ready()
					ready = nil
				}
				continue
			}
			var c *Community
			if e.Operation() == jetstream.KeyValuePut {
				c, _ = Decode(e.Value())
			}
			fn(e.Key(), c)
		}
	}
}
