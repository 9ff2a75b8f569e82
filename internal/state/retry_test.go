package state_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// lostReplyKV is a real bucket whose next lose writes are carried out but
// answered with a timeout, as when the reply is lost with a node going
// down; meanwhile, if set, runs before that answer (another writer).
type lostReplyKV struct {
	jetstream.KeyValue
	lose      int
	meanwhile func()
}

func (kv *lostReplyKV) lost(n uint64, err error) (uint64, error) {
	if err != nil || kv.lose == 0 {
		return n, err
	}
	kv.lose--
	if kv.meanwhile != nil {
		kv.meanwhile()
	}
	return 0, fmt.Errorf("kv write: %w", nats.ErrTimeout)
}

func (kv *lostReplyKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	return kv.lost(kv.KeyValue.Create(ctx, key, value, opts...))
}

func (kv *lostReplyKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	return kv.lost(kv.KeyValue.Update(ctx, key, value, rev))
}

// TestPutLostReply: a compare-and-set whose reply is lost (a timeout,
// repeated) is not reported as a conflict with itself: Put returns the
// revision its first attempt wrote. A real conflict still is one — a stale
// revision, a value another writer put over ours before the repeat, and an
// identical value that another writer stored (no attempt of ours was in
// doubt). An error that is not transient (a closed connection) fails at
// once, unrepeated.
func TestPutLostReply(t *testing.T) {
	ns := testenv.NATS(t)
	b := testenv.Bus(t, ns, bus.Config{})
	ctx := context.Background()
	ours := &state.Build{LastEnd: 200, Fence: 7, InfoHash: "ours"}
	theirs := &state.Build{LastEnd: 300, Fence: 8, InfoHash: "theirs"}
	for i, tc := range []struct {
		name      string
		existing  *state.Build // stored first (nil: key absent)
		rev       string       // Put at existing's revision ("", "current"), the one before it ("stale") or 0 ("zero")
		lose      int
		meanwhile bool // another writer puts its value before the lost reply comes back
		closed    bool // on a closed connection
		want      string
	}{
		{name: "create, reply lost", lose: 1, want: "ok"},
		{name: "update, reply lost", existing: theirs, lose: 1, want: "ok"},
		{name: "update, reply lost, then overwritten", existing: theirs, lose: 1, meanwhile: true, want: "conflict"},
		{name: "stale revision", existing: theirs, rev: "stale", want: "conflict"},
		{name: "create over an identical value, nothing lost", existing: ours, rev: "zero", want: "conflict"},
		{name: "connection closed", closed: true, want: "fails fast"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := fmt.Sprintf("key%d", i)
			var rev uint64
			if tc.existing != nil {
				r, err := (&state.Store{KV: b.State}).Put(ctx, key, tc.existing, 0)
				if err != nil {
					t.Fatal(err)
				}
				switch tc.rev {
				case "", "current":
					rev = r
				case "stale":
					rev = r - 1 // another key's revision: never this key's
				}
			}
			kv := &lostReplyKV{KeyValue: b.State, lose: tc.lose}
			if tc.closed {
				kv.KeyValue = testenv.ClosedBucket(t, ns, bus.BucketState)
			}
			if tc.meanwhile {
				kv.meanwhile = func() {
					if _, err := b.State.Put(ctx, key, []byte(`{"lastEnd":999,"fence":99}`)); err != nil {
						t.Error(err)
					}
				}
			}
			t0 := time.Now()
			got, err := (&state.Store{KV: kv}).Put(ctx, key, ours, rev)
			took := time.Since(t0)
			switch tc.want {
			case "ok":
				if err != nil {
					t.Fatalf("Put: %v, want our own write's revision", err)
				}
				e, err := b.State.Get(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				if e.Revision() != got {
					t.Fatalf("Put returned revision %d, the key is at %d", got, e.Revision())
				}
				if st, _ := state.DecodeBuild(e.Value()); st.Fence != ours.Fence || st.InfoHash != ours.InfoHash {
					t.Fatalf("stored %s", e.Value())
				}
			case "conflict":
				if !errors.Is(err, state.ErrConflict) {
					t.Fatalf("Put: %d, %v; want ErrConflict", got, err)
				}
			case "fails fast":
				if err == nil || errors.Is(err, state.ErrConflict) || bus.IsTransient(err) {
					t.Fatalf("Put: %v; want the connection's error", err)
				}
				if _, _, gerr := (&state.Store{KV: kv}).GetBuild(ctx, key); gerr == nil || bus.IsTransient(gerr) {
					t.Fatalf("GetBuild: %v; want the connection's error", gerr)
				}
				if took = time.Since(t0); took > 500*time.Millisecond {
					t.Fatalf("a closed connection took %v to fail: repeated?", took)
				}
			}
			if kv.lose != 0 {
				t.Fatalf("%d lost replies left: the write was not repeated", kv.lose)
			}
		})
	}
}

// TestStateOnClusterSurvivesNodeLoss reads and writes a community's state
// and fetches its committed torrent, index and archives on a three-node R3
// cluster while the node the client is connected to — first the leader of
// the state bucket, then the leader of the object store — is shut down and
// restarted. None of the state calls may fail: each repeats over the
// cluster's transient errors. FetchArchives resumes a read the faults cut
// off; were it to return an error, the caller would start again from its
// trusted prefix (as the archiver and seeder do), so that is done here too,
// and the fetched data must verify. Plain bucket reads,
// unrepeated, run alongside to show the faults were felt.
func TestStateOnClusterSurvivesNodeLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	cl := testenv.NATSCluster(t)
	cb := testenv.ClusterBus(t, cl, bus.Config{Replicas: testenv.ClusterSize})
	ctx := context.Background()

	// A real build's artefacts, stored as the archiver stores them.
	com := fixture.Community(time.Hour, 1_700_000_000, archive.Topic{1})
	id, c := com.ID, com.ID.String()
	l := archive.Layout{DataDir: filepath.Join(t.TempDir(), "d"), TorrentDir: filepath.Join(t.TempDir(), "t")}
	msgs := fixture.Messages{N: 60, From: com.Since, To: com.Since + 7000, Topics: com.Topics, Size: 3000}.Make()
	res, err := archive.Build(ctx, l, archive.BuildOptions{Community: id, Topics: com.Topics, From: com.Since, To: com.Since + 7200,
		Interval: time.Hour, Source: archive.NewSliceSource(msgs), Torrent: archive.TorrentOptions{AnnounceList: [][]string{}}})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(l.ArchiveDir(id), archive.DataFile))
	index, _ := os.ReadFile(filepath.Join(l.ArchiveDir(id), archive.IndexFile))
	torrent, _ := os.ReadFile(l.TorrentPath(id))
	st := &state.Build{InfoHash: res.InfoHash, DataBytes: res.DataBytes}
	for _, e := range res.Archives {
		st.Archives = append(st.Archives, state.ArchiveRef{ID: e.ID, Offset: e.Offset, Size: e.Size, Padding: e.Padding})
		if _, err := cb.Objects.PutBytes(ctx, state.ObjectArchive(c, e.ID), data[e.Offset:e.Offset+e.Size-e.Padding]); err != nil {
			t.Fatal(err)
		}
	}
	for name, v := range map[string][]byte{state.ObjectIndex(c, res.InfoHash): index, state.ObjectTorrent(c, res.InfoHash): torrent} {
		if _, err := cb.Objects.PutBytes(ctx, name, v); err != nil {
			t.Fatal(err)
		}
	}

	// The client sits on the state bucket's leader: shutting that node
	// down loses requests in flight and moves the leader.
	kvStream, objStream := "KV_"+bus.BucketState, "OBJ_"+bus.BucketObjects
	first := cl.StreamLeader(kvStream)
	if first < 0 {
		t.Fatal("state bucket without a leader")
	}
	nc, err := nats.Connect(cl.URL(first), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	b, err := bus.Setup(sctx, nc, bus.Config{Replicas: testenv.ClusterSize}) // as ClusterBus set it up: changes nothing
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	sts := &state.Store{KV: b.State}
	if _, err := sts.Put(ctx, c, st, 0); err != nil {
		t.Fatal(err)
	}

	var stop atomic.Bool
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []error
	t00 := time.Now()
	fail := func(err error) {
		mu.Lock()
		failures = append(failures, fmt.Errorf("at %v: %w", time.Since(t00).Round(time.Millisecond), err))
		mu.Unlock()
	}
	var writes, conflicts, reads, fetches, restarts, rawReads, rawFailures atomic.Int64
	wg.Add(3)
	go func() { // the committer: read, compare-and-set the next fence
		defer wg.Done()
		for !stop.Load() {
			cur, rev, err := sts.GetBuild(ctx, c)
			if err != nil {
				fail(fmt.Errorf("GetBuild: %w", err))
				continue
			}
			next := *cur
			next.Fence++
			next.BuiltAt = time.Now().UTC()
			_, err = sts.Put(ctx, c, &next, rev)
			if errors.Is(err, state.ErrConflict) {
				// Not our own write (Put checks that): the read was served
				// by a replica a write or two behind, as happens around a
				// node's restart. Read again, as the archiver's commit does.
				conflicts.Add(1)
				continue
			}
			if err != nil {
				fail(fmt.Errorf("Put fence %d: %w", next.Fence, err))
				continue
			}
			writes.Add(1)
		}
	}()
	go func() { // the restorer: committed torrent and index, then the archives
		defer wg.Done()
		for !stop.Load() {
			cur, _, err := sts.GetBuild(ctx, c)
			if err != nil {
				fail(fmt.Errorf("GetBuild: %w", err))
				continue
			}
			reads.Add(1)
			cm, err := state.FetchCommitted(ctx, b, c, cur)
			if err != nil {
				fail(fmt.Errorf("FetchCommitted: %w", err))
				continue
			}
			var got bytes.Buffer
			err = bus.Retry(ctx, func(ctx context.Context) error {
				if got.Len() > 0 {
					restarts.Add(1)
				}
				got.Reset() // start again from the trusted prefix (none)
				_, err := state.FetchArchives(ctx, b, c, cur.Archives, 0, &got)
				return err
			})
			if err == nil {
				err = cm.Verify(0, bytes.NewReader(got.Bytes()))
			}
			if err != nil {
				fail(fmt.Errorf("FetchArchives: %w", err))
				continue
			}
			fetches.Add(1)
		}
	}()
	go func() { // plain reads, not repeated: the faults as a caller felt them before
		defer wg.Done()
		for !stop.Load() {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if _, err := b.State.Get(rctx, c); err != nil {
				rawFailures.Add(1)
			}
			cancel()
			rawReads.Add(1)
			time.Sleep(5 * time.Millisecond)
		}
	}()

	restart := func(what string, i int) {
		t.Helper()
		time.Sleep(time.Second)
		killed := time.Since(t00)
		cl.Kill(i)
		time.Sleep(1500 * time.Millisecond)
		if err := cl.Restart(i); err != nil {
			t.Fatal(err)
		}
		if err := cl.WaitCurrent(30*time.Second, kvStream, objStream); err != nil {
			t.Fatal(err)
		}
		t.Logf("%v: killed %s (%s) at %v, restarted; state leader now %s, objects leader %s", time.Since(t00).Round(time.Millisecond),
			cl.NodeName(i), what, killed.Round(time.Millisecond), nodeName(cl, cl.StreamLeader(kvStream)), nodeName(cl, cl.StreamLeader(objStream)))
	}
	restart("state bucket leader, the client's node", first)
	// Then whichever node the client went to, and the object store's leader.
	cur := -1
	for i := range cl.Size() {
		if cl.NodeName(i) == nc.ConnectedServerName() {
			cur = i
		}
	}
	if cur < 0 {
		t.Fatalf("client connected to %q, not a cluster node", nc.ConnectedServerName())
	}
	restart("the client's node", cur)
	obj := cl.StreamLeader(objStream)
	if obj < 0 {
		t.Fatal("object store without a leader")
	}
	restart("object store leader", obj)
	time.Sleep(time.Second)
	stop.Store(true)
	wg.Wait()

	if len(failures) > 0 {
		for _, f := range failures[:min(len(failures), 10)] {
			t.Log(f)
		}
		t.Fatalf("%d state calls failed, first: %v", len(failures), failures[0])
	}
	if writes.Load() == 0 || fetches.Load() == 0 {
		t.Fatalf("%d writes, %d fetches: the loops did not run", writes.Load(), fetches.Load())
	}
	// A read may be served by a replica a write behind for a moment after
	// a restart (direct gets): a lost write never shows, a stale read does
	// within a few seconds.
	var final *state.Build
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if final, _, err = sts.GetBuild(ctx, c); err != nil {
			t.Fatal(err)
		}
		if final.Fence == writes.Load() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state at fence %d after %d successful writes: a write was lost or applied twice", final.Fence, writes.Load())
		}
	}
	t.Logf("FIGURES through 3 node restarts on R3: %d compare-and-set writes (%d conflicts after a stale read, re-read), %d reads, "+
		"%d archive fetches (%d restarted mid-copy), none failed; plain unrepeated bucket reads alongside: %d of %d failed",
		writes.Load(), conflicts.Load(), reads.Load(), fetches.Load(), restarts.Load(), rawFailures.Load(), rawReads.Load())
}

func nodeName(c *testenv.Cluster, i int) string {
	if i < 0 {
		return "none"
	}
	return c.NodeName(i)
}

// cutObjects is a real object store whose reads, for the next cuts of
// them, fail with err after the given number of bytes, as a read does when
// the cluster moves the stream's leader under it.
type cutObjects struct {
	b    *bus.Bus
	mu   sync.Mutex
	cuts []int64
	err  error
	gets int
}

func (o *cutObjects) ReadObject(ctx context.Context, name string, skip int64, w io.Writer, check func(*jetstream.ObjectInfo) error) (int64, error) {
	o.mu.Lock()
	o.gets++
	if len(o.cuts) > 0 {
		w = &cutWriter{w: w, left: o.cuts[0], err: o.err}
		o.cuts = o.cuts[1:]
	}
	o.mu.Unlock()
	return o.b.ReadObject(ctx, name, skip, w, check)
}

type cutWriter struct {
	w    io.Writer
	left int64
	err  error
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, c.err
	}
	n, err := c.w.Write(p[:min(int64(len(p)), c.left)])
	c.left -= int64(n)
	if err == nil && n < len(p) {
		err = c.err
	}
	return n, err
}

// TestFetchArchivesResumes: a read that fails part way through an archive
// object is resumed where it stopped, skipping what was written — over
// several cuts, one before any byte — and the data comes out byte for
// byte, each byte once. An error a repeat cannot fix is returned with the
// bytes written so far.
func TestFetchArchivesResumes(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	ctx := context.Background()
	const c = "0x02aa"
	// Two archives of several object chunks (128 KiB each), not padded.
	data := make([]byte, 3*archive.PieceLength+5*archive.PieceLength)
	for i := range data {
		data[i] = byte(i * 7)
	}
	refs := []state.ArchiveRef{{ID: "0x01", Offset: 0, Size: 3 * archive.PieceLength}, {ID: "0x02", Offset: 3 * archive.PieceLength, Size: 5 * archive.PieceLength}}
	for _, r := range refs {
		if _, err := b.Objects.PutBytes(ctx, state.ObjectArchive(c, r.ID), data[r.Offset:r.Offset+r.Size]); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name     string
		cuts     []int64
		err      error
		wantN    int64 // bytes written; len(data) when the fetch succeeds
		wantGets int
	}{
		{"no cut", nil, nil, int64(len(data)), 2},
		{"one cut in each object", []int64{1000, 200_000}, nats.ErrTimeout, int64(len(data)), 4},
		{"cut before any byte, then three more in the first object", []int64{0, 70_000, 1, 100_000}, nats.ErrTimeout, int64(len(data)), 6},
		{"nats.go's pipe deadline (an attempt out of time)", []int64{90_000}, &net.OpError{Op: "read", Net: "pipe", Err: os.ErrDeadlineExceeded},
			int64(len(data)), 3},
		{"not transient: returned", []int64{150_000}, errors.New("disk on fire"), 150_000, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := &cutObjects{b: b, cuts: tc.cuts, err: tc.err}
			var got bytes.Buffer
			n, err := state.FetchArchives(ctx, objs, c, refs, 0, &got)
			if n != tc.wantN || int64(got.Len()) != n {
				t.Fatalf("wrote %d (returned %d), want %d", got.Len(), n, tc.wantN)
			}
			if n == int64(len(data)) {
				if err != nil {
					t.Fatalf("FetchArchives: %v", err)
				}
			} else if err == nil || !errors.Is(err, tc.err) {
				t.Fatalf("FetchArchives: %v, want %v", err, tc.err)
			}
			if !bytes.Equal(got.Bytes(), data[:n]) {
				t.Fatal("the bytes written differ from the objects'")
			}
			if objs.gets != tc.wantGets {
				t.Fatalf("%d Gets, want %d", objs.gets, tc.wantGets)
			}
		})
	}
}
