package placement

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Heartbeat writes self into the members bucket now, then every `every`
// until ctx ends or stop is called. It does not remove the entry when it
// stops: a seeder restarted within the bucket's TTL (an upgrade, a node
// drain) comes back to the same communities and nothing is handed off and
// back; one that stays away is replaced once its entry expires. The first
// write's error is returned (the caller is not a member yet); later
// failures are logged and retried: missing heartbeats for the TTL makes
// the others take this seeder's communities over, which is what should
// happen to a seeder cut off from NATS.
func Heartbeat(ctx context.Context, kv jetstream.KeyValue, self Member, every time.Duration, log *slog.Logger) (stop func(), err error) {
	b, err := json.Marshal(self)
	if err != nil {
		return nil, err
	}
	if _, err := kv.Put(ctx, self.ID, b); err != nil {
		return nil, fmt.Errorf("join seeders: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		failing := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if _, err := kv.Put(ctx, self.ID, b); err != nil {
				if ctx.Err() == nil && !failing {
					log.Warn("seeder heartbeat failed; if it keeps failing the other seeders take over this one's communities",
						"err", err, "retry_in", every)
				}
				failing = true
				continue
			}
			if failing {
				log.Info("seeder heartbeat written again")
			}
			failing = false
		}
	}()
	return func() { cancel(); <-done }, nil
}

// View is the live membership, kept current by a watch of the members
// bucket.
type View struct {
	mu      sync.RWMutex
	members map[string]Member
	changes chan struct{}
}

// Watch follows the members bucket until ctx ends. It returns once the
// current members are loaded. Expired members disappear through the
// bucket's limit markers; a full re-read every TTL covers a server that
// does not write them.
func Watch(ctx context.Context, kv jetstream.KeyValue, log *slog.Logger) (*View, error) {
	v := &View{members: map[string]Member{}, changes: make(chan struct{}, 1)}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch seeders: %w", err)
	}
	for e := range w.Updates() {
		if e == nil {
			break
		}
		v.apply(e, log)
	}
	ttl := 15 * time.Second
	if st, err := kv.Status(ctx); err == nil && st.TTL() > 0 {
		ttl = st.TTL()
	}
	go func() {
		defer w.Stop()
		t := time.NewTicker(ttl)
		defer t.Stop()
		updates := w.Updates()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-updates:
				if !ok {
					if ctx.Err() == nil {
						log.Warn("seeders watch ended; membership is read every TTL only", "ttl", ttl)
					}
					updates = nil // a nil channel never delivers
					continue
				}
				if e != nil && v.apply(e, log) {
					v.notify()
				}
			case <-t.C:
				if v.reload(ctx, kv) {
					v.notify()
				}
			}
		}
	}()
	return v, nil
}

// apply records one bucket entry; it reports whether membership changed.
func (v *View) apply(e jetstream.KeyValueEntry, log *slog.Logger) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		_, had := v.members[e.Key()]
		delete(v.members, e.Key())
		return had
	}
	var m Member
	if err := json.Unmarshal(e.Value(), &m); err != nil || m.ID != e.Key() {
		log.Warn("ignoring a malformed seeder entry", "key", e.Key(), "err", err)
		return false
	}
	old, had := v.members[m.ID]
	v.members[m.ID] = m
	return !had || old.Addr != m.Addr || old.Factor != m.Factor || !old.Since.Equal(m.Since)
}

// reload replaces the members with the bucket's live keys.
func (v *View) reload(ctx context.Context, kv jetstream.KeyValue) bool {
	ms, err := ReadMembers(ctx, kv)
	if err != nil {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	changed := len(ms) != len(v.members)
	next := make(map[string]Member, len(ms))
	for _, m := range ms {
		next[m.ID] = m
		if old, ok := v.members[m.ID]; !ok || old.Addr != m.Addr || old.Factor != m.Factor || !old.Since.Equal(m.Since) {
			changed = true
		}
	}
	v.members = next
	return changed
}

// ReadMembers reads the live members once, ordered by id.
func ReadMembers(ctx context.Context, kv jetstream.KeyValue) ([]Member, error) {
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list seeders: %w", err)
	}
	var ids []string
	for k := range keys.Keys() {
		ids = append(ids, k)
	}
	var out []Member
	for _, id := range ids {
		e, err := kv.Get(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // expired since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("read seeder %s: %w", id, err)
		}
		var m Member
		if json.Unmarshal(e.Value(), &m) == nil && m.ID == id {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func (v *View) notify() {
	select {
	case v.changes <- struct{}{}:
	default:
	}
}

// Members returns the live members ordered by id.
func (v *View) Members() []Member {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return slices.SortedFunc(maps.Values(v.members), func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
}

// Changes receives a value after membership changes (for one reader;
// changes coalesce).
func (v *View) Changes() <-chan struct{} { return v.changes }

// Addrs is the public addresses of community's owners, for x.pe.
func (v *View) Addrs(community string) []string {
	ms := v.Members()
	var out []string
	for _, m := range Owners(community, ms, FactorOf(ms)) {
		if m.Addr != "" {
			out = append(out, m.Addr)
		}
	}
	return out
}

// Serving is the record of which seeder serves which torrent, in
// bus.BucketServing. A record names the incarnation of the seeder that
// wrote it (its Member.Since): a seeder killed and restarted is a member
// again before it serves anything, and the records of its previous life
// must not count as copies.
type Serving struct{ KV jetstream.KeyValue }

func servingKey(community, member string) string { return community + "." + member }

func incarnation(m Member) string { return strconv.FormatInt(m.Since.UnixNano(), 36) }

// Set records that member serves infohash for community.
func (s Serving) Set(ctx context.Context, community string, member Member, infohash string) error {
	if cur, _ := s.Get(ctx, community, member); cur == infohash {
		return nil
	}
	_, err := s.KV.PutString(ctx, servingKey(community, member.ID), infohash+"/"+incarnation(member))
	return err
}

// Clear removes member's record for community.
func (s Serving) Clear(ctx context.Context, community, member string) error {
	err := s.KV.Delete(ctx, servingKey(community, member))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

// Get returns the infohash member (in this incarnation) serves for
// community, or "".
func (s Serving) Get(ctx context.Context, community string, member Member) (string, error) {
	e, err := s.KV.Get(ctx, servingKey(community, member.ID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	ih, inc, _ := strings.Cut(string(e.Value()), "/")
	if inc != incarnation(member) {
		return "", nil
	}
	return ih, nil
}

// Seeders returns, of members, the ids serving community and what each
// serves.
func (s Serving) Seeders(ctx context.Context, community string, members []Member) (map[string]string, error) {
	out := map[string]string{}
	for _, m := range members {
		ih, err := s.Get(ctx, community, m)
		if err != nil {
			return nil, err
		}
		if ih != "" {
			out[m.ID] = ih
		}
	}
	return out, nil
}

// ClearStale deletes member's records written by its earlier
// incarnations (a seeder killed before it could clear them), and returns
// how many.
func (s Serving) ClearStale(ctx context.Context, member Member) (int, error) {
	keys, err := s.KV.ListKeysFiltered(ctx, "*."+member.ID)
	if err != nil {
		return 0, err
	}
	var stale []string
	for k := range keys.Keys() {
		stale = append(stale, k)
	}
	n := 0
	for _, k := range stale {
		e, err := s.KV.Get(ctx, k)
		if err != nil {
			continue
		}
		if _, inc, _ := strings.Cut(string(e.Value()), "/"); inc == incarnation(member) {
			continue
		}
		if err := s.KV.Delete(ctx, k, jetstream.LastRevision(e.Revision())); err == nil {
			n++
		}
	}
	return n, nil
}
