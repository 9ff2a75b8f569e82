// Package enrtest builds signed Waku node records (ENRs) and serves them as
// EIP-1459 trees from a real DNS server on 127.0.0.1, for tests of DNS
// discovery. Records are built with go-ethereum's enr and enode packages,
// independently of the code under test.
package enrtest

import (
	"context"
	"crypto/ecdsa"
	"encoding/binary"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	gcrypto "github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/p2p/dnsdisc"
	"github.com/ethereum/go-ethereum/p2p/enode"
	"github.com/ethereum/go-ethereum/p2p/enr"
	"github.com/miekg/dns"
	ma "github.com/multiformats/go-multiaddr"
)

// NewKey returns a new secp256k1 key to sign a record or a tree with.
func NewKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := gcrypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// SignedENR builds and signs a "v4" record holding entries.
func SignedENR(t testing.TB, k *ecdsa.PrivateKey, entries ...enr.Entry) *enode.Node {
	t.Helper()
	var r enr.Record
	r.SetSeq(1)
	for _, e := range entries {
		r.Set(e)
	}
	if err := enode.SignV4(&r, k); err != nil {
		t.Fatal(err)
	}
	n, err := enode.New(enode.ValidSchemes, &r)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Multiaddrs encodes a 31/WAKU2-ENR multiaddrs value: u16-BE length + bytes.
func Multiaddrs(t testing.TB, addrs ...string) enr.Entry {
	t.Helper()
	var b []byte
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			t.Fatal(err)
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(a.Bytes())))
		b = append(b, a.Bytes()...)
	}
	return Raw("multiaddrs", b)
}

// Raw is an entry holding b as it is.
func Raw(key string, b []byte) enr.Entry { return enr.WithEntry(key, b) }

// Waku2 is the capability bit field.
func Waku2(flags byte) enr.Entry { return Raw("waku2", []byte{flags}) }

// RS is the shard list: cluster u16-BE, count u8, shards u16-BE
// (RELAY-SHARDING).
func RS(cluster uint16, shards ...uint16) enr.Entry {
	b := binary.BigEndian.AppendUint16(nil, cluster)
	b = append(b, byte(len(shards)))
	for _, s := range shards {
		b = binary.BigEndian.AppendUint16(b, s)
	}
	return Raw("rs", b)
}

// RSV is the shard bit vector: cluster u16-BE + 128 bytes, shard s = bit
// s%8 (LSB first) of byte s/8, as nwaku sharding.nim toBitVector writes it.
func RSV(cluster uint16, shards ...uint16) enr.Entry {
	b := binary.BigEndian.AppendUint16(nil, cluster)
	vec := make([]byte, 128)
	for _, s := range shards {
		vec[s/8] |= 1 << (s % 8)
	}
	return Raw("rsv", append(b, vec...))
}

// IP4 is the ip entry.
func IP4(s string) enr.Entry { return enr.IPv4(net.ParseIP(s).To4()) }

// IP6 is the ip6 entry.
func IP6(s string) enr.Entry { return enr.IPv6(net.ParseIP(s)) }

// DNS is a DNS server on 127.0.0.1/udp answering TXT queries from its
// records.
type DNS struct {
	addr    string
	mu      sync.Mutex
	txt     map[string]string // lower-case name without trailing dot → TXT value
	queries atomic.Int64
}

// StartDNS starts a server with no records; it stops when the test ends.
func StartDNS(t testing.TB) *DNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &DNS{addr: pc.LocalAddr().String(), txt: map[string]string{}}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serve), NotifyStartedFunc: func() { close(started) }}
	done := make(chan error, 1)
	go func() { done <- srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("dns server: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Shutdown(); err != nil {
			t.Errorf("dns shutdown: %v", err)
		}
		<-done
	})
	return s
}

// Set adds or replaces TXT records, by name.
func (s *DNS) Set(records map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, v := range records {
		s.txt[strings.ToLower(name)] = v
	}
}

// Queries is the number of queries answered so far.
func (s *DNS) Queries() int64 { return s.queries.Load() }

func (s *DNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	s.queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	found := false
	for _, q := range req.Question {
		name := strings.ToLower(strings.TrimSuffix(q.Name, "."))
		s.mu.Lock()
		v, ok := s.txt[name]
		s.mu.Unlock()
		if !ok || q.Qtype != dns.TypeTXT {
			continue
		}
		found = true
		// One TXT RR; its value split into <=255-byte character-strings,
		// which resolvers (Go's included) concatenate again.
		var parts []string
		for len(v) > 255 {
			parts, v = append(parts, v[:255]), v[255:]
		}
		parts = append(parts, v)
		m.Answer = append(m.Answer, &dns.TXT{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
			Txt: parts,
		})
	}
	if !found {
		m.Rcode = dns.RcodeNameError
	}
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = int(opt.UDPSize())
	}
	m.Truncate(size) // a truncated answer would make Go retry over TCP and fail: the test notices
	_ = w.WriteMsg(m)
}

// Resolver is a pure-Go net.Resolver that only talks to this server.
func (s *DNS) Resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, s.addr)
		},
	}
}

// Publish signs a tree of nodes for domain with key and serves it; it
// returns the enrtree:// URL and the TXT records.
func (s *DNS) Publish(t testing.TB, key *ecdsa.PrivateKey, domain string, nodes ...*enode.Node) (string, map[string]string) {
	t.Helper()
	tree, err := dnsdisc.MakeTree(1, nodes, nil)
	if err != nil {
		t.Fatal(err)
	}
	url, err := tree.Sign(key, domain)
	if err != nil {
		t.Fatal(err)
	}
	txt := tree.ToTXT(domain)
	s.Set(txt)
	return url, txt
}
