package fleet

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/redis/go-redis/v9"

	"github.com/archivefleet/archivefleet/internal/archiver"
	"github.com/archivefleet/archivefleet/internal/natsconf"
	"github.com/archivefleet/archivefleet/internal/placement"
	"github.com/archivefleet/archivefleet/internal/pruner"
	"github.com/archivefleet/archivefleet/internal/scheduler"
	"github.com/archivefleet/archivefleet/internal/seeder"
	"github.com/archivefleet/archivefleet/internal/waku/relay"
	wakustore "github.com/archivefleet/archivefleet/internal/waku/store"
	"github.com/archivefleet/archivefleet/internal/wakuedge"
)

// Prefix is the environment prefix of every variable.
const Prefix = natsconf.Prefix

// Common is configuration every service reads (see natsconf).
type Common = natsconf.Common

// Defaults of the services' own settings (natsconf holds the common ones).
const (
	DefaultSchedulerHTTP = "127.0.0.1:9101"
	DefaultArchiverHTTP  = "127.0.0.1:9102"
	DefaultSeederHTTP    = "127.0.0.1:9103"
	DefaultAnnouncerHTTP = "127.0.0.1:9104"
	DefaultFleetHTTP     = "127.0.0.1:9100"
	DefaultWakuHTTP      = "127.0.0.1:9105"

	// The Waku edge: go-waku's default TCP and websocket ports, status.prod's
	// cluster and default community shard. The all-in-one listens on
	// 127.0.0.1 with a random port and keeps its key in DATA_DIR.
	DefaultWakuListen         = "/ip4/0.0.0.0/tcp/60000,/ip4/0.0.0.0/tcp/60001/ws"
	DefaultFleetWakuListen    = "/ip4/127.0.0.1/tcp/0"
	DefaultWakuKeyFile        = "data/waku/nodekey"
	DefaultFleetWakuKeyFile   = "waku-nodekey" // in DATA_DIR
	DefaultWakuCluster        = wakuedge.DefaultClusterID
	DefaultWakuShards         = "32"
	DefaultWakuMinPeers       = 1
	DefaultWakuInstallationID = "archivefleet-waku"
	DefaultWakuMaxPeers       = 50 // nwaku's max-connections
	DefaultWakuReceive        = true
	DefaultWakuBackfillWindow = wakuedge.DefaultBackfillWindow
	// The store service's bounds (WAKU_STORE_SERVICE): Status store
	// nodes' 30 days, a million messages, and a memory budget.
	DefaultWakuStoreRetention = wakustore.DefaultRetention
	DefaultWakuStoreCapacity  = wakustore.DefaultCapacity
	DefaultWakuStoreMaxBytes  = ByteSize(wakustore.DefaultMaxBytes)
	// MinWakuStoreMaxBytes: a smaller budget would refuse the largest
	// relay messages outright.
	MinWakuStoreMaxBytes = ByteSize(2*relay.MaxFrameSize + 1<<10)
	// StatusProdENRTree is status.prod's EIP-1459 tree, where the fleet
	// publishes its boot nodes: the production value of
	// WAKU_DNS_DISCOVERY, set by the shipped deployments. The code default is empty so a local run never joins
	// production by accident.
	StatusProdENRTree = "enrtree://AMOJVZX4V6EXP7NTJPMAYJYST2QP6AJXYW76IU6VGJS7UVSNDYZG4@boot.prod.status.nodes.status.im"

	DefaultRedisAddr = "127.0.0.1:6379"
	DefaultWorkDir   = "data/archiver"
	DefaultSlots     = 2
	DefaultLockTTL   = archiver.DefaultLockTTL
	DefaultTrackers  = "default"

	DefaultSeedDir  = "data/seeder"
	DefaultBTListen = ":9025"

	// The services' own defaults, shown in -h.
	DefaultTick          = scheduler.DefaultTick
	DefaultRepublish     = scheduler.DefaultRepublish
	DefaultRetryAfter    = scheduler.DefaultRetryAfter
	DefaultSnapshotGrace = seeder.DefaultSnapshotGrace

	DefaultDataDir         = ".fleet"
	DefaultFleetBTListen   = "127.0.0.1:0"
	DefaultEmbeddedPort    = 4222 // NATS's standard port, where archivectl looks by default
	DefaultEmbeddedPayload = 8 << 20
	MaxEmbeddedPayload     = 64 << 20
	DefaultDemoInterval    = 20 * time.Second
	// SettleAuto, the all-in-one's default settle, resolves to a fifth of
	// the demo interval (at least MinDemoSettle) with the demo and to
	// DefaultFleetSettle without: in one process, ingest reaches the store
	// at once, so a short settle loses nothing (a later message still goes
	// into a supplement) and an operator's trigger is built within seconds.
	SettleAuto         = time.Duration(-1)
	MinDemoSettle      = time.Second
	DefaultFleetSettle = 10 * time.Second
)

// DefaultFleetTrackerListen serves the all-in-one's fleet tracker on
// loopback (a random port, logged): a standard client given its magnet
// finds the seeder through it, with no DHT.
const DefaultFleetTrackerListen = "127.0.0.1:0"

// Redis configures the lock service.
type Redis struct {
	Addr     string `envconfig:"ARCHIVEFLEET_REDIS_ADDR" desc:"Redis address (lock server)"`
	Username string `envconfig:"ARCHIVEFLEET_REDIS_USERNAME" desc:"Redis user"`
	Password string `envconfig:"ARCHIVEFLEET_REDIS_PASSWORD" desc:"Redis password" secret:"true"`
	DB       int    `envconfig:"ARCHIVEFLEET_REDIS_DB" desc:"Redis database"`
	TLS      bool   `envconfig:"ARCHIVEFLEET_REDIS_TLS" desc:"TLS to Redis"`
	TLSCA    string `envconfig:"ARCHIVEFLEET_REDIS_TLS_CA" desc:"Redis TLS root CA file"`
}

// ArchiverConfig configures cmd/archiver (which also serves message ingest).
type ArchiverConfig struct {
	Common
	Redis
	WorkDir     string        `envconfig:"ARCHIVEFLEET_WORK_DIR" desc:"local copies of community folders"`
	Slots       int           `envconfig:"ARCHIVEFLEET_SLOTS" desc:"events handled in parallel"`
	LockTTL     time.Duration `envconfig:"ARCHIVEFLEET_LOCK_TTL" desc:"lock lease, renewed every third"`
	Trackers    string        `envconfig:"ARCHIVEFLEET_TRACKERS" desc:"default (status-go's), none, or a comma list of announce URLs"`
	TrackerURL  string        `envconfig:"ARCHIVEFLEET_TRACKER_URL" desc:"the fleet tracker's public announce URLs (http://host:port/announce, udp://host:port), comma-separated: the first tier of every torrent's announce list and the magnet's first tr="`
	CreatedBy   string        `envconfig:"ARCHIVEFLEET_CREATED_BY" desc:"torrent created-by"`
	IngestToken string        `envconfig:"ARCHIVEFLEET_INGEST_TOKEN" desc:"bearer token the HTTP ingest endpoint requires" secret:"true"`
	BufferedIO  bool          `envconfig:"ARCHIVEFLEET_BUFFERED_IO" desc:"write archive data through the page cache (default: O_DIRECT where possible)"`
	// PruneGrace bounds the MESSAGES stream (see pruner.Pruner).
	PruneGrace time.Duration `envconfig:"ARCHIVEFLEET_MESSAGE_PRUNE_GRACE" desc:"remove archived messages from MESSAGES this long after their window's build is committed (0 keeps every message)"`
}

// SeederConfig configures cmd/seeder.
type SeederConfig struct {
	Common
	ID         string `envconfig:"ARCHIVEFLEET_SEEDER_ID" desc:"unique per replica"`
	DataDir    string `envconfig:"ARCHIVEFLEET_SEED_DIR" desc:"seeded files"`
	Listen     string `envconfig:"ARCHIVEFLEET_BT_LISTEN" desc:"BitTorrent TCP/uTP address"`
	PublicAddr string `envconfig:"ARCHIVEFLEET_BT_PUBLIC_ADDR" desc:"host:port peers reach (added to magnets as x.pe); default: the listen address if specific"`
	DHT        bool   `envconfig:"ARCHIVEFLEET_BT_DHT" desc:"announce on the DHT"`
	Trackers   bool   `envconfig:"ARCHIVEFLEET_BT_TRACKERS" desc:"announce to trackers"`
	// SnapshotGrace keeps superseded magnets working this long (0: off).
	SnapshotGrace time.Duration `envconfig:"ARCHIVEFLEET_SNAPSHOT_GRACE" desc:"keep serving a superseded torrent this long after its replacement (0 disables)"`
	// The seeder always lists itself on the fleet tracker's shared swarm;
	// TrackerListen also makes this replica answer announces.
	TrackerListen string `envconfig:"ARCHIVEFLEET_TRACKER_LISTEN" desc:"serve the fleet tracker (HTTP /announce and UDP, same port) here; empty: off"`
	// Replicas places each community on this many seeders (rendezvous
	// hashing over the live seeders); "all" seeds everything everywhere.
	Replicas placement.Factor `envconfig:"ARCHIVEFLEET_SEED_REPLICAS" desc:"seeders per community (a count, or all: every seeder seeds every community)"`
}

// AnnouncerConfig configures cmd/announcer.
type AnnouncerConfig struct {
	Common
	WebhookURL string `envconfig:"ARCHIVEFLEET_WEBHOOK_URL" desc:"also POST announcements as JSON here"`
	Slots      int    `envconfig:"ARCHIVEFLEET_SLOTS" desc:"events handled in parallel"`
}

// SchedulerConfig configures cmd/scheduler.
type SchedulerConfig struct {
	Common
	Tick       time.Duration `envconfig:"ARCHIVEFLEET_TICK" desc:"due-check period"`
	Republish  time.Duration `envconfig:"ARCHIVEFLEET_REPUBLISH" desc:"magnet republish cadence (0 disables)"`
	RetryAfter time.Duration `envconfig:"ARCHIVEFLEET_RETRY_AFTER" desc:"republish a due event not yet committed after this long"`
}

// Waku configures the Waku edge's relay peer and delivery (cmd/waku and the
// all-in-one).
type Waku struct {
	Listen         string        `envconfig:"ARCHIVEFLEET_WAKU_LISTEN" desc:"libp2p listen multiaddrs, comma-separated (TCP and /ws)"`
	Announce       string        `envconfig:"ARCHIVEFLEET_WAKU_ANNOUNCE" desc:"multiaddrs advertised instead of the listen ones, comma-separated"`
	KeyFile        string        `envconfig:"ARCHIVEFLEET_WAKU_KEY_FILE" desc:"node key file (hex secp256k1, created on first start); it also signs the rfc26 payloads"`
	StaticPeers    string        `envconfig:"ARCHIVEFLEET_WAKU_STATIC_PEERS" desc:"Waku relay peers to keep connected: multiaddrs with /p2p/<id>, comma-separated"`
	DNSDiscovery   string        `envconfig:"ARCHIVEFLEET_WAKU_DNS_DISCOVERY" desc:"EIP-1459 trees (enrtree://key@domain), comma-separated: their relay nodes on our shards are dialled while a shard has fewer than 6 peers"`
	Cluster        uint16        `envconfig:"ARCHIVEFLEET_WAKU_CLUSTER" desc:"Waku cluster id (16: status.prod)"`
	Shards         string        `envconfig:"ARCHIVEFLEET_WAKU_SHARDS" desc:"shard indices to relay, comma-separated; communities' shards must be among them"`
	MinPeers       int           `envconfig:"ARCHIVEFLEET_WAKU_MIN_PEERS" desc:"fewest relay peers on a community's shard to publish (else the announcement waits)"`
	InstallationID string        `envconfig:"ARCHIVEFLEET_WAKU_INSTALLATION_ID" desc:"installation id in the ProtocolMessage wrapper"`
	Receive        bool          `envconfig:"ARCHIVEFLEET_WAKU_RECEIVE" desc:"archive what the peer hears on the registered communities' chats (through ingest)"`
	MaxPeers       int           `envconfig:"ARCHIVEFLEET_WAKU_MAX_PEERS" desc:"connection limit (static peers are never trimmed)"`
	LightPushNodes string        `envconfig:"ARCHIVEFLEET_WAKU_LIGHTPUSH_NODES" desc:"lightpush v3 service nodes every announcement is also pushed to: multiaddrs with /p2p/<id>, comma-separated"`
	StoreServe     bool          `envconfig:"ARCHIVEFLEET_WAKU_STORE_SERVICE" desc:"serve Store v3 from memory (what the peer relays, within WAKU_STORE_RETENTION, WAKU_STORE_CAPACITY and WAKU_STORE_MAX_BYTES; lost on restart): for a local node or tests"`
	StoreRetention time.Duration `envconfig:"ARCHIVEFLEET_WAKU_STORE_RETENTION" desc:"the store service drops messages older than this"`
	StoreCapacity  int           `envconfig:"ARCHIVEFLEET_WAKU_STORE_CAPACITY" desc:"the store service keeps at most this many messages (the oldest go first)"`
	StoreMaxBytes  ByteSize      `envconfig:"ARCHIVEFLEET_WAKU_STORE_MAX_BYTES" desc:"the store service's memory budget (bytes or e.g. 256MiB; each message counts its size plus its content topic and 256 bytes; the oldest go first)"`
	LightPushServe bool          `envconfig:"ARCHIVEFLEET_WAKU_LIGHTPUSH_SERVICE" desc:"serve lightpush v3: relay what light clients push on our shards"`
	StoreNodes     string        `envconfig:"ARCHIVEFLEET_WAKU_STORE_NODES" desc:"Store v3 nodes back-fill asks (the union of what they hold is ingested): multiaddrs with /p2p/<id>, comma-separated"`
	BackfillWindow time.Duration `envconfig:"ARCHIVEFLEET_WAKU_BACKFILL_WINDOW" desc:"how far back a community's first back-fill reaches (store nodes keep about 30 days)"`
	ShardKeys      string        `envconfig:"ARCHIVEFLEET_WAKU_PROTECTED_SHARD_KEYS" desc:"protected shards' private keys, shard=hex key, comma-separated: messages there carry the meta signature" secret:"true"`
}

// WakuConfig configures cmd/waku.
type WakuConfig struct {
	Common
	Waku
}

// AllInOneConfig configures cmd/fleet: every service in one process around an
// embedded NATS server, with no external service needed.
type AllInOneConfig struct {
	Common
	DataDir       string        `envconfig:"ARCHIVEFLEET_DATA_DIR" desc:"all-in-one state"`
	NATSPort      int           `envconfig:"ARCHIVEFLEET_EMBEDDED_NATS_PORT" desc:"embedded NATS port on 127.0.0.1 (-1: random)"`
	MaxPayload    ByteSize      `envconfig:"ARCHIVEFLEET_EMBEDDED_NATS_MAX_PAYLOAD" desc:"embedded NATS max message size (bytes or e.g. 8MiB; at most 64MiB)"`
	BTListen      string        `envconfig:"ARCHIVEFLEET_BT_LISTEN" desc:"BitTorrent TCP/uTP address"`
	BTPublic      string        `envconfig:"ARCHIVEFLEET_BT_PUBLIC_ADDR" desc:"host:port peers reach (added to magnets as x.pe)"`
	TrackerListen string        `envconfig:"ARCHIVEFLEET_TRACKER_LISTEN" desc:"serve the fleet tracker (HTTP /announce and UDP, same port) here; empty: off"`
	TrackerURL    string        `envconfig:"ARCHIVEFLEET_TRACKER_URL" desc:"the tracker's public announce URLs, first in every torrent and magnet (default with TRACKER_LISTEN: http://<listen address>/announce)"`
	Trackers      string        `envconfig:"ARCHIVEFLEET_TRACKERS" desc:"after the fleet tracker: default (status-go's), none, or a comma list of announce URLs"`
	Tick          time.Duration `envconfig:"ARCHIVEFLEET_TICK" desc:"due-check period"`
	Republish     time.Duration `envconfig:"ARCHIVEFLEET_REPUBLISH" desc:"magnet republish cadence (0 disables)"`
	SnapshotGrace time.Duration `envconfig:"ARCHIVEFLEET_SNAPSHOT_GRACE" desc:"keep serving a superseded torrent this long after its replacement (0 disables)"`
	PruneGrace    time.Duration `envconfig:"ARCHIVEFLEET_MESSAGE_PRUNE_GRACE" desc:"remove archived messages from MESSAGES this long after their window's build is committed (0 keeps every message)"`
	WebhookURL    string        `envconfig:"ARCHIVEFLEET_WEBHOOK_URL" desc:"also POST announcements as JSON here"`
	IngestToken   string        `envconfig:"ARCHIVEFLEET_INGEST_TOKEN" desc:"bearer token the HTTP ingest endpoint requires" secret:"true"`
	Waku
	Demo      bool          `envconfig:"ARCHIVEFLEET_DEMO" desc:"register a generated demo community and ingest messages as time passes"`
	DemoEvery time.Duration `envconfig:"ARCHIVEFLEET_DEMO_INTERVAL" desc:"the demo community's archive interval"`

	logOut io.Writer // tests capture the logs; nil is stderr
}

// DefaultRedis returns the Redis defaults.
func DefaultRedis() Redis { return Redis{Addr: DefaultRedisAddr} }

// DefaultArchiverConfig returns the archiver's defaults.
func DefaultArchiverConfig() ArchiverConfig {
	c := ArchiverConfig{Common: natsconf.DefaultCommon(), Redis: DefaultRedis(), WorkDir: DefaultWorkDir, Slots: DefaultSlots,
		LockTTL: DefaultLockTTL, Trackers: DefaultTrackers, PruneGrace: pruner.DefaultGrace}
	c.HTTPAddr = DefaultArchiverHTTP
	return c
}

// DefaultSeederConfig returns the seeder's defaults; its id is the host name.
func DefaultSeederConfig() SeederConfig {
	host, _ := os.Hostname()
	c := SeederConfig{Common: natsconf.DefaultCommon(), ID: host, DataDir: DefaultSeedDir, Listen: DefaultBTListen, DHT: true, Trackers: true,
		SnapshotGrace: DefaultSnapshotGrace, Replicas: seeder.DefaultReplicas}
	c.HTTPAddr = DefaultSeederHTTP
	return c
}

// DefaultAnnouncerConfig returns the announcer's defaults.
func DefaultAnnouncerConfig() AnnouncerConfig {
	c := AnnouncerConfig{Common: natsconf.DefaultCommon(), Slots: DefaultSlots}
	c.HTTPAddr = DefaultAnnouncerHTTP
	return c
}

// DefaultSchedulerConfig returns the scheduler's defaults.
func DefaultSchedulerConfig() SchedulerConfig {
	c := SchedulerConfig{Common: natsconf.DefaultCommon(), Tick: DefaultTick, Republish: DefaultRepublish, RetryAfter: DefaultRetryAfter}
	c.HTTPAddr = DefaultSchedulerHTTP
	return c
}

// DefaultWaku returns the Waku edge's defaults.
func DefaultWaku() Waku {
	return Waku{Listen: DefaultWakuListen, KeyFile: DefaultWakuKeyFile, Cluster: DefaultWakuCluster, Shards: DefaultWakuShards,
		MinPeers: DefaultWakuMinPeers, InstallationID: DefaultWakuInstallationID, MaxPeers: DefaultWakuMaxPeers,
		Receive: DefaultWakuReceive, BackfillWindow: DefaultWakuBackfillWindow,
		StoreRetention: DefaultWakuStoreRetention, StoreCapacity: DefaultWakuStoreCapacity, StoreMaxBytes: DefaultWakuStoreMaxBytes}
}

// DefaultWakuConfig returns the Waku edge service's defaults.
func DefaultWakuConfig() WakuConfig {
	c := WakuConfig{Common: natsconf.DefaultCommon(), Waku: DefaultWaku()}
	c.HTTPAddr = DefaultWakuHTTP
	return c
}

// DefaultAllInOneConfig returns the all-in-one's defaults: its Waku edge
// listens on 127.0.0.1 (random port), keeps its key in DATA_DIR and
// publishes with no peer (MIN_PEERS 0), so it works offline.
func DefaultAllInOneConfig() AllInOneConfig {
	w := DefaultWaku()
	w.Listen, w.KeyFile, w.MinPeers = DefaultFleetWakuListen, "", 0
	c := AllInOneConfig{Common: natsconf.DefaultCommon(), DataDir: DefaultDataDir, NATSPort: DefaultEmbeddedPort,
		MaxPayload: DefaultEmbeddedPayload, BTListen: DefaultFleetBTListen, Tick: DefaultTick, Republish: DefaultRepublish,
		SnapshotGrace: DefaultSnapshotGrace, PruneGrace: pruner.DefaultGrace, Waku: w, Demo: true, DemoEvery: DefaultDemoInterval}
	c.HTTPAddr = DefaultFleetHTTP
	c.TrackerListen, c.Trackers = DefaultFleetTrackerListen, DefaultTrackers
	c.Settle = SettleAuto
	return c
}

// UsageDefaults shows the all-in-one's automatic settle and its key file
// in DATA_DIR in -h.
func (c AllInOneConfig) UsageDefaults() map[string]string {
	out := map[string]string{}
	if c.Settle == SettleAuto {
		out[Prefix+"_SETTLE"] = fmt.Sprintf("auto: DEMO_INTERVAL/5 (at least %v) with the demo, else %v", MinDemoSettle, DefaultFleetSettle)
	}
	if c.KeyFile == "" {
		out[Prefix+"_WAKU_KEY_FILE"] = "DATA_DIR/" + DefaultFleetWakuKeyFile
	}
	if c.TrackerURL == "" && c.TrackerListen != "" {
		out[Prefix+"_TRACKER_URL"] = "http://<TRACKER_LISTEN's address>/announce"
	}
	return out
}

// Validate checks the Waku edge service's settings.
func (c WakuConfig) Validate() error {
	return errors.Join(c.Common.Validate(), natsconf.NonEmpty("HTTP_ADDR", c.HTTPAddr), natsconf.NonEmpty("WAKU_KEY_FILE", c.KeyFile),
		c.Waku.Validate())
}

// Validate checks the Waku settings.
func (w Waku) Validate() error {
	errs := []error{natsconf.NonEmpty("WAKU_LISTEN", w.Listen), natsconf.NotNegative("WAKU_MIN_PEERS", w.MinPeers)}
	if w.BackfillWindow <= 0 {
		errs = append(errs, natsconf.Bad("WAKU_BACKFILL_WINDOW", w.BackfillWindow.String(), "must be positive"))
	}
	if w.StoreNodes != "" && !w.Receive {
		errs = append(errs, natsconf.Bad("WAKU_STORE_NODES", w.StoreNodes, "back-fill ingests what it fetches: it needs WAKU_RECEIVE=true"))
	}
	if w.MaxPeers < 1 {
		errs = append(errs, natsconf.Bad("WAKU_MAX_PEERS", strconv.Itoa(w.MaxPeers), "must be at least 1"))
	}
	if w.StoreRetention <= 0 {
		errs = append(errs, natsconf.Bad("WAKU_STORE_RETENTION", w.StoreRetention.String(), "must be positive"))
	}
	errs = append(errs, natsconf.AtLeast("WAKU_STORE_CAPACITY", w.StoreCapacity, 1))
	if w.StoreMaxBytes < MinWakuStoreMaxBytes {
		errs = append(errs, natsconf.Bad("WAKU_STORE_MAX_BYTES", w.StoreMaxBytes, "must be at least "+MinWakuStoreMaxBytes.String()+" (two of the largest relay messages)"))
	}
	if _, err := w.ShardList(); err != nil {
		errs = append(errs, err)
	}
	if _, err := w.ShardKeyMap(); err != nil {
		errs = append(errs, err)
	}
	for _, u := range splitList(w.DNSDiscovery) {
		if !strings.HasPrefix(u, "enrtree://") || !strings.Contains(u, "@") {
			errs = append(errs, natsconf.Bad("WAKU_DNS_DISCOVERY", u, "want enrtree://<public key>@<domain>"))
		}
	}
	for _, v := range []struct{ name, val string }{{"WAKU_LISTEN", w.Listen}, {"WAKU_ANNOUNCE", w.Announce}, {"WAKU_STATIC_PEERS", w.StaticPeers},
		{"WAKU_LIGHTPUSH_NODES", w.LightPushNodes}, {"WAKU_STORE_NODES", w.StoreNodes}} {
		for _, a := range splitList(v.val) {
			m, err := ma.NewMultiaddr(a)
			if err != nil {
				errs = append(errs, natsconf.Bad(v.name, a, "not a multiaddr: "+err.Error()))
				continue
			}
			if v.name != "WAKU_LISTEN" && v.name != "WAKU_ANNOUNCE" {
				if _, err := peer.AddrInfoFromP2pAddr(m); err != nil {
					errs = append(errs, natsconf.Bad(v.name, a, "needs /p2p/<peer id>"))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// ShardKeyMap parses WAKU_PROTECTED_SHARD_KEYS ("shard=hex key,..."). Every
// shard named must be relayed (WAKU_SHARDS). The keys never appear in errors.
func (w Waku) ShardKeyMap() (map[uint16]*secp256k1.PrivateKey, error) {
	shards, _ := w.ShardList()
	out := map[uint16]*secp256k1.PrivateKey{}
	for i, kv := range splitList(w.ShardKeys) {
		s, k, found := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
		if !found || err != nil || !slices.Contains(shards, uint16(n)) {
			return nil, natsconf.Bad("WAKU_PROTECTED_SHARD_KEYS", fmt.Sprintf("entry %d", i+1), "each entry is shard=hex key, with a shard from WAKU_SHARDS")
		}
		raw, err := hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(k), "0x"))
		if err != nil || len(raw) != 32 {
			return nil, natsconf.Bad("WAKU_PROTECTED_SHARD_KEYS", s+"=…", "the key must be 32 bytes of hex")
		}
		if _, dup := out[uint16(n)]; dup {
			return nil, natsconf.Bad("WAKU_PROTECTED_SHARD_KEYS", s, "shard listed twice")
		}
		out[uint16(n)] = secp256k1.PrivKeyFromBytes(raw)
	}
	return out, nil
}

// LightPushPeers parses WAKU_LIGHTPUSH_NODES.
func (w Waku) LightPushPeers() ([]peer.AddrInfo, error) {
	return addrInfos("WAKU_LIGHTPUSH_NODES", w.LightPushNodes)
}

// StorePeers parses WAKU_STORE_NODES.
func (w Waku) StorePeers() ([]peer.AddrInfo, error) {
	return addrInfos("WAKU_STORE_NODES", w.StoreNodes)
}

// addrInfos parses a comma-separated list of multiaddrs with /p2p/<id>.
func addrInfos(name, list string) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	for _, a := range splitList(list) {
		ai, err := peer.AddrInfoFromString(a)
		if err != nil {
			return nil, natsconf.Bad(name, a, "needs a multiaddr with /p2p/<peer id>")
		}
		out = append(out, *ai)
	}
	return out, nil
}

// ShardList parses WAKU_SHARDS.
func (w Waku) ShardList() ([]uint16, error) {
	var out []uint16
	for _, s := range splitList(w.Shards) {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || n > 1023 || slices.Contains(out, uint16(n)) {
			return nil, natsconf.Bad("WAKU_SHARDS", w.Shards, "must be distinct shard indices 0..1023, comma-separated")
		}
		out = append(out, uint16(n))
	}
	if len(out) == 0 {
		return nil, natsconf.Bad("WAKU_SHARDS", `""`, "empty")
	}
	return out, nil
}

// splitList splits a comma-separated setting, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Validate checks the archiver's settings.
func (c ArchiverConfig) Validate() error {
	return errors.Join(c.Common.Validate(), c.Redis.Validate(), natsconf.NonEmpty("WORK_DIR", c.WorkDir),
		natsconf.NonEmpty("HTTP_ADDR", c.HTTPAddr), natsconf.AtLeast("SLOTS", c.Slots, 1),
		natsconf.AtLeast("LOCK_TTL", c.LockTTL, time.Second), natsconf.NotNegative("MESSAGE_PRUNE_GRACE", c.PruneGrace),
		ingestIdentity(c.HTTPAddr, c.IngestToken))
}

// ingestIdentity refuses ingest that anyone on the network could use: an
// HTTP address other hosts reach needs INGEST_TOKEN (which NATS ingest then
// requires too). On loopback only local processes reach it.
func ingestIdentity(addr, token string) error {
	if token != "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil // HTTP_ADDR's own check reports it
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() || host == "localhost" {
		return nil
	}
	return natsconf.Bad("INGEST_TOKEN", `""`, "is required when HTTP_ADDR ("+addr+") is reachable from other hosts: ingest would accept anyone's messages")
}

// Validate checks the Redis settings.
func (r Redis) Validate() error {
	if err := natsconf.NotNegative("REDIS_DB", r.DB); err != nil {
		return err
	}
	return natsconf.NonEmpty("REDIS_ADDR", r.Addr)
}

// Validate checks the seeder's settings.
func (c SeederConfig) Validate() error {
	return errors.Join(c.Common.Validate(), natsconf.NonEmpty("SEEDER_ID", c.ID), natsconf.NonEmpty("SEED_DIR", c.DataDir),
		natsconf.NonEmpty("BT_LISTEN", c.Listen), natsconf.NonEmpty("HTTP_ADDR", c.HTTPAddr), natsconf.NotNegative("SNAPSHOT_GRACE", c.SnapshotGrace))
}

// Validate checks the announcer's settings.
func (c AnnouncerConfig) Validate() error {
	return errors.Join(c.Common.Validate(), natsconf.NonEmpty("HTTP_ADDR", c.HTTPAddr), natsconf.AtLeast("SLOTS", c.Slots, 1))
}

// Validate checks the scheduler's settings.
func (c SchedulerConfig) Validate() error {
	return errors.Join(c.Common.Validate(), natsconf.NonEmpty("HTTP_ADDR", c.HTTPAddr), validateSchedule(c.Tick, c.Republish),
		natsconf.AtLeast("RETRY_AFTER", c.RetryAfter, time.Second))
}

// validateSchedule checks the scheduling settings the scheduler and the
// all-in-one share.
func validateSchedule(tick, republish time.Duration) error {
	return errors.Join(natsconf.AtLeast("TICK", tick, 10*time.Millisecond), natsconf.NotNegative("REPUBLISH", republish))
}

// Validate checks the all-in-one's settings.
func (c AllInOneConfig) Validate() error {
	com := c.Common
	com.Settle = c.settle()
	errs := []error{com.Validate(), natsconf.NonEmpty("DATA_DIR", c.DataDir), natsconf.NonEmpty("BT_LISTEN", c.BTListen),
		natsconf.NonEmpty("HTTP_ADDR", c.HTTPAddr), natsconf.NotNegative("MESSAGE_PRUNE_GRACE", c.PruneGrace),
		ingestIdentity(c.HTTPAddr, c.IngestToken)}
	if c.NATSPort < -1 || c.NATSPort > 65535 {
		errs = append(errs, natsconf.Bad("EMBEDDED_NATS_PORT", c.NATSPort, "must be a port, 0 or -1 (random)"))
	}
	if c.MaxPayload < 1024 || c.MaxPayload > MaxEmbeddedPayload {
		errs = append(errs, natsconf.Bad("EMBEDDED_NATS_MAX_PAYLOAD", c.MaxPayload, "must be between 1KiB and 64MiB"))
	}
	errs = append(errs, validateSchedule(c.Tick, c.Republish), natsconf.NotNegative("SNAPSHOT_GRACE", c.SnapshotGrace), c.Waku.Validate())
	if c.Demo && (c.DemoEvery < 2*time.Second || c.DemoEvery%time.Second != 0) {
		errs = append(errs, natsconf.Bad("DEMO_INTERVAL", c.DemoEvery, "must be a whole number of seconds, at least 2s"))
	}
	return errors.Join(errs...)
}

// settle resolves SettleAuto.
func (c AllInOneConfig) settle() time.Duration {
	if c.Settle != SettleAuto {
		return c.Settle
	}
	if c.Demo {
		return max(c.DemoEvery/5, MinDemoSettle)
	}
	return DefaultFleetSettle
}

// ByteSize is a size in bytes, read as a plain number or with a unit:
// KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024); a bare
// K, M or G is a power of 1024, as in NATS's configuration.
type ByteSize int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
}

// UnmarshalText parses "8388608", "8MiB", "8MB", "512K" (envconfig reads
// ARCHIVEFLEET_EMBEDDED_NATS_MAX_PAYLOAD with it).
func (b *ByteSize) UnmarshalText(t []byte) error {
	s := strings.ToUpper(strings.TrimSpace(string(t)))
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("not a size (e.g. 8388608, 8MiB, 8MB)")
	}
	*b = ByteSize(n * mult)
	return nil
}

// String writes whole MiB or KiB as such, else bytes.
func (b ByteSize) String() string {
	switch {
	case b > 0 && b%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", b>>20)
	case b > 0 && b%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", b>>10)
	}
	return strconv.FormatInt(int64(b), 10)
}

// Client opens the Redis client.
func (r Redis) Client() (*redis.Client, error) {
	o := &redis.Options{Addr: r.Addr, Username: r.Username, Password: r.Password, DB: r.DB}
	if r.TLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if r.TLSCA != "" {
			pem, err := os.ReadFile(r.TLSCA)
			if err != nil {
				return nil, fmt.Errorf("redis tls ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("redis tls ca %s: no certificate", r.TLSCA)
			}
			tc.RootCAs = pool
		}
		o.TLSConfig = tc
	}
	return redis.NewClient(o), nil
}
