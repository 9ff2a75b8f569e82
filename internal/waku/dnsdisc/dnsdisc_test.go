package dnsdisc

import (
	"context"
	"crypto/ecdsa"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/waku/dnsdisc/enrtest"
	gcrypto "github.com/ethereum/go-ethereum/crypto"
	gethdnsdisc "github.com/ethereum/go-ethereum/p2p/dnsdisc"
	"github.com/ethereum/go-ethereum/p2p/enode"
	"github.com/ethereum/go-ethereum/p2p/enr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// --- record construction (independent of the code under test) ---

// libp2pID derives the peer id from the private key, the way a Waku node
// does from its nodekey, not from the ENR's public key entry.
func libp2pID(t *testing.T, k *ecdsa.PrivateKey) peer.ID {
	t.Helper()
	priv, err := crypto.UnmarshalSecp256k1PrivateKey(gcrypto.FromECDSA(k))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func withP2P(t *testing.T, id peer.ID, addrs ...string) []string {
	t.Helper()
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a + "/p2p/" + id.String()
	}
	return out
}

func discAddrStrings(addrs []ma.Multiaddr) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}

func enrU16(v uint16) *uint16 { return &v }

// want is what a Discovered must hold (ENR text is checked separately).
type discWant struct {
	id                                     peer.ID
	addrs                                  []string
	cluster                                *uint16
	shards                                 []uint16
	relay, store, filter, lightPush, sync_ bool
}

func checkDiscovered(t *testing.T, got Discovered, w discWant) {
	t.Helper()
	if got.ID != w.id {
		t.Errorf("ID = %s, want %s", got.ID, w.id)
	}
	if g := discAddrStrings(got.Addrs); !slices.Equal(g, w.addrs) {
		t.Errorf("Addrs =\n  %q\nwant\n  %q", g, w.addrs)
	}
	switch {
	case (got.ClusterID == nil) != (w.cluster == nil):
		t.Errorf("ClusterID = %v, want %v", got.ClusterID, w.cluster)
	case got.ClusterID != nil && *got.ClusterID != *w.cluster:
		t.Errorf("ClusterID = %d, want %d", *got.ClusterID, *w.cluster)
	}
	if !slices.Equal(got.Shards, w.shards) {
		t.Errorf("Shards = %v, want %v", got.Shards, w.shards)
	}
	gf := [5]bool{got.Relay, got.Store, got.Filter, got.LightPush, got.Sync}
	wf := [5]bool{w.relay, w.store, w.filter, w.lightPush, w.sync_}
	if gf != wf {
		t.Errorf("relay,store,filter,lightpush,sync = %v, want %v", gf, wf)
	}
}

// --- DiscoverENRTree over real DNS ---

func TestDNSDiscoverENRTree(t *testing.T) {
	srv := enrtest.StartDNS(t)
	treeKey := enrtest.NewKey(t)

	kA, kB, kC, kD := enrtest.NewKey(t), enrtest.NewKey(t), enrtest.NewKey(t), enrtest.NewKey(t)
	idA, idB, idC := libp2pID(t, kA), libp2pID(t, kB), libp2pID(t, kC)

	// A: the shape of a status.prod boot node: ip/tcp plus wss and ws
	// multiaddrs, relay+filter+lightpush, rs 16:[1,32,64].
	nA := enrtest.SignedENR(t, kA, enrtest.IP4("203.0.113.10"), enr.TCP(30303), enr.UDP(9000),
		enrtest.Multiaddrs(t, "/dns4/boot-a.example.org/tcp/443/wss", "/ip4/203.0.113.10/tcp/8000/ws"),
		enrtest.Waku2(0b1101), enrtest.RS(16, 1, 32, 64))
	// B: IPv6 only, relay+store, shards as an rsv bit vector.
	nB := enrtest.SignedENR(t, kB, enrtest.IP6("2001:db8::5"), enr.TCP6(30304),
		enrtest.Waku2(0b0011), enrtest.RSV(16, 0, 1, 7, 8, 64, 128, 256, 1023))
	// C: no eth TCP endpoint at all, only a wss multiaddr.
	nC := enrtest.SignedENR(t, kC, enrtest.Multiaddrs(t, "/dns4/c.example.org/tcp/443/wss"), enrtest.Waku2(0b0001), enrtest.RS(16, 32))
	// D: no address: skipped.
	nD := enrtest.SignedENR(t, kD, enrtest.Waku2(0b0001), enrtest.RS(16, 1))

	url, _ := srv.Publish(t, treeKey, "nodes.example.org", nA, nB, nC, nD)
	got, err := DiscoverENRTree(t.Context(), url, srv.Resolver())
	if err != nil {
		t.Fatal(err)
	}

	wants := map[peer.ID]discWant{
		idA: {id: idA, cluster: enrU16(16), shards: []uint16{1, 32, 64}, relay: true, filter: true, lightPush: true,
			addrs: withP2P(t, idA, "/ip4/203.0.113.10/tcp/30303", "/dns4/boot-a.example.org/tcp/443/wss", "/ip4/203.0.113.10/tcp/8000/ws")},
		idB: {id: idB, cluster: enrU16(16), shards: []uint16{0, 1, 7, 8, 64, 128, 256, 1023}, relay: true, store: true,
			addrs: withP2P(t, idB, "/ip6/2001:db8::5/tcp/30304")},
		idC: {id: idC, cluster: enrU16(16), shards: []uint16{32}, relay: true,
			addrs: withP2P(t, idC, "/dns4/c.example.org/tcp/443/wss")},
	}
	nodes := map[peer.ID]*enode.Node{idA: nA, idB: nB, idC: nC}
	if len(got) != len(wants) {
		t.Fatalf("got %d nodes, want %d: %+v", len(got), len(wants), got)
	}
	if !slices.IsSortedFunc(got, func(a, b Discovered) int { return strings.Compare(string(a.ID), string(b.ID)) }) {
		t.Error("result not sorted by peer id")
	}
	for _, d := range got {
		w, ok := wants[d.ID]
		if !ok {
			t.Errorf("unexpected node %s", d.ID)
			continue
		}
		t.Run(d.ID.String(), func(t *testing.T) {
			checkDiscovered(t, d, w)
			if d.ENR != nodes[d.ID].String() {
				t.Errorf("ENR = %s, want %s", d.ENR, nodes[d.ID].String())
			}
			again, err := ParseWakuENRString(d.ENR)
			if err != nil {
				t.Fatal(err)
			}
			checkDiscovered(t, again, w)
		})
	}
	if srv.Queries() == 0 {
		t.Error("the DNS server saw no query")
	}

	// A's AddrInfo drops /p2p/<id> and keeps the three transports.
	for _, d := range got {
		if d.ID != idA {
			continue
		}
		info := d.AddrInfo()
		if info.ID != idA || len(info.Addrs) != 3 || info.Addrs[1].String() != "/dns4/boot-a.example.org/tcp/443/wss" {
			t.Errorf("AddrInfo = %v", info)
		}
		if !d.HasShard(16, 32) || d.HasShard(16, 2) || d.HasShard(1, 32) {
			t.Error("HasShard wrong")
		}
	}
}

// A tree with more than 13 leaves has intermediate branch entries.
func TestDNSDiscoverENRTreeLarge(t *testing.T) {
	srv := enrtest.StartDNS(t)
	var nodes []*enode.Node
	ids := map[peer.ID]bool{}
	for i := range 20 {
		k := enrtest.NewKey(t)
		ids[libp2pID(t, k)] = true
		nodes = append(nodes, enrtest.SignedENR(t, k, enrtest.IP4(fmt.Sprintf("198.51.100.%d", i+1)), enr.TCP(30303), enrtest.Waku2(1), enrtest.RS(16, 32)))
	}
	url, txt := srv.Publish(t, enrtest.NewKey(t), "big.example.org", nodes...)
	branches := 0
	for _, v := range txt {
		if strings.HasPrefix(v, "enrtree-branch:") {
			branches++
		}
	}
	if branches < 2 {
		t.Fatalf("tree has %d branch entries, want a nested tree", branches)
	}
	got, err := DiscoverENRTree(t.Context(), url, srv.Resolver())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(ids) {
		t.Fatalf("got %d nodes, want %d", len(got), len(ids))
	}
	for _, d := range got {
		if !ids[d.ID] {
			t.Errorf("unexpected node %s", d.ID)
		}
	}
}

func TestDNSDiscoverENRTreeErrors(t *testing.T) {
	srv := enrtest.StartDNS(t)
	treeKey, otherKey := enrtest.NewKey(t), enrtest.NewKey(t)
	good := enrtest.SignedENR(t, enrtest.NewKey(t), enrtest.IP4("203.0.113.20"), enr.TCP(30303), enrtest.Waku2(1))
	other := enrtest.SignedENR(t, enrtest.NewKey(t), enrtest.IP4("203.0.113.21"), enr.TCP(30303), enrtest.Waku2(1))
	noAddr := enrtest.SignedENR(t, enrtest.NewKey(t), enrtest.Waku2(1), enrtest.RS(16, 1))

	// A correctly signed tree, and the URL a different key would give.
	url, _ := srv.Publish(t, treeKey, "ok.example.org", good)
	tree, err := gethdnsdisc.MakeTree(1, []*enode.Node{good}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wrongKeyURL, err := tree.Sign(otherKey, "ok.example.org")
	if err != nil {
		t.Fatal(err)
	}

	// A root whose signed content was altered (seq 1 → 2, same signature).
	_, txt := srv.Publish(t, treeKey, "badsig.example.org", good)
	root := txt["badsig.example.org"]
	if !strings.Contains(root, " seq=1 ") {
		t.Fatalf("unexpected root %q", root)
	}
	srv.Set(map[string]string{"badsig.example.org": strings.Replace(root, " seq=1 ", " seq=2 ", 1)})
	badSigURL := strings.Replace(url, "ok.example.org", "badsig.example.org", 1)

	// A leaf swapped for another validly signed ENR: its hash no longer
	// matches the name it is published under.
	swapURL, txt := srv.Publish(t, treeKey, "swap.example.org", good)
	for name, v := range txt {
		if strings.HasPrefix(v, "enr:") {
			srv.Set(map[string]string{name: other.String()})
		}
	}

	noAddrURL, _ := srv.Publish(t, treeKey, "noaddr.example.org", noAddr)
	emptyURL, _ := srv.Publish(t, treeKey, "empty.example.org")
	missingURL := strings.Replace(url, "ok.example.org", "missing.example.org", 1)

	canceled, cancel := context.WithCancel(t.Context())
	cancel()

	tests := []struct {
		name    string
		ctx     context.Context
		url     string
		is      error  // errors.Is target, if any
		errText string // substring of the error, if any
	}{
		{name: "wrong public key in URL", url: wrongKeyURL, errText: "invalid root entry"},
		{name: "bad root signature", url: badSigURL, errText: "invalid root entry"},
		{name: "leaf hash mismatch", url: swapURL, errText: "hash mismatch"},
		{name: "only unusable records", url: noAddrURL, is: ErrNoNodes, errText: ErrNoAddress.Error()},
		{name: "empty tree", url: emptyURL, is: ErrNoNodes, errText: "empty"},
		{name: "domain does not exist", url: missingURL, errText: "missing.example.org"},
		{name: "not an enrtree URL", url: "https://ok.example.org", errText: "invalid enrtree URL"},
		{name: "context canceled", ctx: canceled, url: url, is: context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := tc.ctx
			if ctx == nil {
				ctx = t.Context()
			}
			got, err := DiscoverENRTree(ctx, tc.url, srv.Resolver())
			if err == nil {
				t.Fatalf("no error, got %+v", got)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.errText) {
				t.Errorf("error %q does not mention %q", err, tc.errText)
			}
		})
	}

	// The good tree still works through the same server and resolver.
	got, err := DiscoverENRTree(t.Context(), url, srv.Resolver())
	if err != nil || len(got) != 1 {
		t.Fatalf("good tree: %v, %v", got, err)
	}
}

// A DNS server that never answers: the caller's deadline, or cancelling
// ctx, ends the sync promptly (dnsdisc itself would wait 5 s per lookup).
func TestDNSDiscoverENRTreeSilentServer(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, pc.LocalAddr().String())
	}}
	tree, err := gethdnsdisc.MakeTree(1, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	url, err := tree.Sign(enrtest.NewKey(t), "silent.example.org")
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		is   error
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(t.Context(), 300*time.Millisecond)
		}, context.DeadlineExceeded},
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(300*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := tc.ctx()
			defer cancel()
			start := time.Now()
			_, err := DiscoverENRTree(ctx, url, r)
			if !errors.Is(err, tc.is) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v after 300ms", d)
			}
		})
	}
}

// --- ParseWakuENR on constructed records ---

func TestENRParse(t *testing.T) {
	k := enrtest.NewKey(t)
	id := libp2pID(t, k)
	relayID := libp2pID(t, enrtest.NewKey(t))
	garbage := []byte{0xff, 0xff, 0xff, 0x0f, 0x01} // not a multiaddr
	wss := ma.StringCast("/dns4/x.example.org/tcp/443/wss").Bytes()
	framed := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
			b = append(b, p...)
		}
		return b
	}

	tests := []struct {
		name    string
		entries []enr.Entry
		want    discWant
		is      error
		errText string
	}{
		{
			name:    "ip4 and tcp only",
			entries: []enr.Entry{enrtest.IP4("192.0.2.1"), enr.TCP(60000)},
			want:    discWant{addrs: withP2P(t, id, "/ip4/192.0.2.1/tcp/60000")},
		},
		{
			name:    "ip6 without tcp6 uses tcp",
			entries: []enr.Entry{enrtest.IP4("192.0.2.1"), enrtest.IP6("2001:db8::1"), enr.TCP(60000)},
			want:    discWant{addrs: withP2P(t, id, "/ip4/192.0.2.1/tcp/60000", "/ip6/2001:db8::1/tcp/60000")},
		},
		{
			name:    "ip6 with its own tcp6",
			entries: []enr.Entry{enrtest.IP6("2001:db8::1"), enr.TCP(60000), enr.TCP6(60006)},
			want:    discWant{addrs: withP2P(t, id, "/ip6/2001:db8::1/tcp/60006")},
		},
		{
			name:    "ip without tcp gives no ip address",
			entries: []enr.Entry{enrtest.IP4("192.0.2.1"), enr.UDP(9000), enrtest.Multiaddrs(t, "/dns4/x.example.org/tcp/443/wss")},
			want:    discWant{addrs: withP2P(t, id, "/dns4/x.example.org/tcp/443/wss")},
		},
		{
			name:    "multiaddr duplicating ip/tcp is dropped",
			entries: []enr.Entry{enrtest.IP4("192.0.2.1"), enr.TCP(60000), enrtest.Multiaddrs(t, "/ip4/192.0.2.1/tcp/60000", "/ip4/192.0.2.1/tcp/8000/ws")},
			want:    discWant{addrs: withP2P(t, id, "/ip4/192.0.2.1/tcp/60000", "/ip4/192.0.2.1/tcp/8000/ws")},
		},
		{
			name:    "circuit relay address gets p2p-circuit",
			entries: []enr.Entry{enrtest.Multiaddrs(t, "/ip4/192.0.2.9/tcp/55555/p2p/"+relayID.String())},
			want:    discWant{addrs: []string{"/ip4/192.0.2.9/tcp/55555/p2p/" + relayID.String() + "/p2p-circuit/p2p/" + id.String()}},
		},
		{
			name:    "address already carrying our own id is kept",
			entries: []enr.Entry{enrtest.Multiaddrs(t, "/dns4/x.example.org/tcp/443/wss/p2p/"+id.String())},
			want:    discWant{addrs: withP2P(t, id, "/dns4/x.example.org/tcp/443/wss")},
		},
		{
			name:    "undecodable multiaddr skipped, the rest kept",
			entries: []enr.Entry{enrtest.Raw("multiaddrs", framed(garbage, wss))},
			want:    discWant{addrs: withP2P(t, id, "/dns4/x.example.org/tcp/443/wss")},
		},
		{
			name:    "multiaddrs length past the end",
			entries: []enr.Entry{enrtest.IP4("192.0.2.1"), enr.TCP(1), enrtest.Raw("multiaddrs", framed(wss)[:len(wss)])},
			errText: "entry length",
		},
		{
			name:    "multiaddrs zero length",
			entries: []enr.Entry{enrtest.IP4("192.0.2.1"), enr.TCP(1), enrtest.Raw("multiaddrs", []byte{0, 0})},
			errText: "entry length 0",
		},
		{
			name:    "multiaddrs dangling byte",
			entries: []enr.Entry{enrtest.IP4("192.0.2.1"), enr.TCP(1), enrtest.Raw("multiaddrs", append(framed(wss), 7))},
			errText: "dangling byte",
		},
		{
			name:    "no address at all",
			entries: []enr.Entry{enrtest.Waku2(1), enrtest.RS(16, 1)},
			is:      ErrNoAddress,
		},
		{
			name:    "unspecified ip is not an address",
			entries: []enr.Entry{enrtest.IP4("0.0.0.0"), enr.TCP(60000)},
			is:      ErrNoAddress,
		},
		{
			name:    "all five capability bits",
			entries: []enr.Entry{enrtest.IP4("192.0.2.1"), enr.TCP(1), enrtest.Waku2(0x1f)},
			want:    discWant{addrs: withP2P(t, id, "/ip4/192.0.2.1/tcp/1"), relay: true, store: true, filter: true, lightPush: true, sync_: true},
		},
		{
			name:    "filter only (bit 2)",
			entries: []enr.Entry{enrtest.IP4("192.0.2.1"), enr.TCP(1), enrtest.Waku2(0x04)},
			want:    discWant{addrs: withP2P(t, id, "/ip4/192.0.2.1/tcp/1"), filter: true},
		},
		{
			name:    "waku2 of two bytes",
			entries: []enr.Entry{enrtest.IP4("192.0.2.1"), enr.TCP(1), enrtest.Raw("waku2", []byte{1, 2})},
			errText: "waku2: 2 bytes",
		},
		{
			name:    "rs sorted and deduplicated",
			entries: []enr.Entry{enrtest.IP4("192.0.2.1"), enr.TCP(1), enrtest.RS(16, 64, 1, 32, 1)},
			want:    discWant{addrs: withP2P(t, id, "/ip4/192.0.2.1/tcp/1"), cluster: enrU16(16), shards: []uint16{1, 32, 64}},
		},
		{
			name:    "rs with no shards",
			entries: []enr.Entry{enrtest.IP4("192.0.2.1"), enr.TCP(1), enrtest.RS(7)},
			want:    discWant{addrs: withP2P(t, id, "/ip4/192.0.2.1/tcp/1"), cluster: enrU16(7), shards: []uint16{}},
		},
		{
			name:    "rs count does not match length",
			entries: []enr.Entry{enrtest.IP4("192.0.2.1"), enr.TCP(1), enrtest.Raw("rs", []byte{0, 16, 2, 0, 1})},
			errText: "count 2 needs 7 bytes",
		},
		{
			name:    "rs shard above 1023",
			entries: []enr.Entry{enrtest.IP4("192.0.2.1"), enr.TCP(1), enrtest.RS(16, 1024)},
			errText: "shard 1024",
		},
		{
			name:    "rsv",
			entries: []enr.Entry{enrtest.IP4("192.0.2.1"), enr.TCP(1), enrtest.RSV(65535, 3, 9, 1000)},
			want:    discWant{addrs: withP2P(t, id, "/ip4/192.0.2.1/tcp/1"), cluster: enrU16(65535), shards: []uint16{3, 9, 1000}},
		},
		{
			name:    "rsv of the wrong length",
			entries: []enr.Entry{enrtest.IP4("192.0.2.1"), enr.TCP(1), enrtest.Raw("rsv", make([]byte, 129))},
			errText: "rsv: 129 bytes",
		},
		{
			name:    "rs wins over rsv",
			entries: []enr.Entry{enrtest.IP4("192.0.2.1"), enr.TCP(1), enrtest.RS(16, 5), enrtest.RSV(1, 6)},
			want:    discWant{addrs: withP2P(t, id, "/ip4/192.0.2.1/tcp/1"), cluster: enrU16(16), shards: []uint16{5}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := enrtest.SignedENR(t, k, tc.entries...)
			got, err := ParseWakuENR(n)
			if tc.is != nil || tc.errText != "" {
				if err == nil {
					t.Fatalf("no error, got %+v", got)
				}
				if tc.is != nil && !errors.Is(err, tc.is) {
					t.Errorf("error %v is not %v", err, tc.is)
				}
				if !strings.Contains(err.Error(), tc.errText) {
					t.Errorf("error %q does not mention %q", err, tc.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.want.id = id
			checkDiscovered(t, got, tc.want)
			if got.ENR != n.String() || !strings.HasPrefix(got.ENR, "enr:") {
				t.Errorf("ENR = %s", got.ENR)
			}
		})
	}
}

func TestENRParseStringErrors(t *testing.T) {
	n := enrtest.SignedENR(t, enrtest.NewKey(t), enrtest.IP4("192.0.2.1"), enr.TCP(1))
	text := n.String()
	// Flip a character inside the signature (just after the RLP list and
	// signature headers) so the record no longer verifies.
	b := []byte(text)
	if b[10] == 'A' {
		b[10] = 'B'
	} else {
		b[10] = 'A'
	}
	for _, tc := range []struct{ name, in, errText string }{
		{"enode URL", "enode://" + strings.Repeat("ab", 64) + "@192.0.2.1:30303", `start with "enr:"`},
		{"no prefix", strings.TrimPrefix(text, "enr:"), `start with "enr:"`},
		{"bad base64", "enr:!!!", "illegal base64"},
		{"bad signature", string(b), "invalid signature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ParseWakuENRString(tc.in)
			if err == nil {
				t.Fatalf("no error, got %+v", d)
			}
			if !strings.Contains(err.Error(), tc.errText) {
				t.Errorf("error %q does not mention %q", err, tc.errText)
			}
		})
	}
	if _, err := ParseWakuENR(nil); err == nil {
		t.Error("nil node: no error")
	}
}

// --- golden records published by Status and go-waku ---

// TestENRGolden decodes real ENRs whose peer id was published separately,
// so the peer id derivation is checked against someone else's result.
func TestENRGolden(t *testing.T) {
	tests := []struct {
		name string
		enr  string
		want discWant
	}{
		{
			// status-im/status-go config/cli/fleet-status.prod.json (commit
			// c72f491324909173c83e69c5a86ace7aeb87daaa), DiscV5BootstrapNodes[1]:
			// boot-01.do-ams3 of status.prod; the same file's WakuNodes list
			// gives its peer id. Cluster 16, shards 1/32/64/128/256,
			// relay+filter+lightpush.
			name: "status.prod boot-01.do-ams3",
			enr:  "enr:-QEKuED9AJm2HGgrRpVaJY2nj68ao_QiPeUT43sK-aRM7sMJ6R4G11OSDOwnvVacgN1sTw-K7soC5dzHDFZgZkHU0u-XAYJpZIJ2NIJpcISnYxMvim11bHRpYWRkcnO4WgAqNiVib290LTAxLmRvLWFtczMuc3RhdHVzLnByb2Quc3RhdHVzLmltBnZfACw2JWJvb3QtMDEuZG8tYW1zMy5zdGF0dXMucHJvZC5zdGF0dXMuaW0GAbveA4Jyc40AEAUAAQAgAEAAgAEAiXNlY3AyNTZrMaEC3rRtFQSgc24uWewzXaxTY8hDAHB8sgnxr9k8Rjb5GeSDdGNwgnZfg3VkcIIjKIV3YWt1Mg0",
			want: discWant{
				id: "16Uiu2HAmAR24Mbb6VuzoyUiGx42UenDkshENVDj4qnmmbabLvo31",
				addrs: []string{
					"/ip4/167.99.19.47/tcp/30303",
					"/dns4/boot-01.do-ams3.status.prod.status.im/tcp/30303",
					"/dns4/boot-01.do-ams3.status.prod.status.im/tcp/443/wss",
				},
				cluster: enrU16(16), shards: []uint16{1, 32, 64, 128, 256},
				relay: true, filter: true, lightPush: true,
			},
		},
		{
			// status-im/status-go services/mailservers/fleet.go (same commit),
			// "store-01.do-ams3.status.prod": ENR and Addr with the peer id.
			// Store nodes: relay+store.
			name: "status.prod store-01.do-ams3",
			enr:  "enr:-QEMuEAs8JmmyUI3b9v_ADqYtELHUYAsAMS21lA2BMtrzF86tVmyy9cCrhmzfHGHx_g3nybn7jIRybzXTGNj3C2KzrriAYJpZIJ2NIJpcISf3_Jeim11bHRpYWRkcnO4XAArNiZzdG9yZS0wMS5kby1hbXMzLnN0YXR1cy5wcm9kLnN0YXR1cy5pbQZ2XwAtNiZzdG9yZS0wMS5kby1hbXMzLnN0YXR1cy5wcm9kLnN0YXR1cy5pbQYBu94DgnJzjQAQBQABACAAQACAAQCJc2VjcDI1NmsxoQLfoaQH3oSYW59yxEBfeAZbltmUnC4BzYkHqer2VQMTyoN0Y3CCdl-DdWRwgiMohXdha3UyAw",
			want: discWant{
				id: "16Uiu2HAmAUdrQ3uwzuE4Gy4D56hX6uLKEeerJAnhKEHZ3DxF1EfT",
				addrs: []string{
					"/ip4/159.223.242.94/tcp/30303",
					"/dns4/store-01.do-ams3.status.prod.status.im/tcp/30303",
					"/dns4/store-01.do-ams3.status.prod.status.im/tcp/443/wss",
				},
				cluster: enrU16(16), shards: []uint16{1, 32, 64, 128, 256},
				relay: true, store: true,
			},
		},
		{
			// waku-org/go-waku waku/v2/protocol/enr/enr_test.go
			// TestEnodeToMultiAddr (commit 84a4b1be7a6eceed3b8cbc46d062b61623942bf4),
			// which expects /ip4/178.128.141.171/tcp/30303/p2p/16Uiu2HAkykga…;
			// the same record is the example output of waku_dns_discovery in
			// go-waku library/c/README.md. Cluster 1, shards 0-7, waku2 0x0f.
			name: "go-waku enr_test node-01.do-ams3.waku.test",
			enr:  "enr:-QESuEC1p_s3xJzAC_XlOuuNrhVUETmfhbm1wxRGis0f7DlqGSw2FM-p2Ugl_r25UHQJ3f1rIRrpzxJXSMaJe4yk1XFSAYJpZIJ2NIJpcISygI2rim11bHRpYWRkcnO4XAArNiZub2RlLTAxLmRvLWFtczMud2FrdS50ZXN0LnN0YXR1c2ltLm5ldAZ2XwAtNiZub2RlLTAxLmRvLWFtczMud2FrdS50ZXN0LnN0YXR1c2ltLm5ldAYfQN4DgnJzkwABCAAAAAEAAgADAAQABQAGAAeJc2VjcDI1NmsxoQJATXRSRSUyTw_QLB6H_U3oziVQgNRgrXpK7wp2AMyNxYN0Y3CCdl-DdWRwgiMohXdha3UyDw",
			want: discWant{
				id: "16Uiu2HAkykgaECHswi3YKJ5dMLbq2kPVCo89fcyTd38UcQD6ej5W",
				addrs: []string{
					"/ip4/178.128.141.171/tcp/30303",
					"/dns4/node-01.do-ams3.waku.test.statusim.net/tcp/30303",
					"/dns4/node-01.do-ams3.waku.test.statusim.net/tcp/8000/wss",
				},
				cluster: enrU16(1), shards: []uint16{0, 1, 2, 3, 4, 5, 6, 7},
				relay: true, store: true, filter: true, lightPush: true,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseWakuENRString(tc.enr)
			if err != nil {
				t.Fatal(err)
			}
			id, err := peer.Decode(string(tc.want.id))
			if err != nil {
				t.Fatal(err)
			}
			tc.want.id = id
			tc.want.addrs = withP2P(t, id, tc.want.addrs...)
			checkDiscovered(t, got, tc.want)
			if got.ENR != tc.enr {
				t.Errorf("ENR text changed:\n%s\n%s", got.ENR, tc.enr)
			}
		})
	}
}

// TestENRGoldenMultiaddrs: js-waku's "[shared test vector]" (waku-org/js-waku
// packages/enr/src/enr.spec.ts, "should decode valid ENR with multiaddrs
// successfully"), whose multiaddrs entry holds dns4/wss, dns6/wss and
// onion3/wss. js-waku asserts these three addresses; no peer id is given.
func TestENRGoldenMultiaddrs(t *testing.T) {
	const text = "enr:-QEnuEBEAyErHEfhiQxAVQoWowGTCuEF9fKZtXSd7H_PymHFhGJA3rGAYDVSHKCyJDGRLBGsloNbS8AZF33IVuefjOO6BIJpZIJ2NIJpcIQS39tkim11bHRpYWRkcnO4lgAvNihub2RlLTAxLmRvLWFtczMud2FrdXYyLnRlc3Quc3RhdHVzaW0ubmV0BgG73gMAODcxbm9kZS0wMS5hYy1jbi1ob25na29uZy1jLndha3V2Mi50ZXN0LnN0YXR1c2ltLm5ldAYBu94DACm9A62t7AQL4Ef5ZYZosRpQTzFVAB8jGjf1TER2wH-0zBOe1-MDBNLeA4lzZWNwMjU2azGhAzfsxbxyCkgCqq8WwYsVWH7YkpMLnU2Bw5xJSimxKav-g3VkcIIjKA"
	got, err := ParseWakuENRString(text)
	if err != nil {
		t.Fatal(err)
	}
	// The record has ip and udp but no tcp: only the multiaddrs are dialable.
	checkDiscovered(t, got, discWant{
		id: got.ID,
		addrs: withP2P(t, got.ID,
			"/dns4/node-01.do-ams3.wakuv2.test.statusim.net/tcp/443/wss",
			"/dns6/node-01.ac-cn-hongkong-c.wakuv2.test.statusim.net/tcp/443/wss",
			"/onion3/vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd:1234/wss"),
	})
}

// The rsv layout against a hand-written vector: shard 0 is the least
// significant bit of the first vector byte, shard 15 the most significant
// bit of the second (nwaku/go-waku; js-waku's encoder uses the opposite bit
// order within a byte, see parseShardBitVector).
func TestENRShardBitVectorLayout(t *testing.T) {
	b := make([]byte, shardBitVectorLen)
	b[0], b[1] = 0x00, 0x10 // cluster 16
	b[2] = 0b0000_0011      // shards 0, 1
	b[3] = 0b1000_0000      // shard 15
	b[2+127] = 0b1000_0000  // shard 1023
	cluster, shards, err := parseShardBitVector(b)
	if err != nil {
		t.Fatal(err)
	}
	if cluster != 16 || !slices.Equal(shards, []uint16{0, 1, 15, 1023}) {
		t.Fatalf("cluster %d shards %v", cluster, shards)
	}
}
