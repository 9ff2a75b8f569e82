package tracker

import (
	"container/list"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// view is one tracker process's copy of the peer bucket: each key's last
// message (a registration or a deletion marker) until the bucket drops it,
// grouped by torrent, with what an announce or a scrape reads kept up to
// date as messages arrive, so neither costs more for a larger swarm. One KV
// watch feeds it; the process's own writes are applied as soon as the
// bucket acknowledges them, so a client sees its own announce at once.
type view struct {
	// ttl is the bucket's: a key's last message is dropped ttl after it was
	// stored. The server writes no marker when it drops one, so the view
	// expires entries itself. 0 keeps them.
	ttl time.Duration
	now func() time.Time

	mu     sync.Mutex
	swarms map[[20]byte]*swarm
	// expiry holds every entry, least recently stored first: the bucket
	// stores messages in time order and a rewrite moves its entry to the
	// back, so the expired entries are at the front (give or take the
	// skew between this process's clock, for its own writes, and the
	// server's).
	expiry list.List
	// announced counts announced peers' entries in every swarm (live or
	// markers: both take bytes in the bucket); pending counts new ones
	// being written. Together they are held to Config.MaxPeers.
	announced, pending int
	// served counts the swarms with a fleet seeder.
	served int

	ready     chan struct{} // closed once the watch delivered the initial values
	readyOnce sync.Once
}

// swarm is one torrent's peers.
type swarm struct {
	ih      [20]byte
	entries map[string]*entry // by id
	addrs   map[netip.AddrPort]*slot
	// peers lists each address once, by [seeder][IPv6], for sampling.
	peers [2][2][]*slot
	// fleet counts live fleet seeder registrations: the torrent is served
	// while there is one.
	fleet int
	// announced and pending are the swarm's share of the view's, held to
	// Config.MaxSwarmPeers.
	announced, pending int
}

// entry is one key's last message.
type entry struct {
	sw     *swarm
	id     string
	rev    uint64
	stored time.Time
	fleet  bool // a fleet seeder's registration (SeederIDPrefix)
	live   bool // false: a deletion marker, kept for the bytes it takes
	addr   netip.AddrPort
	seeder bool
	elem   *list.Element
	slot   *slot // while live
}

// slot is one address of a swarm and the live entries listing it: its
// announced peer and any fleet registration naming the same address.
type slot struct {
	addr    netip.AddrPort
	entries []*entry
	seeder  bool // the freshest entry's
	idx     int  // in its peers list
}

func newView() *view {
	return &view{swarms: map[[20]byte]*swarm{}, now: time.Now, ready: make(chan struct{})}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (sw *swarm) list(sl *slot) *[]*slot {
	return &sw.peers[b2i(sl.seeder)][b2i(!sl.addr.Addr().Is4())]
}

func (sw *swarm) listSlot(sl *slot) {
	l := sw.list(sl)
	sl.idx = len(*l)
	*l = append(*l, sl)
}

// unlistSlot swap-removes sl from its list.
func (sw *swarm) unlistSlot(sl *slot) {
	l := sw.list(sl)
	last := (*l)[len(*l)-1]
	(*l)[sl.idx], last.idx = last, sl.idx
	(*l)[len(*l)-1] = nil
	*l = (*l)[:len(*l)-1]
}

// link lists live e under its address.
func (sw *swarm) link(e *entry) {
	sl := sw.addrs[e.addr]
	if sl == nil {
		sl = &slot{addr: e.addr, seeder: e.seeder}
		sw.addrs[e.addr] = sl
		sw.listSlot(sl)
	}
	sl.entries = append(sl.entries, e)
	e.slot = sl
	sw.refresh(sl)
}

// unlink takes e off its address.
func (sw *swarm) unlink(e *entry) {
	sl := e.slot
	e.slot = nil
	for i, o := range sl.entries {
		if o == e {
			sl.entries = append(sl.entries[:i], sl.entries[i+1:]...)
			break
		}
	}
	if len(sl.entries) == 0 {
		sw.unlistSlot(sl)
		delete(sw.addrs, sl.addr)
		return
	}
	sw.refresh(sl)
}

// refresh lists sl as its freshest entry says. An address has one entry
// per writer (its announce, a fleet seeder's registration), so this loop
// is short whatever clients send.
func (sw *swarm) refresh(sl *slot) {
	fresh := sl.entries[0]
	for _, e := range sl.entries[1:] {
		if e.stored.After(fresh.stored) || e.stored.Equal(fresh.stored) && e.rev > fresh.rev {
			fresh = e
		}
	}
	if fresh.seeder != sl.seeder {
		sw.unlistSlot(sl)
		sl.seeder = fresh.seeder
		sw.listSlot(sl)
	}
}

// counts is the swarm's seeders and leechers, one per address.
func (sw *swarm) counts() (complete, incomplete int) {
	return len(sw.peers[1][0]) + len(sw.peers[1][1]), len(sw.peers[0][0]) + len(sw.peers[0][1])
}

// pick chooses up to want peers for the peer at self, never itself: a
// leecher gets seeders first (they have every piece), a seeder leechers
// first (two seeders have nothing to trade) but seeders too, since "left=0"
// does not always mean a seeder: aria2c sends it while it fetches a
// magnet's metadata, and then needs the seeders. family 4 or 6 keeps that
// family only. Its cost is O(want), whatever the swarm's size.
func (sw *swarm) pick(self netip.AddrPort, seeder bool, family, want int) []netip.AddrPort {
	v4, v6 := family != 6, family != 4
	lists := func(seeders bool) (a, b []*slot) {
		s := sw.peers[b2i(seeders)]
		if v4 {
			a = s[0]
		}
		if v6 {
			b = s[1]
		}
		return a, b
	}
	skip := sw.addrs[self]
	out := make([]netip.AddrPort, 0, min(want, 64))
	a, b := lists(!seeder)
	out = sample(out, a, b, skip, want)
	a, b = lists(seeder)
	return sample(out, a, b, skip, want-len(out))
}

// sample appends up to want addresses of a then b (one list read as their
// concatenation) leaving out skip, in random order: all of them when there
// are no more than want, else a stratified sample (as opentracker's
// return_peers_selection): the lists cut into want runs, one peer at a
// random place in each, from a random starting point. O(want).
func sample(out []netip.AddrPort, a, b []*slot, skip *slot, want int) []netip.AddrPort {
	skipAt := -1
	switch {
	case skip == nil:
	case skip.idx < len(a) && a[skip.idx] == skip:
		skipAt = skip.idx
	case skip.idx < len(b) && b[skip.idx] == skip:
		skipAt = len(a) + skip.idx
	}
	n := len(a) + len(b)
	if skipAt >= 0 {
		n--
	}
	at := func(i int) netip.AddrPort {
		if skipAt >= 0 && i >= skipAt {
			i++
		}
		if i < len(a) {
			return a[i].addr
		}
		return b[i-len(a)].addr
	}
	if want <= 0 || n == 0 {
		return out
	}
	start := len(out)
	if want >= n {
		for i := range n {
			out = append(out, at(i))
		}
	} else {
		off := rand.IntN(n)
		for j := range want {
			lo, hi := j*n/want, (j+1)*n/want
			out = append(out, at((lo+rand.IntN(hi-lo)+off)%n))
		}
	}
	s := out[start:]
	rand.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	return out
}

// allowed is the swarm of ih if a fleet seeder is registered for it.
func (v *view) allowed(ih [20]byte) *swarm {
	if sw := v.swarms[ih]; sw != nil && sw.fleet > 0 {
		return sw
	}
	return nil
}

// apply records the message of revision rev under key id of torrent ih,
// stored at stored: a registration (value), or a deletion marker (del).
// A revision the view has already applied (the process's own write, come
// back through the watch) changes nothing.
func (v *view) apply(ih [20]byte, id string, rev uint64, stored time.Time, del bool, value []byte) {
	sw := v.swarms[ih]
	if sw == nil {
		sw = &swarm{ih: ih, entries: map[string]*entry{}, addrs: map[netip.AddrPort]*slot{}}
		v.swarms[ih] = sw
	}
	e := sw.entries[id]
	switch {
	case e == nil:
		e = &entry{sw: sw, id: id, fleet: strings.HasPrefix(id, SeederIDPrefix)}
		sw.entries[id] = e
		if !e.fleet {
			sw.announced++
			v.announced++
		}
		e.elem = v.expiry.PushBack(e)
	case rev <= e.rev:
		return
	default:
		v.expiry.MoveToBack(e.elem)
	}
	v.kill(e)
	e.rev, e.stored = rev, stored
	if del {
		return
	}
	var p Peer
	if json.Unmarshal(value, &p) != nil || !p.Addr.IsValid() {
		return // unreadable (a later version's?): a marker here
	}
	e.addr, e.seeder, e.live = netip.AddrPortFrom(p.Addr.Addr().Unmap(), p.Addr.Port()), p.Seeder, true
	sw.link(e)
	if e.fleet {
		if sw.fleet++; sw.fleet == 1 {
			v.served++
		}
	}
}

// kill makes e a marker: the process deleted its key, or is replacing it.
func (v *view) kill(e *entry) {
	if !e.live {
		return
	}
	e.sw.unlink(e)
	e.live = false
	if e.fleet {
		if e.sw.fleet--; e.sw.fleet == 0 {
			v.served--
		}
	}
}

// markDeleted applies the process's own deletion of ih's id; the watch
// brings the marker's revision later.
func (v *view) markDeleted(ih [20]byte, id string) {
	if sw := v.swarms[ih]; sw != nil {
		if e := sw.entries[id]; e != nil {
			v.kill(e)
		}
	}
}

// remove drops e: the bucket no longer holds its key.
func (v *view) remove(e *entry) {
	v.kill(e)
	sw := e.sw
	delete(sw.entries, e.id)
	v.expiry.Remove(e.elem)
	if !e.fleet {
		sw.announced--
		v.announced--
	}
	v.dropIfEmpty(sw)
}

// dropIfEmpty forgets sw once it has no entries and no write under way.
func (v *view) dropIfEmpty(sw *swarm) {
	if len(sw.entries) == 0 && sw.pending == 0 && v.swarms[sw.ih] == sw {
		delete(v.swarms, sw.ih)
	}
}

// expire drops up to limit entries stored ttl or more before now (all of
// them when limit < 0) and returns how many it dropped. Each entry is
// dropped once, so the work is paid once per message the bucket stored.
func (v *view) expire(now time.Time, limit int) int {
	if v.ttl <= 0 {
		return 0
	}
	n := 0
	for ; limit < 0 || n < limit; n++ {
		f := v.expiry.Front()
		if f == nil || now.Sub(f.Value.(*entry).stored) < v.ttl {
			break
		}
		v.remove(f.Value.(*entry))
	}
	return n
}

// wait returns once the view holds the bucket's initial values.
func (v *view) wait(ctx context.Context) error {
	select {
	case <-v.ready:
		return nil
	default:
	}
	select {
	case <-v.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("tracker: peer list not loaded yet: %w", ctx.Err())
	}
}

// parseKey splits a bucket key, "<infohash hex>.<id>".
func parseKey(key string) (ih [20]byte, id string, ok bool) {
	h, id, ok := strings.Cut(key, ".")
	if !ok || len(h) != 40 || !validID(id) {
		return ih, "", false
	}
	if _, err := hex.Decode(ih[:], []byte(h)); err != nil {
		return ih, "", false
	}
	return ih, id, true
}

// sweepEvery is how often the watch loop drops expired entries, and
// sweepBatch how many it drops per hold of the lock.
const (
	sweepEvery = time.Second
	sweepBatch = 1024
)

// run keeps the view from one watch on kv until ctx ends. It returns an
// error if the watch cannot start or ends by itself.
func (v *view) run(ctx context.Context, kv jetstream.KeyValue) error {
	st, err := kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("tracker: bucket %s: %w", kv.Bucket(), err)
	}
	v.mu.Lock()
	v.ttl = st.TTL()
	v.mu.Unlock()
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("tracker: watch %s: %w", kv.Bucket(), err)
	}
	defer w.Stop()
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("tracker: the watch of " + kv.Bucket() + " ended")
			}
			if e == nil {
				v.readyOnce.Do(func() { close(v.ready) })
				continue
			}
			ih, id, ok := parseKey(e.Key())
			if !ok {
				continue
			}
			del := e.Operation() != jetstream.KeyValuePut
			v.mu.Lock()
			v.apply(ih, id, e.Revision(), e.Created(), del, e.Value())
			v.mu.Unlock()
		case <-tick.C:
			for {
				v.mu.Lock()
				n := v.expire(v.now(), sweepBatch)
				v.mu.Unlock()
				if n < sweepBatch {
					break
				}
			}
		}
	}
}
