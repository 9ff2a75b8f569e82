package faulttest

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/placement"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// Stated bounds of TestPlacement.
const (
	// placementSpread is how far from 100 a seeder's share of 200
	// communities at R = 2 over 4 seeders may be: rendezvous weights are
	// random, σ ≈ 8.7 for a binomial(200, 1/2).
	placementSpread = 25
	// placementRecovery bounds the time from a SIGKILL until every
	// community has two live copies again: the membership TTL (15 s) for
	// the others to notice, plus fetching and verifying its communities.
	placementRecovery = 45 * time.Second
)

// seederNode is one seeder process of the placement test.
type seederNode struct {
	id   string
	addr string
	p    *proc
	down atomic.Bool
}

// TestPlacement runs 4 real seeder processes with SEED_REPLICAS=2 over 200
// communities: each community is seeded by exactly 2 and each seeder owns
// about 100; one seeder is SIGKILLed and every community is back to 2 live
// copies within placementRecovery while a downloader sampling throughout
// always finds a live seeder (a BitTorrent handshake on the infohash); a
// fifth seeder joins and about a fifth of the placements move, each
// make-before-break.
func TestPlacement(t *testing.T) {
	e := newEnv(t)
	now := uint64(time.Now().Unix())
	const n = 200
	coms := make([]*registry.Community, n)
	for i := range coms {
		coms[i] = e.register(time.Hour, now-2*3600)
		e.ingest(coms[i], sampleMessages(coms[i], 3, 200, now-2*3600, now-3600))
	}
	e.start("archiver", "archiver", "ARCHIVEFLEET_WORK_DIR="+filepath.Join(e.dir, "a"), "ARCHIVEFLEET_SLOTS=4")
	for _, com := range coms {
		e.due(com, now-2*3600, now-3600, "")
	}
	ih := map[string]string{} // community -> infohash
	for _, com := range coms {
		ih[com.ID.String()] = e.waitBuilt(com, now-3600, 120*time.Second).InfoHash
	}

	var nodes []*seederNode
	var nodesMu sync.Mutex // the downloader goroutine reads nodes while seeders join
	startSeeder := func(i int) *seederNode {
		port := testenv.FreePort(t)
		id := fmt.Sprintf("s%d", i)
		env := append(seederEnv(e, id, port), "ARCHIVEFLEET_SEED_REPLICAS=2")
		s := &seederNode{id: id, addr: fmt.Sprintf("127.0.0.1:%d", port), p: e.start("seeder-"+id, "seeder", env...)}
		nodesMu.Lock()
		nodes = append(nodes, s)
		nodesMu.Unlock()
		return s
	}
	for i := 1; i <= 4; i++ {
		startSeeder(i)
	}
	ctx := context.Background()
	membersKV, servingKV, err := e.ctl.SeederBuckets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	serving := placement.Serving{KV: servingKV}
	// member reads a seeder's current membership entry (its incarnation).
	member := func(id string) (placement.Member, bool) {
		var m placement.Member
		en, err := membersKV.Get(ctx, id)
		if err != nil || json.Unmarshal(en.Value(), &m) != nil {
			return m, false
		}
		return m, true
	}

	// copies returns, per community, the live seeders that record serving
	// its torrent, and per seeder how many it serves.
	copies := func(live []*seederNode) (map[string][]string, map[string]int) {
		per, owned := map[string][]string{}, map[string]int{}
		var ms []placement.Member
		for _, s := range live {
			if m, ok := member(s.id); ok {
				ms = append(ms, m)
			}
		}
		for c, h := range ih {
			for _, m := range ms {
				if got, err := serving.Get(ctx, c, m); err == nil && got == h {
					per[c] = append(per[c], m.ID)
					owned[m.ID]++
				}
			}
		}
		return per, owned
	}
	liveNodes := func() []*seederNode {
		nodesMu.Lock()
		defer nodesMu.Unlock()
		var out []*seederNode
		for _, s := range nodes {
			if !s.down.Load() {
				out = append(out, s)
			}
		}
		return out
	}
	// steady waits until every community has exactly two live copies and
	// checks, for a sample, that the seeders recorded really serve it.
	steady := func(what string, timeout time.Duration, also func(owned map[string]int) bool) (map[string][]string, map[string]int, time.Duration) {
		t.Helper()
		t0 := time.Now()
		for {
			per, owned := copies(liveNodes())
			bad := 0
			if also != nil && !also(owned) {
				bad++
			}
			for c := range ih {
				if len(per[c]) != 2 {
					bad++
				}
			}
			if bad == 0 {
				for _, c := range sample(ih, 20) {
					for _, id := range per[c] {
						if !handshake(nodeByID(nodes, id).addr, ih[c]) {
							t.Fatalf("%s: %s records serving %s but does not answer for it", what, id, c)
						}
					}
				}
				return per, owned, time.Since(t0)
			}
			if time.Since(t0) > timeout {
				t.Fatalf("%s: %d of %d communities without exactly 2 live copies after %v (shares %v)", what, bad, n, timeout, owned)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	_, owned, took := steady("start", 120*time.Second, nil)
	t.Logf("4 seeders: every community on 2 after %v; shares %v", took.Round(time.Millisecond), owned)
	for id, k := range owned {
		if k < 100-placementSpread || k > 100+placementSpread {
			t.Errorf("%s seeds %d communities; want 100 ± %d", id, k, placementSpread)
		}
	}

	// The downloader: throughout the kill and the join, every community
	// sampled has a live seeder answering for it unless both of its
	// seeders are down (never, with one killed).
	stopSampling := make(chan struct{})
	var sampled, misses atomic.Int64
	var missMu sync.Mutex
	var missed []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stopSampling:
				return
			default:
			}
			for _, c := range sample(ih, 10) {
				ok := false
				for _, s := range liveNodes() {
					if handshake(s.addr, ih[c]) {
						ok = true
						break
					}
				}
				sampled.Add(1)
				if !ok {
					misses.Add(1)
					missMu.Lock()
					missed = append(missed, c)
					missMu.Unlock()
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	victim := nodes[1]
	victim.down.Store(true)
	victim.p.kill()
	t0 := time.Now()
	_, owned, _ = steady("after SIGKILL of "+victim.id, placementRecovery, nil)
	recovered := time.Since(t0)
	t.Logf("%s SIGKILLed: every community on 2 live seeders again after %v; shares %v", victim.id, recovered.Round(time.Millisecond), owned)

	// The killed seeder comes back (same id and folder), then a fifth
	// joins the four.
	victim.p = e.start("seeder-"+victim.id+"-again", "seeder", append(seederEnv(e, victim.id, port(victim.addr)), "ARCHIVEFLEET_SEED_REPLICAS=2")...)
	victim.down.Store(false)
	before, owned, took := steady("after "+victim.id+" came back", 120*time.Second, func(owned map[string]int) bool { return owned[victim.id] > 0 })
	t.Logf("%s back: steady after %v; shares %v", victim.id, took.Round(time.Millisecond), owned)
	joined := startSeeder(5)
	t0 = time.Now()
	after, owned, _ := steady("after "+joined.id+" joined", 120*time.Second, func(owned map[string]int) bool { return owned[joined.id] > 0 })
	t.Logf("%s joined: steady after %v; shares %v", joined.id, time.Since(t0).Round(time.Millisecond), owned)
	close(stopSampling)
	wg.Wait()
	if misses.Load() > 0 {
		t.Errorf("downloader found no live seeder in %d of %d samples: %v", misses.Load(), sampled.Load(), missed)
	}
	t.Logf("downloader: %d samples, %d without a live seeder", sampled.Load(), misses.Load())

	// Of the 400 placements over four seeders, a fifth moves to the
	// newcomer in expectation (80, σ ≈ 8); nothing else moves.
	moved := 0
	for c := range ih {
		for _, id := range after[c] {
			if !slices.Contains(before[c], id) {
				moved++
			}
		}
	}
	if moved < 50 || moved > 110 {
		t.Errorf("a fifth seeder moved %d of 400 placements; want about 80", moved)
	}
	t.Logf("a fifth seeder moved %d of 400 placements", moved)
	// Make-before-break: a seeder handing a community off logged it only
	// after the new owner served it (the steady check above), and
	// deleted the files.
	for _, s := range liveNodes() {
		if s == joined {
			continue
		}
		if out := handoffsOut(s.p.log.String()); out > 0 {
			t.Logf("%s handed off %d communities", s.id, out)
		}
	}
	members, _, _ := e.ctl.SeederBuckets(ctx)
	if keys, err := members.ListKeys(ctx); err == nil {
		var ids []string
		for k := range keys.Keys() {
			ids = append(ids, k)
		}
		if len(ids) != 5 {
			t.Errorf("members %v; want the 5 live seeders", ids)
		}
	}
}

func port(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

func nodeByID(nodes []*seederNode, id string) *seederNode {
	for _, s := range nodes {
		if s.id == id {
			return s
		}
	}
	panic("no seeder " + id)
}

// sample returns k random keys of m.
func sample(m map[string]string, k int) []string {
	keys := make([]string, 0, len(m))
	for c := range m {
		keys = append(keys, c)
	}
	rand.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	return keys[:min(k, len(keys))]
}

// handshake reports whether the BitTorrent peer at addr answers a
// handshake for infohash ih (a client without the torrent hangs up).
func handshake(addr, ih string) bool {
	h, err := hex.DecodeString(ih)
	if err != nil || len(h) != 20 {
		return false
	}
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	var msg bytes.Buffer
	msg.WriteByte(19)
	msg.WriteString("BitTorrent protocol")
	msg.Write(make([]byte, 8))
	msg.Write(h)
	msg.WriteString("-AF0001-placementtst")
	if _, err := conn.Write(msg.Bytes()); err != nil {
		return false
	}
	resp := make([]byte, 68)
	if _, err := io.ReadFull(conn, resp); err != nil {
		return false
	}
	return bytes.Equal(resp[28:48], h)
}

func handoffsOut(log string) int {
	return bytes.Count([]byte(log), []byte("placed on other seeders, which serve it now"))
}
