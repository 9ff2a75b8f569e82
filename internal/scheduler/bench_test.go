package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
)

// BenchmarkSchedulerPass loads N communities into one scheduler (as its KV
// watches would) and times a scheduling pass with nothing due and with 1,000
// communities due. The pass pops only due entries from the heap, so its cost
// follows what is due, not N. Reported: load time and heap per community,
// and CPU time per pass.
func BenchmarkSchedulerPass(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			now := time.Unix(1_800_000_000, 0)
			published := 0
			s := New(Service{Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now },
				Publish: func(context.Context, string, string, any) (bool, error) { published++; return false, nil }},
				prometheus.NewRegistry())
			iv := uint64(7 * 24 * 3600)
			runtime.GC()
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			t0 := time.Now()
			var id archive.CommunityID
			id[0] = 2
			for i := 0; i < n; i++ {
				id[1], id[2], id[3] = byte(i), byte(i>>8), byte(i>>16)
				com := registry.Community{ID: id, Interval: registry.Duration(time.Duration(iv) * time.Second), Since: 1}
				raw, _ := json.Marshal(com)
				s.onCommunity(id.String(), raw, false)
				// Each community's last archive ends so that its next window
				// closes within the coming week, spread evenly; the first
				// 1,000 close in the next second.
				lastEnd := uint64(now.Unix()) - iv + 1 + uint64(i)*iv/uint64(n)
				st, _ := json.Marshal(state.Build{LastEnd: lastEnd})
				s.onState(id.String(), st, false)
			}
			load := time.Since(t0)
			runtime.GC()
			runtime.ReadMemStats(&m1)

			ctx := context.Background()
			// The first pass drops the entries superseded while loading
			// (lazy invalidation); the service makes it before its first tick.
			t1 := time.Now()
			s.fire(ctx)
			first := time.Since(t1)
			var idle time.Duration
			for i := 0; i < 1000; i++ {
				t1 := time.Now()
				s.fire(ctx) // nothing due yet
				idle += time.Since(t1)
			}
			if published != 0 {
				b.Fatalf("published %d before anything was due", published)
			}
			// Advance to when the first ~1,000 windows have closed.
			now = now.Add(time.Duration(1000*iv/uint64(n)) * time.Second)
			t2 := time.Now()
			s.fire(ctx)
			busy := time.Since(t2)
			due := published
			for b.Loop() {
				s.fire(ctx)
			}
			b.ReportMetric(float64(load.Nanoseconds())/float64(n), "load-ns/community")
			b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/float64(n), "heap-B/community")
			b.ReportMetric(float64(idle.Nanoseconds())/1000, "idle-pass-ns")
			b.ReportMetric(float64(first.Milliseconds()), "first-pass-ms")
			b.ReportMetric(float64(busy.Microseconds()), "due-pass-µs")
			b.ReportMetric(float64(due), "due-published")
		})
	}
}
