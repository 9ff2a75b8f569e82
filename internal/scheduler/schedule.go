// Package scheduler is the scheduler service. For every community it decides
// when archives are due with status-go's three cases, keyed on the last
// archive end L (or the community's start when nothing was archived yet):
//
//   - now - L < interval: wait until L + interval (status-go seeds what exists
//     and sets a timer for the rest; seeding is the seeders' job here);
//   - now - L >= interval: catch up now;
//   - then one due event per interval.
//
// Due events name whole windows, End = L + k*interval for the largest k with
// End + settle <= now (a window is due once its end plus Config.Settle has
// passed, so messages in flight land in it first), so every replica computes the same event and JetStream's
// deduplication (Nats-Msg-Id) keeps one; beyond the dedup window the
// archiver's committed state makes repeats no-ops. The scheduler keeps a
// due-time heap fed by KV watches, so a tick looks only at what is due,
// never at every community.
package scheduler

import (
	"cmp"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
)

// Defaults of Config's fields; a zero field means its default.
const (
	DefaultTick       = time.Second
	DefaultRepublish  = 24 * time.Hour
	DefaultRetryAfter = time.Minute
)

// Config tunes the scheduler. A zero field means its default.
type Config struct {
	Tick time.Duration // how often due entries are checked
	// Republish is the magnet-link republish cadence; negative disables it.
	Republish time.Duration
	// RetryAfter is when a due event is published again if its window has
	// not been committed by then (JetStream dedups repeats).
	RetryAfter time.Duration
	// Settle is how long after its end a window becomes due, so messages in
	// flight when it closes land in it before it is built. The default is
	// no settle.
	Settle time.Duration
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	c.Tick = cmp.Or(c.Tick, DefaultTick)
	c.Republish = cmp.Or(c.Republish, DefaultRepublish)
	c.RetryAfter = cmp.Or(c.RetryAfter, DefaultRetryAfter)
	return c
}

// validate reports a setting no default can fix.
func (c Config) validate() error {
	switch {
	case c.Tick < 0:
		return fmt.Errorf("scheduler: tick %v is negative", c.Tick)
	case c.RetryAfter < 0:
		return fmt.Errorf("scheduler: retry-after %v is negative", c.RetryAfter)
	case c.Settle < 0:
		return fmt.Errorf("scheduler: settle %v is negative", c.Settle)
	case c.Republish > 0 && c.Republish < time.Second:
		return fmt.Errorf("scheduler: republish cadence %v is under a second", c.Republish)
	}
	return nil
}

// Service is the scheduler.
type Service struct {
	Bus    *bus.Bus
	Config Config
	Logger *slog.Logger
	Now    func() time.Time
	// Publish sends an event; nil publishes on Bus. Benchmarks replace it.
	Publish func(ctx context.Context, subject, id string, v any) (duplicate bool, err error)
	metrics *metrics

	coms  map[string]*entry
	queue dueHeap
}

type metrics struct {
	published *prometheus.CounterVec
	tracked   prometheus.Gauge
	lag       prometheus.Gauge
}

type entry struct {
	com       *registry.Community
	lastEnd   uint64
	infoHash  string
	announced time.Time
	version   int // bumps on every change; stale heap items are skipped
}

// New builds the scheduler and registers its metrics.
func New(s Service, reg prometheus.Registerer) *Service {
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	s.Config = s.Config.withDefaults()
	f := promauto.With(reg)
	s.metrics = &metrics{
		published: f.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_scheduler_published_total",
			Help: "Events published by kind (due, republish) and whether JetStream deduplicated them."}, []string{"kind", "duplicate"}),
		tracked: f.NewGauge(prometheus.GaugeOpts{Name: "archivefleet_scheduler_communities", Help: "Communities tracked."}),
		lag: f.NewGauge(prometheus.GaugeOpts{Name: "archivefleet_scheduler_due_lag_seconds",
			Help: "How late the most overdue published event was."}),
	}
	s.coms = map[string]*entry{}
	return &s
}

// NextDue returns when a community's next window closes and the End a due
// event published at now would carry (0 if nothing is due yet), with no
// settle time: NextDueSettle(com, lastEnd, now, 0).
func NextDue(com *registry.Community, lastEnd uint64, now time.Time) (at time.Time, end uint64) {
	return NextDueSettle(com, lastEnd, now, 0)
}

// NextDueSettle returns when a community's next window is due (its end plus
// settle) and the End a due event published at now would carry: the window
// end anchor + k·interval for the largest k >= 1 with anchor + k·interval +
// settle <= now, or 0 if nothing is due yet.
func NextDueSettle(com *registry.Community, lastEnd uint64, now time.Time, settle time.Duration) (at time.Time, end uint64) {
	anchor := com.NextStart(lastEnd)
	iv := uint64(time.Duration(com.Interval) / time.Second)
	at = time.Unix(int64(anchor+iv), 0).Add(settle)
	if now.Before(at) {
		return at, 0
	}
	// Whole seconds of now - settle, rounded down: End + settle <= now.
	n := uint64(max(now.Add(-settle).Unix(), 0))
	return at, anchor + (n-anchor)/iv*iv
}

// Due returns the due event of a community whose archives end at lastEnd,
// if a window has closed by now: reason "interval" for one window,
// "catch-up" for several. No settle time: DueSettle(com, lastEnd, now, 0).
func Due(com *registry.Community, lastEnd uint64, now time.Time) (bus.DueEvent, bool) {
	return DueSettle(com, lastEnd, now, 0)
}

// DueSettle is Due for windows that are due settle after their end.
func DueSettle(com *registry.Community, lastEnd uint64, now time.Time, settle time.Duration) (bus.DueEvent, bool) {
	_, end := NextDueSettle(com, lastEnd, now, settle)
	if end == 0 {
		return bus.DueEvent{}, false
	}
	from := com.NextStart(lastEnd)
	ev := bus.DueEvent{Community: com.ID.String(), From: from, End: end, Reason: "interval"}
	if end > from+uint64(time.Duration(com.Interval)/time.Second) {
		ev.Reason = "catch-up"
	}
	return ev, true
}

// Run follows the registry and state buckets and publishes due and republish
// events until ctx is cancelled.
func (s *Service) Run(ctx context.Context) error {
	if err := s.Config.validate(); err != nil {
		return err
	}
	coms, err := s.Bus.Communities.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer coms.Stop()
	states, err := s.Bus.State.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer states.Stop()
	s.Logger.Info("scheduler started", "tick", s.Config.Tick, "republish", s.Config.Republish, "settle", s.Config.Settle)
	tick := time.NewTicker(s.Config.Tick)
	defer tick.Stop()
	// Fire only once both watches delivered their initial values (a nil
	// entry): before that a community may be known without its committed
	// end, and its due event would be computed from its start.
	comsReady, statesReady := false, false
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-coms.Updates():
			if !ok {
				return watchClosed(ctx)
			}
			if e == nil {
				comsReady = true
			} else {
				s.onCommunity(e.Key(), e.Value(), e.Operation() != jetstream.KeyValuePut)
			}
		case e, ok := <-states.Updates():
			if !ok {
				return watchClosed(ctx)
			}
			if e == nil {
				statesReady = true
			} else {
				s.onState(e.Key(), e.Value(), e.Operation() != jetstream.KeyValuePut)
			}
		case <-tick.C:
			if comsReady && statesReady {
				s.fire(ctx)
			}
		}
	}
}

// watchClosed is the error for a KV watch that ended: nil when shutting down.
func watchClosed(ctx context.Context) error {
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("kv watch closed")
}

func (s *Service) get(c string) *entry {
	e := s.coms[c]
	if e == nil {
		e = &entry{}
		s.coms[c] = e
	}
	return e
}

func (s *Service) onCommunity(key string, val []byte, deleted bool) {
	if deleted {
		delete(s.coms, key)
		s.metrics.tracked.Set(float64(len(s.coms)))
		return
	}
	com, err := registry.Decode(val)
	if err != nil {
		s.Logger.Error("undecodable community", "key", key, "err", err)
		return
	}
	e := s.get(key)
	e.com = com
	s.reschedule(key, e)
	s.metrics.tracked.Set(float64(len(s.coms)))
}

func (s *Service) onState(key string, val []byte, deleted bool) {
	if c, ok := strings.CutPrefix(key, "announce."); ok {
		var a state.Announce
		if !deleted && json.Unmarshal(val, &a) == nil {
			e := s.get(c)
			e.announced = a.At
			s.reschedule(c, e)
		}
		return
	}
	if deleted {
		return
	}
	st, err := state.DecodeBuild(val)
	if err != nil {
		s.Logger.Error("undecodable state", "key", key, "err", err)
		return
	}
	e := s.get(key)
	e.lastEnd, e.infoHash = st.LastEnd, st.InfoHash
	s.reschedule(key, e)
}

// reschedule queues the community's next due time and republish time.
func (s *Service) reschedule(c string, e *entry) {
	e.version++
	if e.com == nil || e.com.Disabled {
		return
	}
	at, _ := NextDueSettle(e.com, e.lastEnd, s.Now(), s.Config.Settle)
	heap.Push(&s.queue, item{at: at, c: c, kind: kindDue, version: e.version})
	if s.Config.Republish > 0 && e.infoHash != "" {
		next := e.announced.Add(s.Config.Republish)
		if e.announced.IsZero() {
			next = s.Now().Add(s.Config.Republish)
		}
		heap.Push(&s.queue, item{at: next, c: c, kind: kindRepublish, version: e.version})
	}
}

// fire publishes every event whose time has come.
func (s *Service) fire(ctx context.Context) {
	now := s.Now()
	var worst time.Duration
	for s.queue.Len() > 0 && !s.queue[0].at.After(now) {
		it := heap.Pop(&s.queue).(item)
		e := s.coms[it.c]
		if e == nil || e.version != it.version || e.com == nil || e.com.Disabled {
			continue
		}
		worst = max(worst, now.Sub(it.at))
		switch it.kind {
		case kindDue:
			ev, ok := DueSettle(e.com, e.lastEnd, now, s.Config.Settle)
			if !ok {
				s.reschedule(it.c, e)
				continue
			}
			s.publish(ctx, "due", bus.SubjectDue(it.c), ev.MsgID(), ev)
			heap.Push(&s.queue, item{at: now.Add(min(s.Config.RetryAfter, time.Duration(e.com.Interval))), c: it.c, kind: kindDue, version: e.version})
		case kindRepublish:
			slot := now.Unix() / int64(s.Config.Republish/time.Second)
			ev := bus.RepublishEvent{Community: it.c, Slot: slot}
			s.publish(ctx, "republish", bus.SubjectRepublish(it.c), ev.MsgID(), ev)
			heap.Push(&s.queue, item{at: now.Add(s.Config.Republish), c: it.c, kind: kindRepublish, version: e.version})
		}
	}
	s.metrics.lag.Set(worst.Seconds())
}

func (s *Service) publish(ctx context.Context, kind, subject, id string, v any) {
	var dup bool
	var err error
	if s.Publish != nil {
		dup, err = s.Publish(ctx, subject, id, v)
	} else {
		var ack *jetstream.PubAck
		if ack, err = s.Bus.Publish(ctx, subject, id, v); err == nil {
			dup = ack.Duplicate
		}
	}
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			s.Logger.Warn("publish failed; retried on a later tick", "subject", subject, "err", err)
		}
		return
	}
	s.metrics.published.WithLabelValues(kind, boolLabel(dup)).Inc()
	if !dup {
		s.Logger.Info("event published", "subject", subject, "id", id)
	}
}

func boolLabel(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

type kind int

const (
	kindDue kind = iota
	kindRepublish
)

type item struct {
	at      time.Time
	c       string
	kind    kind
	version int
}

type dueHeap []item

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(item)) }
func (h *dueHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
