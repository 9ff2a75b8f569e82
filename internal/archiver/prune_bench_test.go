package archiver

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/lock"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/pruner"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

var (
	storeBenchDays  = flag.Int("messages.days", 35, "BenchmarkMessageStoreSize: simulated days")
	storeBenchComs  = flag.Int("messages.communities", 10, "BenchmarkMessageStoreSize: communities")
	storeBenchPer   = flag.Int("messages.perday", 500, "BenchmarkMessageStoreSize: messages per community per day")
	storeBenchGrace = flag.Duration("messages.grace", pruner.DefaultGrace, "BenchmarkMessageStoreSize: prune grace (simulated)")
	storeBenchJSON  = flag.String("messages.json", "", "BenchmarkMessageStoreSize: also write the figures here as JSON")
)

// storeSize is the MESSAGES stream's size at one moment.
type storeSize struct {
	Msgs     uint64 `json:"msgs"`
	Bytes    uint64 `json:"bytes"`
	Subjects uint64 `json:"subjects"`
	// Disk is what the stream's files take (blocks with removed records
	// are compacted by the server as it goes).
	Disk int64 `json:"disk"`
}

// storeDay is one simulated day's end: both stores and what is still open.
type storeDay struct {
	Day     int       `json:"day"`
	Raw     storeSize `json:"raw"`
	Bounded storeSize `json:"bounded"`
	// Open counts the messages of windows not yet archived.
	Open int `json:"open"`
}

// BenchmarkMessageStoreSize ingests K messages (256-byte payloads) per
// community per simulated UTC day for D days, builds each community's
// weekly windows (ending 05:00 UTC, built at end + 2 min as the scheduler
// does with SETTLE=2m) and prints the MESSAGES stream's size at the end of
// every day, with every record kept (MESSAGE_RETENTION=0, prune off) and with
// the bounded store (the records a state archived removed once grace has
// passed since its commit, as the Pruner does). Both stores get the same
// messages and builds.
//
//	go test ./internal/archiver -run '^$' -bench MessageStoreSize -benchtime 1x \
//	  -args -messages.days 35 -messages.communities 10 -messages.perday 500 -messages.json /tmp/messages.json
func BenchmarkMessageStoreSize(b *testing.B) {
	for range b.N {
		days := messageStoreSize(b, *storeBenchDays, *storeBenchComs, *storeBenchPer, *storeBenchGrace)
		last := days[len(days)-1]
		b.ReportMetric(float64(last.Raw.Bytes), "raw-bytes")
		b.ReportMetric(float64(last.Bounded.Bytes), "bounded-bytes")
		if *storeBenchJSON != "" {
			out, _ := json.MarshalIndent(map[string]any{"days": *storeBenchDays, "communities": *storeBenchComs,
				"perDay": *storeBenchPer, "payloadBytes": 256, "interval": "168h", "grace": storeBenchGrace.String(),
				"settle": "2m", "figures": days}, "", " ")
			if err := os.WriteFile(*storeBenchJSON, out, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// simStore is one fleet of the benchmark: a bus, its message store and an
// archiver building from it.
type simStore struct {
	dir string // the server's JetStream store
	b   *bus.Bus
	st  *messages.Store
	s   *Service
}

func newSimStore(b *testing.B, coms []*registry.Community) *simStore {
	ns := testenv.NATS(b)
	bb := testenv.Bus(b, ns, bus.Config{})
	reg := registry.New(bb.Communities)
	for _, com := range coms {
		if err := reg.Put(context.Background(), com); err != nil {
			b.Fatal(err)
		}
	}
	st := &messages.Store{Bus: bb, Logger: testenv.Logger()}
	return &simStore{dir: ns.StoreDir(), b: bb, st: st, s: New(Service{Bus: bb, Registry: reg, State: &state.Store{KV: bb.State}, Sources: st,
		Locker: lock.NewLocal(), Config: Config{WorkDir: b.TempDir(), AnnounceList: [][]string{}}, Logger: testenv.Logger()},
		prometheus.NewRegistry())}
}

func (ss *simStore) size(b *testing.B) storeSize {
	str, err := ss.b.JS.Stream(context.Background(), bus.StreamMessages)
	if err != nil {
		b.Fatal(err)
	}
	st := str.CachedInfo().State
	var disk int64
	filepath.WalkDir(ss.dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(path, string(filepath.Separator)+bus.StreamMessages+string(filepath.Separator)) {
			if fi, err := d.Info(); err == nil {
				disk += fi.Size()
			}
		}
		return nil
	})
	return storeSize{Msgs: st.Msgs, Bytes: st.Bytes, Subjects: st.NumSubjects, Disk: disk}
}

func messageStoreSize(b *testing.B, days, ncoms, perDay int, grace time.Duration) []storeDay {
	b.Helper()
	ctx := context.Background()
	const (
		day      = 86400
		interval = 7 * day
		settle   = 120
	)
	day0 := (uint64(time.Now().Unix())/day - uint64(days) - 1) * day
	since := day0 + 5*3600 // windows end at 05:00 UTC, so each end's day holds both sides
	var coms []*registry.Community
	var keys [][]byte
	for range ncoms {
		k := fixture.Key()
		keys = append(keys, k)
		coms = append(coms, fixture.CommunityFromKey(k, interval*time.Second, since, archive.Topic{1}))
	}
	raw, bounded := newSimStore(b, coms), newSimStore(b, coms)
	type commit struct {
		at  uint64 // simulated commit time
		cut messages.Cutoff
	}
	commits := make([][]commit, ncoms)
	pruned := make([]messages.Cutoff, ncoms)
	built := make([]uint64, ncoms) // last window end built
	stamps := make([][]uint64, ncoms)
	var pruneTime time.Duration
	var prunes, pruneRecs, pruneScanned int
	var out []storeDay
	var table strings.Builder
	fmt.Fprintf(&table, "| day | open-window msgs | raw msgs | raw MB | raw subjects | raw disk MB | bounded msgs | bounded MB | bounded subjects | bounded disk MB |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for d := range days {
		start := day0 + uint64(d)*day
		for i, com := range coms {
			msgs := fixture.Messages{N: perDay, From: max(start, since), To: start + day, Topics: com.Topics,
				Signers: [][]byte{fixture.Signer(keys[i])}, Size: 256}.Make()
			for _, m := range msgs {
				stamps[i] = append(stamps[i], m.Timestamp)
			}
			for _, ss := range []*simStore{raw, bounded} {
				if res, err := ss.st.Ingest(ctx, com.ID, msgs); err != nil || res.Stored != len(msgs) {
					b.Fatalf("ingest day %d: %+v %v", d, res, err)
				}
			}
		}
		now := start + day // the simulated clock at the end of the day
		for i, com := range coms {
			for next := max(built[i], since) + interval; next+settle <= now; next += interval {
				var cut messages.Cutoff
				for _, ss := range []*simStore{raw, bounded} {
					fence := int64(next / interval)
					if _, err := ss.s.build(ctx, ss.s.Logger, com, bus.DueEvent{Community: com.ID.String(), End: next}, fence); err != nil {
						b.Fatal(err)
					}
					st, _, err := ss.s.State.GetBuild(ctx, com.ID.String())
					if err != nil {
						b.Fatal(err)
					}
					cut, _ = messages.CutoffOf(st)
				}
				commits[i] = append(commits[i], commit{at: next + settle, cut: cut})
				built[i] = next
			}
			// The Pruner: the latest state past its grace, if not pruned yet.
			for j := len(commits[i]) - 1; j >= 0; j-- {
				c := commits[i][j]
				if c.at+uint64(grace/time.Second) <= now {
					if c.cut.Covers(pruned[i]) {
						t0 := time.Now()
						ps, err := bounded.st.Prune(ctx, com.ID, c.cut)
						if err != nil {
							b.Fatal(err)
						}
						pruneTime += time.Since(t0)
						prunes, pruneRecs, pruneScanned = prunes+1, pruneRecs+ps.Records, pruneScanned+ps.Scanned
						pruned[i] = c.cut
					}
					break
				}
			}
		}
		open := 0
		for i := range coms {
			for _, ts := range stamps[i] {
				if ts >= built[i] {
					open++
				}
			}
		}
		row := storeDay{Day: d + 1, Raw: raw.size(b), Bounded: bounded.size(b), Open: open}
		out = append(out, row)
		fmt.Fprintf(&table, "| %d | %d | %d | %.1f | %d | %.1f | %d | %.1f | %d | %.1f |\n", row.Day, row.Open, row.Raw.Msgs, float64(row.Raw.Bytes)/1e6,
			row.Raw.Subjects, float64(row.Raw.Disk)/1e6, row.Bounded.Msgs, float64(row.Bounded.Bytes)/1e6, row.Bounded.Subjects,
			float64(row.Bounded.Disk)/1e6)
	}
	// Printed, not logged: a benchmark's log is cut to a few lines.
	fmt.Printf("MESSAGES over %d days, %d communities, %d messages each a day (256-byte payloads), weekly windows, grace %v:\n%s\n",
		days, ncoms, perDay, grace, table.String())
	if prunes > 0 {
		fmt.Printf("%d prunes removed %d records (%d scanned) in %v: %.1f µs per record removed, %.0f ms per prune\n\n", prunes, pruneRecs,
			pruneScanned, pruneTime.Round(time.Millisecond), float64(pruneTime.Microseconds())/float64(max(pruneRecs, 1)),
			float64(pruneTime.Milliseconds())/float64(prunes))
	}
	return out
}
