// Package tracker is the fleet's BitTorrent tracker: HTTP announces (BEP 3,
// compact peers per BEP 23, IPv6 peers per BEP 7), scrapes (BEP 48) and UDP
// announces (BEP 15), answered from a swarm kept in a NATS KV bucket
// (bus.BucketTrackerPeers), so every replica knows every peer that announced
// to any of them, and the fleet's seeders can register themselves without
// announcing.
//
// A peer is one key, "<infohash hex>.<id>": an announcing peer's id is its
// address (addrID), a registered seeder's the id it chose. The bucket's TTL
// (bus.TrackerPeersTTL, three announce intervals) forgets peers that stop
// announcing. Each tracker process answers from its own copy of the bucket
// (view), kept by one watch, and only for torrents a fleet seeder is
// registered for (SeederIDPrefix).
package tracker

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/bus"
)

// Peer is one member of a torrent's swarm.
type Peer struct {
	// ID names the peer in the registry: the hex of its BitTorrent peer id
	// when it announced, or whatever a registering service chose (a seeder's
	// id).
	ID     string         `json:"-"`
	Addr   netip.AddrPort `json:"addr"`
	Seeder bool           `json:"seeder"`
	// At is when the peer last announced or registered.
	At time.Time `json:"at"`
}

// Registry is the swarm of every torrent, shared by all replicas.
type Registry struct {
	nc *nats.Conn
	kv jetstream.KeyValue
	// directSubject is the stream's direct-get API subject, which answers
	// "the last message of every key under a prefix" in one request.
	directSubject string
	prefix        string // "$KV.<bucket>."
	now           func() time.Time
}

// NewRegistry returns the registry on b's tracker bucket.
func NewRegistry(b *bus.Bus) *Registry {
	return newRegistry(b.NC, b.TrackerPeers)
}

func newRegistry(nc *nats.Conn, kv jetstream.KeyValue) *Registry {
	return &Registry{nc: nc, kv: kv, directSubject: "$JS.API.DIRECT.GET.KV_" + kv.Bucket(),
		prefix: "$KV." + kv.Bucket() + ".", now: time.Now}
}

// SeederIDPrefix starts the registry id of every fleet seeder. A torrent is
// served only while a registration under such an id is live; announced
// peers' ids are hex addresses (addrID), which never start with it.
const SeederIDPrefix = "seeder-"

// ErrBadID is returned for a peer id that cannot be one token of a KV key.
var ErrBadID = errors.New("tracker: peer id must be 1-64 characters of A-Z a-z 0-9 _ - =")

// validID keeps ids to one subject token: a dot would put the key outside
// the "<infohash>.*" filter Peers reads.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range []byte(id) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '=') {
			return false
		}
	}
	return true
}

func peerKey(ih [20]byte, id string) string { return hex.EncodeToString(ih[:]) + "." + id }

// addrID is an announced peer's registry id: its address, so a client
// restarted with a new peer id is the same peer, and only a request from
// that address can replace or remove it. "7f000001-6881" for 127.0.0.1:6881.
func addrID(ap netip.AddrPort) string {
	return hex.EncodeToString(ap.Addr().Unmap().AsSlice()) + "-" + strconv.Itoa(int(ap.Port()))
}

// encodePeer is a registration's stored value.
func encodePeer(addr netip.AddrPort, seeder bool, at time.Time) ([]byte, error) {
	return json.Marshal(Peer{Addr: netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port()), Seeder: seeder, At: at.UTC()})
}

// Register records (or refreshes) id as a peer of infohash reachable at
// addr. A registration lasts bus.TrackerPeersTTL: callers repeat it at
// least once an announce interval (DefaultInterval).
func (r *Registry) Register(ctx context.Context, infohash [20]byte, id string, addr netip.AddrPort, seeder bool) error {
	_, _, err := r.put(ctx, infohash, id, addr, seeder)
	return err
}

// put writes a registration and returns its value and revision, so the
// writer's view can apply it before the watch brings it back.
func (r *Registry) put(ctx context.Context, infohash [20]byte, id string, addr netip.AddrPort, seeder bool) ([]byte, uint64, error) {
	if !validID(id) {
		return nil, 0, fmt.Errorf("%w: %q", ErrBadID, id)
	}
	if !addr.IsValid() || addr.Port() == 0 {
		return nil, 0, fmt.Errorf("tracker: register %s: invalid address %v", id, addr)
	}
	v, err := encodePeer(addr, seeder, r.now())
	if err != nil {
		return nil, 0, err
	}
	rev, err := r.kv.Put(ctx, peerKey(infohash, id), v)
	if err != nil {
		return nil, 0, fmt.Errorf("tracker: register %s for %x: %w", id, infohash, err)
	}
	return v, rev, nil
}

// Remove forgets id as a peer of infohash (a "stopped" announce).
func (r *Registry) Remove(ctx context.Context, infohash [20]byte, id string) error {
	if !validID(id) {
		return fmt.Errorf("%w: %q", ErrBadID, id)
	}
	if err := r.kv.Delete(ctx, peerKey(infohash, id)); err != nil {
		return fmt.Errorf("tracker: remove %s from %x: %w", id, infohash, err)
	}
	return nil
}

// errDirectUnavailable sends Peers to its watcher fallback.
var errDirectUnavailable = errors.New("direct get unavailable")

// Peers returns the live peers of infohash as stored in the bucket, one per
// address (the freshest registration wins: a seeder that also announces is
// one peer), oldest registration first. An unknown torrent has no peers,
// not an error.
//
// Its cost grows with the swarm, so the tracker does not call it: it
// answers from its view. It is for operators and tests, which want what
// the bucket holds. The read is one direct-get request (the last message of
// each key under the infohash, NATS 2.11+), with a KV watcher for swarms
// over the server's 1024-message limit on one direct get, and for servers
// without it.
func (r *Registry) Peers(ctx context.Context, infohash [20]byte) ([]Peer, error) {
	peers, err := r.peersDirect(ctx, infohash)
	if errors.Is(err, errDirectUnavailable) {
		peers, err = r.peersWatch(ctx, infohash)
	}
	if err != nil {
		return nil, fmt.Errorf("tracker: peers of %x: %w", infohash, err)
	}
	return dedupe(peers), nil
}

func (r *Registry) peersDirect(ctx context.Context, infohash [20]byte) ([]Peer, error) {
	req, err := json.Marshal(struct {
		MultiLast []string `json:"multi_last"`
	}{[]string{r.prefix + hex.EncodeToString(infohash[:]) + ".*"}})
	if err != nil {
		return nil, err
	}
	inbox := r.nc.NewInbox()
	sub, err := r.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := r.nc.PublishRequest(r.directSubject, inbox, req); err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	var peers []Peer
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, err
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "204": // end of batch
			return peers, nil
		case "404": // no key under the prefix: a torrent nobody announced yet
			return nil, nil
		case "408", "413":
			// 408: a server that does not know multi_last; 413: over its
			// per-request limit.
			return nil, fmt.Errorf("%w: %s %s", errDirectUnavailable, status, m.Header.Get("Description"))
		default:
			return nil, fmt.Errorf("direct get: status %s %s", status, m.Header.Get("Description"))
		}
		if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			continue
		}
		if p, ok := r.decode(strings.TrimPrefix(m.Header.Get("Nats-Subject"), r.prefix), m.Data); ok {
			peers = append(peers, p)
		}
	}
}

// peersWatch reads the swarm through a KV watcher on the infohash's keys.
func (r *Registry) peersWatch(ctx context.Context, infohash [20]byte) ([]Peer, error) {
	w, err := r.kv.WatchFiltered(ctx, []string{hex.EncodeToString(infohash[:]) + ".*"}, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	var peers []Peer
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("kv watcher closed")
			}
			if e == nil { // initial values done
				return peers, nil
			}
			if p, ok := r.decode(e.Key(), e.Value()); ok {
				peers = append(peers, p)
			}
		}
	}
}

// decode reads one registration; one it cannot read (written by a later
// version, say) is left out rather than failing the whole swarm.
func (r *Registry) decode(key string, v []byte) (Peer, bool) {
	_, id, ok := strings.Cut(key, ".")
	if !ok {
		return Peer{}, false
	}
	var p Peer
	if json.Unmarshal(v, &p) != nil || !p.Addr.IsValid() {
		return Peer{}, false
	}
	p.ID = id
	return p, true
}

// dedupe keeps the freshest registration of each address, oldest first.
func dedupe(peers []Peer) []Peer {
	byAt := func(a, b Peer) int { return cmp.Or(a.At.Compare(b.At), strings.Compare(a.ID, b.ID)) }
	slices.SortFunc(peers, byAt)
	seen := make(map[netip.AddrPort]int, len(peers))
	out := peers[:0]
	for _, p := range peers {
		if i, ok := seen[p.Addr]; ok {
			out[i] = p // p is fresher
			continue
		}
		seen[p.Addr] = len(out)
		out = append(out, p)
	}
	slices.SortFunc(out, byAt)
	return out
}
