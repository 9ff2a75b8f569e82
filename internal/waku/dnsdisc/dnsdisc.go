// Package dnsdisc is EIP-1459 DNS discovery of Waku nodes: the status.prod
// fleet publishes its boot nodes as an enrtree:// URL.
//
// Tree syncing and signature checking are go-ethereum's p2p/dnsdisc; what is
// ours is the conversion of each ENR into libp2p terms, following
// 31/WAKU2-ENR (vacp2p/rfc-index docs/messaging/standards/core/31/enr.md) and
// the two reference implementations, which agree on every field used here:
//
//   - nwaku waku/waku_enr/{capabilities,multiaddr,sharding}.nim
//   - go-waku waku/v2/protocol/enr/{enr,shards}.go and waku/v2/protocol/shard.go
package dnsdisc

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/ethereum/go-ethereum/log"
	gethdnsdisc "github.com/ethereum/go-ethereum/p2p/dnsdisc"
	"github.com/ethereum/go-ethereum/p2p/enode"
	"github.com/ethereum/go-ethereum/p2p/enr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// ENR keys defined by 31/WAKU2-ENR and RELAY-SHARDING.
const (
	enrKeyWaku2      = "waku2"      // capability bit field, 1 byte
	enrKeyMultiaddrs = "multiaddrs" // u16-BE length-prefixed binary multiaddrs
	enrKeyShardList  = "rs"         // cluster u16-BE, count u8, count × shard u16-BE
	enrKeyShardBits  = "rsv"        // cluster u16-BE, 128-byte bit vector
	enrKeySecp256k1  = "secp256k1"  // EIP-778 compressed public key, 33 bytes
)

// Bits of the waku2 field, bit 0 = least significant (31/WAKU2-ENR table;
// nwaku capabilities.nim: Relay=0 Store=1 Filter=2 Lightpush=3 Sync=4; go-waku
// NewWakuEnrBitfield sets the same bits).
const (
	waku2Relay     = 1 << 0
	waku2Store     = 1 << 1
	waku2Filter    = 1 << 2
	waku2LightPush = 1 << 3
	waku2Sync      = 1 << 4
)

const (
	// shardBitVectorLen is the rsv value length: 2-byte cluster + 1024 bits.
	shardBitVectorLen = 2 + 128
	// dnsRateLimit: DNS lookups per second while syncing a tree. dnsdisc's
	// default (3/s after a burst of 10) makes a one-shot sync of a tree with
	// a few dozen entries take seconds; 10/s is still gentle on resolvers.
	dnsRateLimit = 10
	// maxShard: static sharding has 1024 shards per cluster
	// (RELAY-SHARDING).
	maxShard = 1023
)

var (
	// ErrNoAddress: the ENR yields no address to dial (no ip+tcp, ip6+tcp6
	// and no decodable multiaddrs entry).
	ErrNoAddress = errors.New("dnsdisc: ENR has no usable address")
	// ErrNoNodes: DNS discovery produced no usable node (an empty tree, or
	// every record in it was rejected; the reasons are wrapped alongside).
	ErrNoNodes = errors.New("dnsdisc: DNS discovery found no usable node")
)

// Resolver looks up DNS TXT records. *net.Resolver satisfies it; tests point
// a net.Resolver at their own DNS server instead of mocking lookups.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// Discovered is a Waku node found in an ENR, in libp2p terms.
type Discovered struct {
	// ID is derived from the record's secp256k1 key, as nwaku and go-waku do
	// (31/WAKU2-ENR: "the node's peer id SHOULD be deduced from the secp256k1
	// value").
	ID peer.ID
	// Addrs are dialable multiaddrs ending in /p2p/<ID>: first ip+tcp, then
	// ip6+tcp6, then the multiaddrs entry in record order (duplicates
	// dropped). A multiaddrs entry that carries a /p2p component is a circuit
	// relay address (31/WAKU2-ENR) and gets /p2p-circuit/p2p/<ID>.
	Addrs []ma.Multiaddr
	// ClusterID is nil when the record has neither rs nor rsv.
	ClusterID *uint16
	// Shards are the static-sharding shard indices (ascending, no
	// duplicates) the node advertises in ClusterID.
	Shards []uint16
	// Capabilities from the waku2 bit field (all false when it is absent).
	Relay, Store, Filter, LightPush, Sync bool
	// ENR is the record in its "enr:..." text form.
	ENR string
}

// AddrInfo returns the node as a peer.AddrInfo (addresses without the
// trailing /p2p/<ID>), the form libp2p's host.Connect wants.
func (d Discovered) AddrInfo() peer.AddrInfo {
	info := peer.AddrInfo{ID: d.ID}
	for _, a := range d.Addrs {
		transport, id := peer.SplitAddr(a)
		if id == d.ID && transport != nil {
			info.Addrs = append(info.Addrs, transport)
		}
	}
	return info
}

// HasShard reports whether the node advertises shard in cluster.
func (d Discovered) HasShard(cluster, shard uint16) bool {
	return d.ClusterID != nil && *d.ClusterID == cluster && slices.Contains(d.Shards, shard)
}

// DiscoverENRTree downloads the whole EIP-1459 tree at url
// ("enrtree://<base32 public key>@<domain>"), checks the root signature
// against the key in the URL and every entry against its hash (go-ethereum
// p2p/dnsdisc Client.SyncTree), and returns each node converted by
// ParseWakuENR, sorted by peer id. r nil means net.DefaultResolver.
//
// Any failure of the tree itself (unreachable domain, bad root signature,
// wrong key in the URL, hash mismatch, ctx done) is an error: a tree that
// does not verify is not partially trusted. Individual records that
// ParseWakuENR rejects (no usable address, malformed Waku field) are skipped
// with a warning on slog.Default(), so one broken entry does not hide the
// rest of the fleet; if nothing usable is left the error wraps ErrNoNodes
// and the per-record reasons.
//
// Links to other trees (enrtree:// entries in the link subtree) are not
// followed, as go-waku's dnsdisc.RetrieveNodes does not follow them either.
func DiscoverENRTree(ctx context.Context, url string, r Resolver) ([]Discovered, error) {
	if r == nil {
		r = net.DefaultResolver
	}
	client := gethdnsdisc.NewClient(gethdnsdisc.Config{
		// SyncTree does not take a context (it uses context.Background()
		// per lookup), so ctx reaches the lookups through the resolver.
		Resolver: ctxResolver{ctx: ctx, r: r},
		// Waku ENRs use the EIP-778 "v4" identity scheme (secp256k1 key,
		// keccak256 signature), which is what enode.ValidSchemes accepts.
		// dnsdisc does not otherwise filter nodes: a record with no eth TCP
		// endpoint (e.g. only a multiaddrs wss address) is returned as is.
		ValidSchemes: enode.ValidSchemes,
		RateLimit:    dnsRateLimit,
		Logger:       log.NewLogger(log.DiscardHandler()),
	})
	tree, err := client.SyncTree(url)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("dnsdisc: DNS discovery %s: %w", url, ctxErr)
		}
		return nil, fmt.Errorf("dnsdisc: DNS discovery %s: %w", url, err)
	}

	nodes := tree.Nodes()
	out := make([]Discovered, 0, len(nodes))
	var rejected []error
	for _, n := range nodes {
		d, err := ParseWakuENR(n)
		if err != nil {
			err = fmt.Errorf("node %s: %w", n.String(), err)
			slog.Default().Warn("dnsdisc: DNS discovery skips ENR", "tree", url, "err", err)
			rejected = append(rejected, err)
			continue
		}
		out = append(out, d)
	}
	switch {
	case len(nodes) == 0:
		return nil, fmt.Errorf("%w in %s: the tree is empty", ErrNoNodes, url)
	case len(out) == 0:
		return nil, fmt.Errorf("%w in %s (%d records): %w", ErrNoNodes, url, len(nodes), errors.Join(rejected...))
	}
	slices.SortFunc(out, func(a, b Discovered) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// ctxResolver makes every lookup end when the caller's ctx ends, on top of
// dnsdisc's own per-lookup timeout. The caller's deadline is passed down,
// and the lookup runs in its own goroutine because Go's resolver only
// notices a deadline, not a cancellation, while waiting for a UDP answer;
// an abandoned lookup still ends at dnsdisc's timeout.
type ctxResolver struct {
	ctx context.Context
	r   Resolver
}

func (c ctxResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	if err := c.ctx.Err(); err != nil {
		return nil, err
	}
	var cancel context.CancelFunc
	if d, ok := c.ctx.Deadline(); ok {
		ctx, cancel = context.WithDeadline(ctx, d)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	stop := context.AfterFunc(c.ctx, cancel)
	type result struct {
		txt []string
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer cancel()
		defer stop()
		txt, err := c.r.LookupTXT(ctx, name)
		done <- result{txt, err}
	}()
	select {
	case res := <-done:
		if res.err != nil && c.ctx.Err() != nil {
			return nil, c.ctx.Err()
		}
		return res.txt, res.err
	case <-c.ctx.Done():
		return nil, c.ctx.Err()
	}
}

// ParseWakuENRString parses a record in text form ("enr:<base64url RLP>"),
// verifies its signature (enode.ValidSchemes) and converts it with
// ParseWakuENR.
func ParseWakuENRString(s string) (Discovered, error) {
	if !strings.HasPrefix(s, "enr:") {
		return Discovered{}, errors.New(`dnsdisc: ENR text must start with "enr:"`)
	}
	n, err := enode.Parse(enode.ValidSchemes, s)
	if err != nil {
		return Discovered{}, fmt.Errorf("dnsdisc: parse ENR: %w", err)
	}
	return ParseWakuENR(n)
}

// ParseWakuENR converts a Waku node record. The peer id comes from the
// record's compressed secp256k1 key; addresses from ip/tcp, ip6/tcp6 (tcp6
// defaults to tcp, EIP-778) and multiaddrs; the capabilities from waku2; the
// cluster and shards from rs, or from rsv when rs is absent (nwaku and
// go-waku both prefer rs).
//
// Errors: ErrNoAddress when nothing is dialable; a malformed multiaddrs
// framing, waku2 longer than one byte, or malformed rs/rsv is an error, since
// the record is signed and a broken field means a broken publisher. A single
// multiaddr in the multiaddrs entry that does not decode (an unknown
// protocol code, say) is skipped, as nwaku does, so newer transports do not
// make a node unusable.
func ParseWakuENR(n *enode.Node) (Discovered, error) {
	if n == nil {
		return Discovered{}, errors.New("dnsdisc: nil ENR")
	}
	rec := n.Record()
	d := Discovered{ENR: n.String()}

	var key []byte
	if err := rec.Load(enr.WithEntry(enrKeySecp256k1, &key)); err != nil {
		return Discovered{}, fmt.Errorf("dnsdisc: ENR %s key: %w", enrKeySecp256k1, err)
	}
	pub, err := crypto.UnmarshalSecp256k1PublicKey(key)
	if err != nil {
		return Discovered{}, fmt.Errorf("dnsdisc: ENR %s key: %w", enrKeySecp256k1, err)
	}
	if d.ID, err = peer.IDFromPublicKey(pub); err != nil {
		return Discovered{}, fmt.Errorf("dnsdisc: ENR peer id: %w", err)
	}

	if d.Addrs, err = enrAddrs(rec, d.ID); err != nil {
		return Discovered{}, err
	}
	if len(d.Addrs) == 0 {
		return Discovered{}, ErrNoAddress
	}

	var flags []byte
	if err := rec.Load(enr.WithEntry(enrKeyWaku2, &flags)); err != nil && !enr.IsNotFound(err) {
		return Discovered{}, fmt.Errorf("dnsdisc: ENR %s: %w", enrKeyWaku2, err)
	}
	switch len(flags) {
	case 0: // absent, or an RLP-encoded integer 0
	case 1:
		f := flags[0]
		d.Relay, d.Store, d.Filter = f&waku2Relay != 0, f&waku2Store != 0, f&waku2Filter != 0
		d.LightPush, d.Sync = f&waku2LightPush != 0, f&waku2Sync != 0
	default:
		return Discovered{}, fmt.Errorf("dnsdisc: ENR %s: %d bytes, want 1", enrKeyWaku2, len(flags))
	}

	if err := loadShards(rec, &d); err != nil {
		return Discovered{}, err
	}
	return d, nil
}

// enrAddrs collects the record's addresses, each ending in /p2p/<id>.
func enrAddrs(rec *enr.Record, id peer.ID) ([]ma.Multiaddr, error) {
	self, err := ma.NewComponent("p2p", id.String())
	if err != nil {
		return nil, err
	}
	var out []ma.Multiaddr
	add := func(a ma.Multiaddr) {
		if !ma.Contains(out, a) {
			out = append(out, a)
		}
	}

	var tcp enr.TCP
	tcpErr := rec.Load(&tcp)
	if tcpErr != nil && !enr.IsNotFound(tcpErr) {
		return nil, fmt.Errorf("dnsdisc: ENR tcp: %w", tcpErr)
	}
	var tcp6 enr.TCP6
	if err := rec.Load(&tcp6); err != nil {
		if !enr.IsNotFound(err) {
			return nil, fmt.Errorf("dnsdisc: ENR tcp6: %w", err)
		}
		tcp6 = enr.TCP6(tcp) // EIP-778: tcp6 omitted means same as tcp
	}
	var ip4 enr.IPv4Addr
	if err := rec.Load(&ip4); err != nil && !enr.IsNotFound(err) {
		return nil, fmt.Errorf("dnsdisc: ENR ip: %w", err)
	}
	if ip := netip.Addr(ip4); usableIP(ip) && tcp != 0 {
		add(ma.Join(enrTCPAddr(ip, uint16(tcp)), self))
	}
	var ip6 enr.IPv6Addr
	if err := rec.Load(&ip6); err != nil && !enr.IsNotFound(err) {
		return nil, fmt.Errorf("dnsdisc: ENR ip6: %w", err)
	}
	if ip := netip.Addr(ip6); usableIP(ip) && tcp6 != 0 {
		add(ma.Join(enrTCPAddr(ip, uint16(tcp6)), self))
	}

	var raw []byte
	if err := rec.Load(enr.WithEntry(enrKeyMultiaddrs, &raw)); err != nil {
		if enr.IsNotFound(err) {
			return out, nil
		}
		return nil, fmt.Errorf("dnsdisc: ENR %s: %w", enrKeyMultiaddrs, err)
	}
	addrs, err := decodeMultiaddrs(raw)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		add(withPeerID(a, id, self))
	}
	return out, nil
}

func usableIP(ip netip.Addr) bool {
	return ip.IsValid() && !ip.IsUnspecified() && !ip.IsMulticast()
}

func enrTCPAddr(ip netip.Addr, port uint16) ma.Multiaddr {
	proto := "ip4"
	if ip.Is6() {
		proto = "ip6"
	}
	ipc, _ := ma.NewComponent(proto, ip.String()) // a valid netip.Addr always encodes
	tc, _ := ma.NewComponent("tcp", fmt.Sprint(port))
	return ma.Join(ipc, tc)
}

// decodeMultiaddrs splits a 31/WAKU2-ENR multiaddrs value: a sequence of
// (u16 big-endian length, binary multiaddr). A length running past the end,
// a zero length or a dangling byte is an error; an entry that is not a valid
// multiaddr is skipped.
func decodeMultiaddrs(raw []byte) ([]ma.Multiaddr, error) {
	var out []ma.Multiaddr
	for rest := raw; len(rest) > 0; {
		if len(rest) < 2 {
			return nil, fmt.Errorf("dnsdisc: ENR %s: dangling byte at offset %d", enrKeyMultiaddrs, len(raw)-len(rest))
		}
		size := int(binary.BigEndian.Uint16(rest))
		rest = rest[2:]
		if size == 0 || size > len(rest) {
			return nil, fmt.Errorf("dnsdisc: ENR %s: entry length %d at offset %d, %d bytes left", enrKeyMultiaddrs, size, len(raw)-len(rest)-2, len(rest))
		}
		a, err := ma.NewMultiaddrBytes(rest[:size])
		rest = rest[size:]
		if err != nil {
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

// withPeerID appends /p2p/<id> to an address from the multiaddrs entry. The
// entry should carry no peer id except in circuit relay addresses, where it
// is the relay's and /p2p-circuit is left out (31/WAKU2-ENR), so such an
// address gets /p2p-circuit/p2p/<id>. An address already ending in our own
// /p2p/<id> is kept as it is.
func withPeerID(a ma.Multiaddr, id peer.ID, self *ma.Component) ma.Multiaddr {
	if len(a) == 0 {
		return a
	}
	last := a[len(a)-1]
	switch {
	case last.Code() == ma.P_P2P && last.Value() == id.String():
		return a
	case last.Code() == ma.P_CIRCUIT:
		return ma.Join(a, self)
	}
	if _, err := a.ValueForProtocol(ma.P_P2P); err == nil {
		circuit, _ := ma.NewComponent("p2p-circuit", "")
		return ma.Join(a, circuit, self)
	}
	return ma.Join(a, self)
}

// loadShards reads rs, or rsv when rs is absent.
func loadShards(rec *enr.Record, d *Discovered) error {
	var list []byte
	err := rec.Load(enr.WithEntry(enrKeyShardList, &list))
	switch {
	case err == nil:
		cluster, shards, err := parseShardList(list)
		if err != nil {
			return err
		}
		d.ClusterID, d.Shards = &cluster, shards
		return nil
	case !enr.IsNotFound(err):
		return fmt.Errorf("dnsdisc: ENR %s: %w", enrKeyShardList, err)
	}

	var bits []byte
	err = rec.Load(enr.WithEntry(enrKeyShardBits, &bits))
	switch {
	case err == nil:
		cluster, shards, err := parseShardBitVector(bits)
		if err != nil {
			return err
		}
		d.ClusterID, d.Shards = &cluster, shards
		return nil
	case !enr.IsNotFound(err):
		return fmt.Errorf("dnsdisc: ENR %s: %w", enrKeyShardBits, err)
	}
	return nil
}

// parseShardList decodes rs: cluster u16-BE, count u8, count × shard u16-BE
// (nwaku fromIndicesList, go-waku FromShardList).
func parseShardList(b []byte) (uint16, []uint16, error) {
	if len(b) < 3 {
		return 0, nil, fmt.Errorf("dnsdisc: ENR %s: %d bytes, want at least 3", enrKeyShardList, len(b))
	}
	cluster, count := binary.BigEndian.Uint16(b), int(b[2])
	if len(b) != 3+2*count {
		return 0, nil, fmt.Errorf("dnsdisc: ENR %s: count %d needs %d bytes, have %d", enrKeyShardList, count, 3+2*count, len(b))
	}
	shards := make([]uint16, 0, count)
	for i := range count {
		s := binary.BigEndian.Uint16(b[3+2*i:])
		if s > maxShard {
			return 0, nil, fmt.Errorf("dnsdisc: ENR %s: shard %d above %d", enrKeyShardList, s, maxShard)
		}
		shards = append(shards, s)
	}
	slices.Sort(shards)
	return cluster, slices.Compact(shards), nil
}

// parseShardBitVector decodes rsv: cluster u16-BE then 128 bytes where shard
// s is bit s%8 (least significant first) of byte s/8. That is what nwaku
// (toBitVector: vec[shardId div 8].setBit(shardId mod 8), std/bitops) and
// go-waku (BitVector: setBit(vec[index/8], index%8)) both write, whatever
// their comments about "right-most bit" say. js-waku's relay_shard_codec.ts
// uses the opposite bit order within each byte (bit 7-s%8); we follow the
// two implementations that run the fleets. Only nodes in 64 or more shards
// publish rsv, so the Status fleet (5 shards, rs) is not affected.
func parseShardBitVector(b []byte) (uint16, []uint16, error) {
	if len(b) != shardBitVectorLen {
		return 0, nil, fmt.Errorf("dnsdisc: ENR %s: %d bytes, want %d", enrKeyShardBits, len(b), shardBitVectorLen)
	}
	cluster := binary.BigEndian.Uint16(b)
	var shards []uint16
	for i, v := range b[2:] {
		for bit := range 8 {
			if v&(1<<bit) != 0 {
				shards = append(shards, uint16(8*i+bit))
			}
		}
	}
	return cluster, shards, nil
}
