package node

import (
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/archivefleet/archivefleet/internal/waku/dnsdisc/enrtest"
	gcrypto "github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/p2p/enode"
	"github.com/ethereum/go-ethereum/p2p/enr"
	"github.com/libp2p/go-libp2p/core/network"
	ma "github.com/multiformats/go-multiaddr"
)

// TestDNSDiscoveryDialsRelayNodes: a peer configured with only an enrtree
// URL finds, over real DNS, the relay node serving its shard and meshes with
// it; it leaves alone a relay node of another shard and a store-only node
// of its own shard.
func TestDNSDiscoveryDialsRelayNodes(t *testing.T) {
	t.Parallel()
	srv := enrtest.StartDNS(t)
	node := func(shard uint16, flags byte) (*Node, *enode.Node) {
		keyFile := filepath.Join(t.TempDir(), "nodekey")
		p := startPeer(t, Config{KeyFile: keyFile, Shards: []uint16{shard}})
		k, err := LoadOrCreateKey(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := k.Raw()
		ek, err := gcrypto.ToECDSA(raw)
		if err != nil {
			t.Fatal(err)
		}
		a, err := ma.NewMultiaddr(tcpAddr(t, p))
		if err != nil {
			t.Fatal(err)
		}
		port, err := a.ValueForProtocol(ma.P_TCP)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(port)
		return p, enrtest.SignedENR(t, ek, enrtest.IP4("127.0.0.1"), enr.TCP(n), enrtest.Waku2(flags), enrtest.RS(16, shard))
	}
	relay32, e1 := node(32, 0b0001)
	relay64, e2 := node(64, 0b0001)
	store32, e3 := node(32, 0b0010)
	url, _ := srv.Publish(t, enrtest.NewKey(t), "fleet.example.org", e1, e2, e3)

	p := startPeer(t, Config{DNSDiscovery: []string{url}, Resolver: srv.Resolver()})
	testenv.Eventually(t, 15*time.Second, func() bool {
		return p.TopicPeers(shard32) == 1 && p.Host().Network().Connectedness(relay32.ID()) == network.Connected
	}, "meshed with the discovered relay node")

	for _, other := range []*Node{relay64, store32} {
		if p.Host().Network().Connectedness(other.ID()) == network.Connected {
			t.Fatalf("dialled %s, which does not relay shard 32", other.ID())
		}
	}
}
