package main

import (
	"bufio"
	"encoding/json"
	"expvar"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/metrics"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/anacrolix/torrent"
)

// traceOurs records, while aria2c downloads from our seeder: the client's
// WriteStatus and the torrent's and each connection's stats every second, a
// CPU profile, the Go scheduler's run-queue latency and mutex wait, and the
// torrent package's expvar counters (before and after). It returns the stop.
func traceOurs(run *runCtx, cl *torrent.Client, t *torrent.Torrent) func() {
	base := filepath.Join(run.trace, "ours-"+run.tag)
	statusF, err := os.Create(base + "-status.txt")
	check(err)
	statsF, err := os.Create(base + "-stats.jsonl")
	check(err)
	cpuF, err := os.Create(base + "-cpu.pprof")
	check(err)
	check(pprof.StartCPUProfile(cpuF))
	before := expvarTorrent()
	schedBefore := readSched()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sw := bufio.NewWriter(statusF)
		enc := json.NewEncoder(statsF)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		t0 := time.Now()
		prev := readSched()
		for {
			select {
			case <-done:
				sw.Flush()
				return
			case now := <-tick.C:
				fmt.Fprintf(sw, "===== t=%.1fs %s\n", now.Sub(t0).Seconds(), now.Format(time.RFC3339Nano))
				cl.WriteStatus(sw)
				st := t.Stats()
				var conns []map[string]any
				for _, pc := range t.PeerConns() {
					ps := pc.Stats()
					conns = append(conns, map[string]any{"addr": pc.RemoteAddr.String(), "client": pc.PeerClientName.Load(),
						"written_data": ps.BytesWrittenData.Int64(), "chunks_written": ps.ChunksWritten.Int64(),
						"read": ps.BytesRead.Int64(), "last_write_upload_rate": ps.LastWriteUploadRate})
				}
				cur := readSched()
				enc.Encode(map[string]any{"t": now.Sub(t0).Seconds(), "time": now.Format(time.RFC3339Nano),
					"written_data": st.BytesWrittenData.Int64(), "active_peers": st.ActivePeers, "total_peers": st.TotalPeers,
					"conns": conns, "sched": cur.sub(prev)})
				prev = cur
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		pprof.StopCPUProfile()
		cpuF.Close()
		statusF.Close()
		statsF.Close()
		after := expvarTorrent()
		diff := map[string]any{}
		for k, v := range after {
			if d := v - before[k]; d != 0 {
				diff[k] = d
			}
		}
		b, _ := json.MarshalIndent(map[string]any{"torrent_expvar_delta": diff, "sched": readSched().sub(schedBefore)}, "", "  ")
		os.WriteFile(base+"-expvar.json", b, 0o644)
	}
}

// expvarTorrent is the "torrent" expvar map of anacrolix/torrent as numbers.
func expvarTorrent() map[string]float64 {
	m := map[string]float64{}
	expvar.Do(func(kv expvar.KeyValue) {
		if mm, ok := kv.Value.(*expvar.Map); ok {
			mm.Do(func(e expvar.KeyValue) {
				if i, ok := e.Value.(*expvar.Int); ok {
					m[kv.Key+"/"+e.Key] = float64(i.Value())
				}
			})
		}
	})
	return m
}

// schedSample is the Go runtime's scheduling-latency histogram (time
// goroutines spent runnable before running), mutex wait and GC CPU.
type schedSample struct {
	lat       *metrics.Float64Histogram
	mutexWait float64
	gcCPU     float64
	totalCPU  float64
	gcs       uint64
}

func readSched() schedSample {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}, {Name: "/sync/mutex/wait/total:seconds"},
		{Name: "/cpu/classes/gc/total:cpu-seconds"}, {Name: "/cpu/classes/total:cpu-seconds"}, {Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	h := s[0].Value.Float64Histogram()
	cp := &metrics.Float64Histogram{Counts: append([]uint64(nil), h.Counts...), Buckets: h.Buckets}
	return schedSample{lat: cp, mutexWait: s[1].Value.Float64(), gcCPU: s[2].Value.Float64(), totalCPU: s[3].Value.Float64(), gcs: s[4].Value.Uint64()}
}

// sub summarises the interval between two samples: goroutine wake-ups by
// how long they waited for a thread, and the other deltas.
func (a schedSample) sub(b schedSample) map[string]any {
	var n uint64
	var over100us, over1ms, over10ms uint64
	var sum float64
	for i, c := range a.lat.Counts {
		d := c - b.lat.Counts[i]
		if d == 0 {
			continue
		}
		n += d
		lo := max(a.lat.Buckets[i], 0)
		hi := a.lat.Buckets[i+1]
		mid := lo
		if !math.IsInf(hi, 0) {
			mid = (lo + hi) / 2
		}
		sum += float64(d) * mid
		if lo >= 100e-6 {
			over100us += d
		}
		if lo >= 1e-3 {
			over1ms += d
		}
		if lo >= 10e-3 {
			over10ms += d
		}
	}
	return map[string]any{"wakeups": n, "runnable_wait_total_s": sum, "wait_ge_100us": over100us, "wait_ge_1ms": over1ms, "wait_ge_10ms": over10ms,
		"mutex_wait_s": a.mutexWait - b.mutexWait, "gc_cpu_s": a.gcCPU - b.gcCPU, "cpu_s": a.totalCPU - b.totalCPU, "gcs": a.gcs - b.gcs}
}
