// Command waku measures the Waku receive path of issue #11, round after
// round, each figure against a reference in the same round, quiet and then
// with CPU burner processes on the machine (-burners, default one per core):
//
//   - record: wakuedge.Record of Status chat messages (rfc26 AES-256-GCM
//     open with the chat key, secp256k1 signer recovery, 14/WAKU2-MESSAGE
//     hash) on one core (GOMAXPROCS 1), against the crypto floor of the same
//     messages: AES-256-GCM Open with an AEAD built once, Keccak-256 of the
//     signed part, decred's ecdsa.RecoverCompact and the SHA-256 message
//     hash — the work no implementation of Record can skip.
//   - ingest: (*messages.Store).Ingest of those records, in batches of 1000 as
//     the receiver flushes them, into an embedded NATS JetStream (file
//     storage, as the fleet runs), against the JetStream floor: the same
//     records marshalled and published asynchronously with the same
//     expected-last-sequence-0 dedup, 1000 in flight, and nothing else (no
//     registry or state look-up, no checks, no per-message bookkeeping).
//   - pipeline: the receiver's shape, one goroutine running Record and
//     queueing, another flushing to Ingest when 1000 are waiting or every
//     wakuedge.DefaultFlushEvery, both cores; reported against Record alone
//     on one core (is ingest hidden behind decryption?).
//   - chat key: wakuwire.ChatKey (PBKDF2-HMAC-SHA256, 65,356 iterations)
//     against the edge's cached look-up (a copy of wakuedge's unexported
//     keyCache: a mutex, a map and the "hit" counter), and against Record:
//     how many messages' worth of work one derivation is.
//
// It prints one JSON object (stdout) with every round's figures and, per
// condition, their min, median and max; a summary table goes to stderr.
package main

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
	ethcrypto "github.com/ethereum/go-ethereum/crypto"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/sha3"

	"github.com/archivefleet/archivefleet/bench/proc"
	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/fleet"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/wakuedge"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

// flushBatch is wakuedge's (unexported): the receiver ingests at once when
// this many records are waiting.
const flushBatch = 1000

func main() {
	proc.BurnIfAsked()
	n := flag.Int("messages", 10000, "messages per measurement per round")
	nRounds := flag.Int("rounds", 5, "rounds; each measures every figure quiet, then under load")
	burners := flag.Int("burners", runtime.NumCPU(), "CPU burner processes for the loaded half of a round; 0: quiet only")
	appSize := flag.Int("app", 300, "bytes of the application message each Waku message carries")
	derivations := flag.Int("derive", 8, "chat keys derived per round")
	flag.Parse()

	dir, err := os.MkdirTemp("", "wakubench-")
	check(err)
	defer os.RemoveAll(dir)
	ns, err := fleet.EmbeddedNATS(dir, "127.0.0.1", -1)
	check(err)
	defer fleet.StopNATS(context.Background(), ns)
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := fleet.Common{NATSURL: ns.ClientURL(), Replicas: 1}.Connect(ctx, "wakubench", quiet)
	check(err)
	defer b.NC.Close()

	// One community with its universal chat, registered as archivectl would.
	com := fixture.Community(time.Hour, uint64(time.Now().Add(-48*time.Hour).Unix()))
	check(registry.New(b.Communities).Put(ctx, com))
	st := &messages.Store{Bus: b, Logger: quiet, Communities: registry.New(b.Communities), Metrics: messages.NewMetrics(prometheus.NewRegistry())}
	refID := fixture.ID(fixture.Key()) // the JetStream floor's records go under another community's subjects

	e := &env{
		chat: registry.UniversalChatID(com.ID), pubsub: wakuwire.DefaultCommunityShard, app: *appSize,
		st: st, com: com, refID: refID, js: b.JS, next: time.Now().Add(-24 * time.Hour),
	}
	e.key = wakuwire.ChatKey(e.chat)
	for range 8 {
		k, err := secp256k1.GeneratePrivateKey()
		check(err)
		e.signers = append(e.signers, k)
	}

	conds := []string{"quiet"}
	if *burners > 0 {
		conds = append(conds, "load")
	}
	rounds := map[string][]map[string]float64{}
	for r := range *nRounds {
		for _, cond := range conds {
			var stop func()
			if cond == "load" {
				stop = startBurners(*burners)
			}
			rounds[cond] = append(rounds[cond], e.round(ctx, r, *n, *derivations))
			if stop != nil {
				stop()
			}
			log.Printf("round %d %s done", r+1, cond)
		}
	}
	out := map[string]any{"messages_per_measurement": *n, "rounds": *nRounds, "burners": *burners, "app_bytes": *appSize,
		"payload_bytes": e.payloadBytes, "cores": runtime.NumCPU(), "go": runtime.Version()}
	for _, cond := range conds {
		c := map[string]any{"rounds": rounds[cond]}
		for k := range rounds[cond][0] {
			lo, med, hi := spread(rounds[cond], k)
			c[k] = med
			c[k+"_min"], c[k+"_max"] = lo, hi
		}
		out[cond] = c
	}
	check(json.NewEncoder(os.Stdout).Encode(out))
	summary(os.Stderr, conds, rounds, *n, e.payloadBytes)
}

// env is what every round shares.
type env struct {
	chat, pubsub string
	key          []byte
	app          int
	signers      []*secp256k1.PrivateKey
	st           *messages.Store
	com          *registry.Community
	refID        archive.CommunityID
	js           jetstream.JetStream
	next         time.Time // timestamp of the next message made
	payloadBytes int
}

// messages makes n Status chat messages as a member's client sends them
// (PublicMessageWithKey: WrapPublic, rfc26 sealed and signed), each new:
// fresh nonce and padding, so a fresh hash.
func (e *env) messages(n int) []*wakuwire.Message {
	out := make([]*wakuwire.Message, n)
	app := make([]byte, e.app)
	for i := range out {
		rand.Read(app)
		m, err := wakuwire.PublicMessageWithKey(e.chat, e.key, "wakubench-installation", app, e.signers[i%len(e.signers)], e.next)
		check(err)
		e.next = e.next.Add(time.Millisecond)
		out[i] = m
	}
	e.payloadBytes = len(out[0].Payload)
	return out
}

// round measures every figure once. A figure and its reference run
// interleaved, chunk by chunk, the side that goes first alternating, so
// both see the same machine and neither always has the warmer cache.
func (e *env) round(ctx context.Context, r, n, derivations int) map[string]float64 {
	res := map[string]float64{}
	msgs := e.messages(n)
	perMsg := func(d time.Duration) float64 { return d.Seconds() / float64(n) }

	// Record vs the crypto floor, one core, interleaved in chunks so both
	// see the same machine (a burner's share of the cores moves).
	prev := runtime.GOMAXPROCS(1)
	recs := make([]archive.Message, 0, n)
	var rec, floor time.Duration
	for k, chunk := 0, msgs; len(chunk) > 0; k++ {
		c := chunk[:min(len(chunk), 250)]
		chunk = chunk[len(c):]
		if (r+k)%2 == 0 {
			rs, d := e.record(c)
			recs, rec = append(recs, rs...), rec+d
			floor += e.cryptoFloor(c)
		} else {
			floor += e.cryptoFloor(c)
			rs, d := e.record(c)
			recs, rec = append(recs, rs...), rec+d
		}
	}
	sub := msgs[:min(n, 2000)]
	gcm, recov, libsecp := e.components(sub)
	runtime.GOMAXPROCS(prev)
	res["record_us"] = perMsg(rec) * 1e6
	res["crypto_floor_us"] = perMsg(floor) * 1e6
	res["record_msgs_per_s"] = 1 / perMsg(rec)
	res["crypto_floor_msgs_per_s"] = 1 / perMsg(floor)
	res["record_over_crypto_floor"] = rec.Seconds() / floor.Seconds()
	res["gcm_open_us"] = gcm.Seconds() / float64(len(sub)) * 1e6
	res["recover_us"] = recov.Seconds() / float64(len(sub)) * 1e6
	res["recover_libsecp256k1_us"] = libsecp.Seconds() / float64(len(sub)) * 1e6

	// Ingest vs the JetStream floor, both cores (NATS is in this process),
	// interleaved batch by batch.
	var ing, jsf time.Duration
	for k, batch := 0, recs; len(batch) > 0; k++ {
		c := batch[:min(len(batch), flushBatch)]
		batch = batch[len(c):]
		if (r+k)%2 == 0 {
			ing += e.ingest(ctx, c)
			jsf += e.jetStreamFloor(ctx, c)
		} else {
			jsf += e.jetStreamFloor(ctx, c)
			ing += e.ingest(ctx, c)
		}
	}
	res["ingest_msgs_per_s"] = 1 / perMsg(ing)
	res["jetstream_floor_msgs_per_s"] = 1 / perMsg(jsf)
	res["ingest_over_jetstream_floor"] = ing.Seconds() / jsf.Seconds()

	// The receiver's pipeline on fresh messages.
	pipe := e.pipeline(ctx, e.messages(n))
	res["pipeline_msgs_per_s"] = 1 / perMsg(pipe)
	res["pipeline_over_record_1core"] = pipe.Seconds() / rec.Seconds()

	// Chat key: derive vs cached look-up (one core, like Record).
	runtime.GOMAXPROCS(1)
	derive, lookup := e.chatKeys(r, derivations)
	runtime.GOMAXPROCS(prev)
	res["chatkey_derive_ms"] = derive.Seconds() * 1e3
	res["chatkey_lookup_ns"] = float64(lookup.Nanoseconds())
	res["derive_over_lookup"] = derive.Seconds() / lookup.Seconds()
	res["derive_over_record"] = derive.Seconds() / perMsg(rec)
	res["msgs_per_s_deriving_each_message"] = 1 / (derive.Seconds() + perMsg(rec))
	return res
}

func (e *env) record(msgs []*wakuwire.Message) ([]archive.Message, time.Duration) {
	recs := make([]archive.Message, len(msgs))
	t0 := time.Now()
	for i, m := range msgs {
		rec, err := wakuedge.Record(e.pubsub, m, e.chat, e.key)
		check(err)
		recs[i] = rec
	}
	return recs, time.Since(t0)
}

var sink byte

// cryptoFloor is the work Record cannot skip, done as bare as Go allows:
// GCM Open into a reused buffer with an AEAD built once, Keccak-256 of the
// signed plaintext, RecoverCompact and the SHA-256 message hash.
func (e *env) cryptoFloor(msgs []*wakuwire.Message) time.Duration {
	aead := gcm(e.key)
	buf := make([]byte, 0, 64<<10)
	kh := sha3.NewLegacyKeccak256()
	var digest [32]byte
	var compact [65]byte
	t0 := time.Now()
	for _, m := range msgs {
		p := m.Payload
		split := len(p) - 12
		plain, err := aead.Open(buf[:0], p[split:], p[:split], nil)
		check(err)
		end := len(plain) - 65
		kh.Reset()
		kh.Write(plain[:end])
		kh.Sum(digest[:0])
		compact[0] = plain[end+64] + 27
		copy(compact[1:], plain[end:end+64])
		pub, _, err := ecdsa.RecoverCompact(compact[:], digest[:])
		check(err)
		h := wakuwire.Hash(e.pubsub, m)
		sink ^= h[0] ^ byte(pub.X().Bits()[0])
	}
	return time.Since(t0)
}

// components times the floor's two big parts alone: GCM Open, and recovery
// from a precomputed digest; and, for comparison, the same recovery by
// libsecp256k1 (go-ethereum's crypto.Ecrecover, cgo; status-go's path).
func (e *env) components(msgs []*wakuwire.Message) (open, recov, libsecp time.Duration) {
	aead := gcm(e.key)
	buf := make([]byte, 0, 64<<10)
	type sig struct{ compact, digest, rsv []byte }
	sigs := make([]sig, len(msgs)) // untimed: the recovery inputs
	for i, m := range msgs {
		p := m.Payload
		split := len(p) - 12
		plain, err := aead.Open(nil, p[split:], p[:split], nil)
		check(err)
		end := len(plain) - 65
		c := make([]byte, 65)
		c[0] = plain[end+64] + 27
		copy(c[1:], plain[end:end+64])
		kh := sha3.NewLegacyKeccak256()
		kh.Write(plain[:end])
		sigs[i] = sig{c, kh.Sum(nil), plain[end:]}
	}
	t0 := time.Now()
	for _, m := range msgs {
		p := m.Payload
		split := len(p) - 12
		plain, err := aead.Open(buf[:0], p[split:], p[:split], nil)
		check(err)
		sink ^= plain[0]
	}
	open = time.Since(t0)
	t0 = time.Now()
	for _, s := range sigs {
		pub, _, err := ecdsa.RecoverCompact(s.compact, s.digest)
		check(err)
		sink ^= byte(pub.X().Bits()[0])
	}
	recov = time.Since(t0)
	t0 = time.Now()
	for _, s := range sigs {
		pub, err := ethcrypto.Ecrecover(s.digest, s.rsv)
		check(err)
		sink ^= pub[1]
	}
	return open, recov, time.Since(t0)
}

func gcm(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	check(err)
	aead, err := cipher.NewGCM(block)
	check(err)
	return aead
}

// ingest stores recs through the fleet's ingest in the receiver's batches.
func (e *env) ingest(ctx context.Context, recs []archive.Message) time.Duration {
	t0 := time.Now()
	for batch := range slices.Chunk(recs, flushBatch) {
		res, err := e.st.Ingest(ctx, e.com.ID, batch)
		check(err)
		if res.Stored != len(batch) {
			log.Fatalf("ingest: %+v", res)
		}
	}
	return time.Since(t0)
}

// jetStreamFloor publishes the same records as messages.Ingest does
// (marshalled, timestamp header, expected last sequence 0 on the record's
// own subject, 1000 in flight) and nothing more, under another community's
// subjects so none is a duplicate.
func (e *env) jetStreamFloor(ctx context.Context, recs []archive.Message) time.Duration {
	t0 := time.Now()
	for batch := range slices.Chunk(recs, flushBatch) {
		futures := make([]jetstream.PubAckFuture, 0, len(batch))
		for i := range batch {
			m := &batch[i]
			data, err := m.MarshalBinary()
			check(err)
			hdr := nats.Header{}
			hdr.Set("Archivefleet-Ts", strconv.FormatUint(m.Timestamp, 10)) // store's headerTimestamp
			f, err := e.js.PublishMsgAsync(&nats.Msg{Subject: messages.Subject(e.refID, m.Timestamp, m.Hash), Header: hdr, Data: data},
				jetstream.WithExpectLastSequencePerSubject(0))
			check(err)
			futures = append(futures, f)
		}
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				log.Fatalf("jetstream floor: %v", err)
			case <-ctx.Done():
				log.Fatal(ctx.Err())
			}
		}
	}
	return time.Since(t0)
}

// pipeline runs the receiver's shape (wakuedge receive.go take, queue and
// flushLoop): Record and queue on one goroutine, flush to Ingest on another
// when flushBatch are waiting or every DefaultFlushEvery; it ends when the
// last record is stored.
func (e *env) pipeline(ctx context.Context, msgs []*wakuwire.Message) time.Duration {
	var mu sync.Mutex
	var pending []archive.Message
	full := make(chan struct{}, 1)
	recorded := make(chan struct{})
	stored := 0
	t0 := time.Now()
	go func() {
		for _, m := range msgs {
			rec, err := wakuedge.Record(e.pubsub, m, e.chat, e.key)
			check(err)
			mu.Lock()
			pending = append(pending, rec)
			n := len(pending)
			mu.Unlock()
			if n >= flushBatch {
				select {
				case full <- struct{}{}:
				default:
				}
			}
		}
		close(recorded)
	}()
	t := time.NewTicker(wakuedge.DefaultFlushEvery)
	defer t.Stop()
	for done := false; !done; {
		select {
		case <-full:
		case <-t.C:
		case <-recorded:
			done = true
		}
		mu.Lock()
		batch := pending
		pending = nil
		mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		res, err := e.st.Ingest(ctx, e.com.ID, batch)
		check(err)
		stored += res.Stored
	}
	if stored != len(msgs) {
		log.Fatalf("pipeline stored %d of %d", stored, len(msgs))
	}
	return time.Since(t0)
}

// keyCache copies wakuedge's (unexported) chat key cache and its chatKey:
// a mutex, a map, and the archivefleet_waku_chat_keys_total-style counter
// it increments on every hit.
type keyCache struct {
	mu   sync.Mutex
	m    map[string][]byte
	uses *prometheus.CounterVec
}

func (c *keyCache) get(chat string) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.m[chat]
	if !ok {
		k = wakuwire.ChatKey(chat)
		c.m[chat] = k
		c.uses.WithLabelValues("derived").Inc()
	} else {
		c.uses.WithLabelValues("hit").Inc()
	}
	return k
}

// chatKeys returns the mean time of one derivation (fresh chat ids) and of
// one cached look-up in a cache holding 100 chats.
func (e *env) chatKeys(r, derivations int) (derive, lookup time.Duration) {
	t0 := time.Now()
	for i := range derivations {
		k := wakuwire.ChatKey(fmt.Sprintf("%s-round%d-chat%d", e.com.ID, r, i))
		sink ^= k[0]
	}
	derive = time.Since(t0) / time.Duration(derivations)
	c := &keyCache{m: map[string][]byte{}, uses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keys"}, []string{"use"})}
	chats := make([]string, 100)
	for i := range chats {
		chats[i] = fmt.Sprintf("%s-chat%d", e.com.ID, i)
		c.m[chats[i]] = e.key // filled without deriving: only hits are timed
	}
	const lookups = 1_000_000
	t0 = time.Now()
	for i := range lookups {
		sink ^= c.get(chats[i%len(chats)])[0]
	}
	return derive, time.Since(t0) / lookups
}

// spread is the min, median and max of key over the rounds.
func spread(rounds []map[string]float64, key string) (lo, med, hi float64) {
	v := make([]float64, len(rounds))
	for i, r := range rounds {
		v[i] = r[key]
	}
	slices.Sort(v)
	med = v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return v[0], med, v[len(v)-1]
}

func summary(w io.Writer, conds []string, rounds map[string][]map[string]float64, n, payload int) {
	fmt.Fprintf(w, "\n%d rounds, %d messages per measurement, rfc26 payload %d bytes; median [min–max]\n", len(rounds[conds[0]]), n, payload)
	keys := slices.Sorted(maps.Keys(rounds[conds[0]][0]))
	fmt.Fprintf(w, "%-34s", "")
	for _, c := range conds {
		fmt.Fprintf(w, " %-36s", c)
	}
	fmt.Fprintln(w)
	for _, k := range keys {
		fmt.Fprintf(w, "%-34s", k)
		for _, c := range conds {
			lo, med, hi := spread(rounds[c], k)
			fmt.Fprintf(w, " %-36s", fmt.Sprintf("%s [%s–%s]", num(med), num(lo), num(hi)))
		}
		fmt.Fprintln(w)
	}
}

func num(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// startBurners starts n CPU burners (bench/proc) or exits.
func startBurners(n int) func() {
	stop, err := proc.StartBurners(n)
	check(err)
	return stop
}
