package store

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/archivefleet/archivefleet/internal/waku/rpc"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

// Back-fill of a community's chats from our in-memory Store v3 service, as
// the Waku edge does it (internal/wakuedge/backfill.go: 30 days, 24 h and
// at most 10 content topics per query, page size 100, forward), through a
// real libp2p stream per page between two hosts on 127.0.0.1.
//
// The store takes only messages stamped within 20 s of its clock (nwaku's
// rule, service.go), so the 30 days are put in with the store's own test
// clock (Service.now, which the service's tests replace too)
// set to each message's timestamp as it is added, in time order, exactly
// as if each had been relayed then; then the clock is set to "now" for the
// queries. Nothing in the service is changed.
//
// References, in the same round and on the same queries:
//   - direct: every page read without the network: the request the client
//     builds, Service.serve, the response encoded and decoded, and
//     the client's page checks (checkPage: every message's hash,
//     filters, order, cursor). net/direct is the cost of the libp2p
//     stream per page (multistream negotiation, yamux, noise, TCP). The
//     time inside serve alone is reported too.
//   - decode: what the edge then does with each message (rfc26 open with
//     the chat key, signer recovery, message hash: wakuedge.Record's
//     work), timed on a 1000-message sample and scaled to all received:
//     decode/net says how the back-fill's time splits.
//
// Run: go test ./internal/waku/store -run '^$' -bench StoreBackfill -benchtime 5x
// (each iteration is one round: a full back-fill and its references).

const (
	bfDays           = 30
	bfSpan           = 24 * time.Hour
	bfTopicsPerQuery = 10
	bfPageSize       = 100
	// bfPerTopicPerDay is each chat's traffic: a busy channel's day.
	bfPerTopicPerDay = 100
	bfAppBytes       = 300
	bfBurnEnv        = "WAKUPEER_BENCH_BURN"
)

func init() {
	// The loaded sub-benchmarks start copies of the test binary as CPU
	// burners (see startBurners).
	if os.Getenv(bfBurnEnv) == "1" {
		burnCPU()
	}
}

type backfillBench struct {
	client Client
	server *Service
	ai     peer.AddrInfo
	pubsub string
	topics []string
	keys   map[string][]byte // content topic -> chat key
	now    time.Time
	total  int
}

func BenchmarkStoreBackfill(b *testing.B) {
	for _, topics := range []int{2, 20} {
		b.Run(fmt.Sprintf("topics=%d", topics), func(b *testing.B) {
			f := newBackfillBench(b, topics)
			b.Run("quiet", f.run)
			burners := runtime.NumCPU()
			b.Run(fmt.Sprintf("load=%d", burners), func(b *testing.B) {
				stop := startBurners(b, burners)
				defer stop()
				f.run(b)
			})
		})
	}
}

// newBackfillBench fills a store peer with 30 days of nTopics chats'
// messages, spread at random over the 30 days, and connects a client.
func newBackfillBench(b *testing.B, nTopics int) *backfillBench {
	b.Helper()
	f := &backfillBench{pubsub: wakuwire.DefaultCommunityShard, keys: map[string][]byte{}}
	f.server = NewService(ServiceConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	srv := testenv.Libp2pHost(b, true)
	srv.SetStreamHandler(Protocol, f.server.Handle)
	f.client = Client{Host: testenv.Libp2pHost(b, false)}
	f.ai = peer.AddrInfo{ID: srv.ID(), Addrs: srv.Addrs()}
	var clock atomic.Int64
	f.server.now = func() time.Time { return time.Unix(0, clock.Load()) }

	f.now = time.Now().Truncate(time.Second)
	from := f.now.Add(-bfDays * bfSpan)
	rng := rand.New(rand.NewPCG(1, uint64(nTopics)))
	signers := make([]*secp256k1.PrivateKey, 16)
	for i := range signers {
		signers[i], _ = secp256k1.GeneratePrivateKey()
	}
	type timed struct {
		ts  int64
		msg *wakuwire.Message
	}
	var all []timed
	app := make([]byte, bfAppBytes)
	for t := range nTopics {
		chat := fmt.Sprintf("0x02%062x-bench-chat-%d", nTopics, t)
		ct := wakuwire.ChatContentTopic(chat)
		f.topics = append(f.topics, ct)
		f.keys[ct] = wakuwire.ChatKey(chat)
		for i := range bfDays * bfPerTopicPerDay {
			// Uniform over the 30 days, a second clear of either end.
			ts := from.Add(time.Second).UnixNano() + rng.Int64N(int64(bfDays*bfSpan-2*time.Second))
			for j := range app {
				app[j] = byte(rng.Uint32())
			}
			m, err := wakuwire.PublicMessageWithKey(chat, f.keys[ct], "bench-installation", app, signers[i%len(signers)], time.Unix(0, ts))
			if err != nil {
				b.Fatal(err)
			}
			all = append(all, timed{ts, m})
		}
	}
	// In time order, each added when the store's clock reads its timestamp.
	slices.SortFunc(all, func(a, b timed) int { return cmp.Compare(a.ts, b.ts) })
	for _, t := range all {
		clock.Store(t.ts)
		if !f.server.Add(f.pubsub, t.msg) {
			b.Fatalf("store refused a message at %v", time.Unix(0, t.ts))
		}
	}
	clock.Store(f.now.UnixNano())
	f.total = len(all)
	if n := f.server.Len(); n != f.total {
		b.Fatalf("store holds %d, want %d", n, f.total)
	}
	// Connected before timing, as the edge is to its store nodes.
	if _, err := f.client.Query(context.Background(), f.ai, Query{PubsubTopic: f.pubsub, Limit: 1}); err != nil {
		b.Fatal(err)
	}
	return f
}

// queries are the back-fill's queries, in backfill.go's order.
func (f *backfillBench) queries() []Query {
	var qs []Query
	for lo := f.now.Add(-bfDays * bfSpan); lo.Before(f.now); lo = lo.Add(bfSpan) {
		hi := lo.Add(bfSpan)
		if hi.After(f.now) {
			hi = f.now
		}
		for group := range slices.Chunk(f.topics, bfTopicsPerQuery) {
			qs = append(qs, Query{PubsubTopic: f.pubsub, ContentTopics: group, TimeStart: lo.UnixNano(), TimeEnd: hi.UnixNano(),
				IncludeData: true, Forward: true, Limit: bfPageSize})
		}
	}
	return qs
}

// network runs the back-fill through the libp2p stream; it returns pages,
// messages and a sample of them for decoding.
func (f *backfillBench) network(b *testing.B, qs []Query) (pages, msgs int, sample []StoredMessage) {
	step := max(1, f.total/1000)
	for _, q := range qs {
		n, err := f.client.QueryAll(context.Background(), f.ai, q, func(p Page) error {
			for _, m := range p.Messages {
				if msgs%step == 0 {
					sample = append(sample, m)
				}
				msgs++
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		pages += n
	}
	return pages, msgs, sample
}

// direct runs the same queries page by page without the network: what
// Client.Query does minus the stream and its framing.
func (f *backfillBench) direct(b *testing.B, qs []Query) (pages, msgs int, serve time.Duration) {
	for _, q := range qs {
		for {
			id, err := rpc.NewRequestID()
			if err != nil {
				b.Fatal(err)
			}
			req, err := q.request(id)
			if err != nil {
				b.Fatal(err)
			}
			wire := marshal(b, req)
			t0 := time.Now()
			resp := f.server.serve(wire)
			serve += time.Since(t0)
			got, err := decodeResponse(marshal(b, resp))
			if err != nil {
				b.Fatal(err)
			}
			if Status(got.GetStatusCode()) != Success || got.RequestId != id {
				b.Fatalf("status %d %q", got.GetStatusCode(), got.GetStatusDesc())
			}
			page, err := checkPage(req, got)
			if err != nil {
				b.Fatal(err)
			}
			pages++
			msgs += len(page.Messages)
			if page.Cursor == nil {
				break
			}
			q.Cursor = page.Cursor
		}
	}
	return pages, msgs, serve
}

// decode does Record's work on each sampled message.
func (f *backfillBench) decode(b *testing.B, sample []StoredMessage) time.Duration {
	t0 := time.Now()
	for _, m := range sample {
		env, err := wakuwire.OpenSymmetric(m.Message.Payload, f.keys[m.Message.ContentTopic])
		if err != nil || env.Signer == nil {
			b.Fatalf("undecodable: %v", err)
		}
		h := wakuwire.Hash(m.PubsubTopic, m.Message)
		if h != m.Hash {
			b.Fatal("hash differs")
		}
	}
	return time.Since(t0)
}

// run is one round per iteration: the back-fill over the network (the
// benchmark's timed part: ns/op is its wall time), then, untimed, the
// same queries served directly and the decoding sample.
func (f *backfillBench) run(b *testing.B) {
	qs := f.queries()
	var net, dir, serve, dec []float64 // ms per round
	var ratio, decRatio []float64
	var pages, msgs int
	for b.Loop() {
		t0 := time.Now()
		p, m, sample := f.network(b, qs)
		tNet := time.Since(t0)
		b.StopTimer()
		if m < f.total {
			b.Fatalf("back-fill got %d messages, the store holds %d", m, f.total)
		}
		t0 = time.Now()
		dp, dm, ts := f.direct(b, qs)
		tDir := time.Since(t0)
		if dp != p || dm != m {
			b.Fatalf("direct: %d pages %d messages; network: %d, %d", dp, dm, p, m)
		}
		tDec := time.Duration(float64(f.decode(b, sample)) * float64(m) / float64(len(sample)))
		pages, msgs = p, m
		net = append(net, ms(tNet))
		dir = append(dir, ms(tDir))
		serve = append(serve, ms(ts))
		dec = append(dec, ms(tDec))
		ratio = append(ratio, tNet.Seconds()/tDir.Seconds())
		decRatio = append(decRatio, tDec.Seconds()/tNet.Seconds())
		b.StartTimer()
	}
	b.ReportMetric(float64(len(qs)), "queries")
	b.ReportMetric(float64(pages), "pages")
	b.ReportMetric(float64(msgs), "msgs")
	report := func(v []float64, unit string) {
		lo, med, hi := spread(v)
		b.ReportMetric(lo, unit+"-min")
		b.ReportMetric(med, unit+"-med")
		b.ReportMetric(hi, unit+"-max")
	}
	report(net, "net-ms")
	report(ratio, "net/direct")
	_, medNet, _ := spread(net)
	b.ReportMetric(float64(msgs)/medNet*1e3, "net-msgs/s")
	b.ReportMetric(medNet*1e3/float64(pages), "net-µs/page")
	_, medDir, _ := spread(dir)
	b.ReportMetric(medDir, "direct-ms-med")
	_, medServe, _ := spread(serve)
	b.ReportMetric(medServe, "serve-ms-med")
	_, medDec, _ := spread(dec)
	b.ReportMetric(medDec, "decode-ms-med")
	report(decRatio, "decode/net")
}

func ms(d time.Duration) float64 { return d.Seconds() * 1e3 }

func spread(v []float64) (lo, med, hi float64) {
	s := slices.Sorted(slices.Values(v))
	med = s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[0], med, s[len(s)-1]
}

// startBurners starts n copies of the test binary spinning on a core each
// (like `stress -c n`); the returned func kills exactly those processes.
func startBurners(b *testing.B, n int) func() {
	b.Helper()
	var cmds []*exec.Cmd
	for range n {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), bfBurnEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive us
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	time.Sleep(200 * time.Millisecond)
	return func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}
}

var burnSink uint64

// burnCPU spins one core until its parent is gone.
func burnCPU() {
	runtime.GOMAXPROCS(1)
	parent := os.Getppid()
	x := uint64(1)
	for {
		for range 1 << 24 {
			x = x*6364136223846793005 + 1442695040888963407
		}
		burnSink ^= x
		if os.Getppid() != parent {
			os.Exit(0)
		}
	}
}
