package node

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/archivefleet/archivefleet/internal/waku/dnsdisc"
	"github.com/archivefleet/archivefleet/internal/waku/store"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults, all in one place. Config.withDefaults applies them once.
const (
	// DefaultClusterID is the Status production cluster (status.prod).
	DefaultClusterID uint16 = 16
	// DefaultShard is the shard of a community with no shard set
	// (wakuwire.DefaultCommunityShard).
	DefaultShard uint16 = 32
	// DefaultTCPListen and DefaultWSListen are go-waku's default ports.
	DefaultTCPListen = "/ip4/0.0.0.0/tcp/60000"
	DefaultWSListen  = "/ip4/0.0.0.0/tcp/60001/ws"
	// DefaultReconnectMin and DefaultReconnectMax bound the exponential
	// back-off between dials of a static peer.
	DefaultReconnectMin = time.Second
	DefaultReconnectMax = time.Minute
	// DefaultMetadataTimeout bounds a metadata exchange on a new connection.
	DefaultMetadataTimeout = 10 * time.Second
	// DefaultDialTimeout bounds one dial of a static peer.
	DefaultDialTimeout = 10 * time.Second
	// DefaultMaxPeers is nwaku's and go-waku's default connection limit
	// (max-connections 50).
	DefaultMaxPeers = 50
	// DefaultDiscoveryInterval is how often the ENR trees are synced again.
	DefaultDiscoveryInterval = 30 * time.Minute
	// maxShard: static sharding has 1024 shards per cluster (RELAY-SHARDING).
	maxShard = 1023
)

// Config configures a Node. The zero value of every field means "use the
// default"; New applies the defaults once and validates the result.
type Config struct {
	// ListenAddrs are libp2p multiaddrs to listen on (TCP and /ws).
	// Default: DefaultTCPListen and DefaultWSListen.
	ListenAddrs []string
	// AnnounceAddrs, when set, replace the listen addresses in what the host
	// advertises (identify).
	AnnounceAddrs []string
	// KeyFile holds the node key: a hex-encoded 32-byte secp256k1 private
	// key (the nwaku/go-waku "nodekey" format). It is created with mode 0600
	// on first start so the peer id stays stable across restarts. Empty: an
	// ephemeral key (tests only).
	KeyFile string
	// ClusterID is the Waku cluster. Default DefaultClusterID.
	ClusterID uint16
	// Shards are the static-sharding shard indices to relay. Default
	// [DefaultShard].
	Shards []uint16
	// StaticPeers are multiaddrs with /p2p/<id>, dialled at start and
	// re-dialled with back-off whenever disconnected.
	StaticPeers []string
	// ReconnectMin/ReconnectMax bound the static-peer back-off.
	ReconnectMin, ReconnectMax time.Duration
	// MetadataTimeout bounds a metadata exchange. Default DefaultMetadataTimeout.
	MetadataTimeout time.Duration
	// DialTimeout bounds one static-peer dial. Default DefaultDialTimeout.
	DialTimeout time.Duration
	// MaxPeers caps connected peers: at it, inbound connections from new
	// peers are refused as soon as their handshake names them (static
	// peers excepted), and above it (our own dials) the connection manager
	// closes the least useful ones (never a static peer) down to 80 % of
	// it. Default DefaultMaxPeers.
	MaxPeers int
	// DNSDiscovery are EIP-1459 tree URLs ("enrtree://<key>@<domain>"):
	// their relay nodes serving one of Shards in ClusterID are dialled
	// whenever a topic has fewer than 6 peers.
	DNSDiscovery []string
	// DiscoveryInterval is how often the trees are synced again. Default
	// DefaultDiscoveryInterval.
	DiscoveryInterval time.Duration
	// Resolver looks the trees up; nil is net.DefaultResolver.
	Resolver dnsdisc.Resolver
	// LightPushService serves lightpush v3: pushed messages are relayed on
	// their pubsub topic (which must be one of Shards').
	LightPushService bool
	// StoreService serves Store v3 (store.Protocol) from an in-memory store
	// of the valid messages relayed on Shards, ours included: for tests and
	// a local dev node, not a production store node (store.Service).
	StoreService bool
	// StoreRetention drops stored messages whose timestamp is older.
	// Default store.DefaultRetention (30 days).
	StoreRetention time.Duration
	// StoreCapacity caps the stored messages; beyond it the oldest go
	// first. Default store.DefaultCapacity.
	StoreCapacity int
	// StoreMaxBytes caps the memory the stored messages take, each counted
	// as its encoded size, its content topic and 256 bytes; beyond it the
	// oldest go first, and a message larger than it is not stored.
	// Default store.DefaultMaxBytes.
	StoreMaxBytes int64
	// Registerer, when set, gets the node's Metrics.
	Registerer prometheus.Registerer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if len(c.ListenAddrs) == 0 {
		c.ListenAddrs = []string{DefaultTCPListen, DefaultWSListen}
	}
	if c.ClusterID == 0 {
		c.ClusterID = DefaultClusterID
	}
	if len(c.Shards) == 0 {
		c.Shards = []uint16{DefaultShard}
	}
	if c.ReconnectMin == 0 {
		c.ReconnectMin = DefaultReconnectMin
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = DefaultReconnectMax
	}
	if c.MetadataTimeout == 0 {
		c.MetadataTimeout = DefaultMetadataTimeout
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.DiscoveryInterval == 0 {
		c.DiscoveryInterval = DefaultDiscoveryInterval
	}
	if c.MaxPeers == 0 {
		c.MaxPeers = DefaultMaxPeers
	}
	if c.StoreRetention == 0 {
		c.StoreRetention = store.DefaultRetention
	}
	if c.StoreCapacity == 0 {
		c.StoreCapacity = store.DefaultCapacity
	}
	if c.StoreMaxBytes == 0 {
		c.StoreMaxBytes = store.DefaultMaxBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// parsed is a validated Config in libp2p types.
type parsed struct {
	listen, announce []ma.Multiaddr
	static           []peer.AddrInfo
}

// validate checks a defaulted Config and parses its addresses.
func (c Config) validate() (parsed, error) {
	var p parsed
	var errs []error
	parse := func(what string, ss []string) []ma.Multiaddr {
		var out []ma.Multiaddr
		for _, s := range ss {
			a, err := ma.NewMultiaddr(strings.TrimSpace(s))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s %q: %w", what, s, err))
				continue
			}
			out = append(out, a)
		}
		return out
	}
	p.listen = parse("listen address", c.ListenAddrs)
	p.announce = parse("announce address", c.AnnounceAddrs)
	static := parse("static peer", c.StaticPeers)
	if len(static) == len(c.StaticPeers) {
		infos, err := peer.AddrInfosFromP2pAddrs(static...)
		if err != nil {
			errs = append(errs, fmt.Errorf("static peers (each needs /p2p/<peer id>): %w", err))
		}
		p.static = infos
	}
	seen := map[uint16]bool{}
	for _, s := range c.Shards {
		if s > maxShard {
			errs = append(errs, fmt.Errorf("shard %d out of range 0..%d", s, maxShard))
		}
		if seen[s] {
			errs = append(errs, fmt.Errorf("shard %d listed twice", s))
		}
		seen[s] = true
	}
	if c.ReconnectMin <= 0 || c.ReconnectMax < c.ReconnectMin {
		errs = append(errs, fmt.Errorf("reconnect back-off %v..%v: need 0 < min <= max", c.ReconnectMin, c.ReconnectMax))
	}
	for _, u := range c.DNSDiscovery {
		if !strings.HasPrefix(u, "enrtree://") || !strings.Contains(u, "@") {
			errs = append(errs, fmt.Errorf("DNS discovery URL %q: want enrtree://<public key>@<domain>", u))
		}
	}
	if c.DiscoveryInterval < 0 {
		errs = append(errs, errors.New("discovery interval must be positive"))
	}
	if c.MaxPeers < len(p.static)+1 {
		errs = append(errs, fmt.Errorf("max peers %d: need room for the %d static peers and one more", c.MaxPeers, len(p.static)))
	}
	if c.MetadataTimeout < 0 || c.DialTimeout < 0 {
		errs = append(errs, errors.New("timeouts must be positive"))
	}
	if c.StoreRetention < 0 || c.StoreCapacity < 0 || c.StoreMaxBytes < 0 {
		errs = append(errs, errors.New("store retention, capacity and byte budget must be positive"))
	}
	if err := errors.Join(errs...); err != nil {
		return parsed{}, fmt.Errorf("waku node: config: %w", err)
	}
	return p, nil
}

// LoadOrCreateKey reads the hex secp256k1 node key in path, or creates one
// and writes it with mode 0600 when the file does not exist.
func LoadOrCreateKey(path string) (crypto.PrivKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		raw, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("waku node: node key %s: not hex: %w", path, err)
		}
		k, err := crypto.UnmarshalSecp256k1PrivateKey(raw)
		if err != nil {
			return nil, fmt.Errorf("waku node: node key %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("waku node: node key: %w", err)
	}
	k, _, err := crypto.GenerateSecp256k1Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("waku node: generating node key: %w", err)
	}
	raw, err := k.Raw()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("waku node: node key dir: %w", err)
	}
	// O_EXCL: two processes racing on first start must not end up with
	// different keys on disk and in memory.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("waku node: writing node key: %w", err)
	}
	_, werr := f.WriteString(hex.EncodeToString(raw) + "\n")
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("waku node: writing node key: %w", err)
	}
	return k, nil
}
