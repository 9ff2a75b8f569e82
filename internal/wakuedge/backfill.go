package wakuedge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	wakustore "github.com/archivefleet/archivefleet/internal/waku/store"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

// StoreQuerier queries Store v3 nodes (*node.Node).
type StoreQuerier interface {
	StoreQueryAll(ctx context.Context, node peer.AddrInfo, q wakustore.Query, page func(wakustore.Page) error) (int, error)
}

// Back-fill defaults: status-go asks 24 h per query, at most 10 content
// topics, from its newest message or now - 30 days.
const (
	// DefaultBackfillWindow is how far back a first back-fill reaches.
	DefaultBackfillWindow = 30 * 24 * time.Hour
	// DefaultBackfillCheck is how often communities are checked for a due
	// back-fill: a window that ended since the last one makes it due, so
	// it runs well before the window's settle deadline.
	DefaultBackfillCheck = 10 * time.Second
	// backfillSpan is one query's time range, backfillTopics its content
	// topics at most, backfillPage the page size asked.
	backfillSpan   = 24 * time.Hour
	backfillTopics = 10
	backfillPage   = 100
	// backfillOverlap re-reads this much before the last back-fill's end:
	// a message stamped a little before it may have reached the store
	// nodes after it. Duplicates cost only dedup.
	backfillOverlap = 5 * time.Minute
)

// backfill keeps every registered community back-filled from the store
// nodes: at start, when a community is registered or changed, and after
// each of its windows ends.
func (s *Service) backfill(ctx context.Context) error {
	done := map[string]time.Time{} // community -> UpdatedAt back-filled for, this process
	t := time.NewTicker(s.Config.BackfillCheck)
	defer t.Stop()
	retry := map[string]time.Time{}
	// The first pass runs at once, before relay peers know our
	// subscription: a message sent in between is in neither path. So once
	// the relay is live (and a second later, for subscriptions to spread)
	// every community gets one more pass; it reads from just before the
	// first one's end, so it costs little.
	var probeC <-chan time.Time
	var liveAt time.Time
	if s.Listen != nil {
		probe := time.NewTicker(200 * time.Millisecond)
		defer probe.Stop()
		probeC = probe.C
	}
	pass := true
	for {
		if probeC != nil {
			switch {
			case liveAt.IsZero() && s.relayLive():
				liveAt = s.Now().Add(time.Second)
			case !liveAt.IsZero() && !s.Now().Before(liveAt):
				clear(done)
				probeC, pass = nil, true
				s.Logger.Debug("back-fill: relay live; one more pass for every community")
			}
		}
		if !pass {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				pass = true
			case <-s.registryChanged:
				pass = true
			case <-probeC:
			}
			continue
		}
		pass = false
		coms, err := s.Registry.List(ctx)
		if err != nil && ctx.Err() == nil {
			s.Logger.Warn("back-fill: registry unreadable; trying again", "err", err)
		}
		now := s.Now()
		for _, com := range coms {
			if ctx.Err() != nil {
				return nil
			}
			c := com.ID.String()
			if com.Disabled || now.Before(retry[c]) {
				continue
			}
			bf, rev, err := s.State.GetBackfill(ctx, c)
			if err != nil {
				s.Logger.Warn("back-fill: state unreadable", "community", c, "err", err)
				continue
			}
			if !backfillDue(com, bf, done[c], now) {
				continue
			}
			if err := s.backfillCommunity(ctx, com, bf, rev, now); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				retry[c] = now.Add(s.Config.BackfillRetry)
				s.backfills.WithLabelValues("failed").Inc()
				s.Logger.Warn("back-fill failed; trying again", "community", c, "err", err, "retry_at", retry[c])
				s.recordBackfillError(ctx, c, err, now)
				continue
			}
			delete(retry, c)
			done[c] = com.UpdatedAt
			s.backfills.WithLabelValues("done").Inc()
		}
	}
}

// relayLive reports whether some pubsub topic the edge hears has a relay
// peer.
func (s *Service) relayLive() bool {
	for _, topic := range s.Listen.PubsubTopics() {
		if s.Peer.TopicPeers(topic) > 0 {
			return true
		}
	}
	return false
}

// backfillDue: never back-filled by this process for this registration,
// or a window of the community ended after the last back-fill's end.
func backfillDue(com *registry.Community, bf *state.Backfill, doneFor time.Time, now time.Time) bool {
	if doneFor.IsZero() || !doneFor.Equal(com.UpdatedAt) {
		return true
	}
	iv := time.Duration(com.Interval)
	if iv <= 0 || bf.Upto.IsZero() {
		return true
	}
	since := time.Unix(int64(com.Since), 0)
	if now.Before(since) {
		return false
	}
	lastEnd := since.Add(now.Sub(since) / iv * iv)
	return lastEnd.After(bf.Upto)
}

// backfillCommunity queries every store node for the community's content
// topics over [from, now], 24 h and 10 topics per query, and ingests what
// it gets. The progress advances only when every node answered in full.
func (s *Service) backfillCommunity(ctx context.Context, com *registry.Community, bf *state.Backfill, rev uint64, now time.Time) error {
	c := com.ID.String()
	from := now.Add(-s.Config.BackfillWindow)
	if since := time.Unix(int64(com.Since), 0); since.After(from) {
		from = since
	}
	if !bf.Upto.IsZero() && bf.Upto.Add(-backfillOverlap).After(from) {
		from = bf.Upto.Add(-backfillOverlap)
	}
	if !from.Before(now) {
		return nil
	}
	rs := s.routesFor(com)
	byTopic := map[string]route{}
	var topics []string
	for _, rt := range rs {
		ct := wakuwire.ChatContentTopic(rt.chat)
		byTopic[ct] = rt
		topics = append(topics, ct)
	}
	pubsub := PubsubTopic(s.Config.ClusterID, com)
	began := time.Now()
	var pages, got, stored int
	for _, node := range s.Config.StoreNodes {
		for lo := from; lo.Before(now); lo = lo.Add(backfillSpan) {
			hi := lo.Add(backfillSpan)
			if hi.After(now) {
				hi = now
			}
			for group := range slices.Chunk(topics, backfillTopics) {
				q := wakustore.Query{PubsubTopic: pubsub, ContentTopics: group, TimeStart: lo.UnixNano(), TimeEnd: hi.UnixNano(),
					IncludeData: true, Forward: true, Limit: backfillPage}
				n, err := s.StoreClient.StoreQueryAll(ctx, node, q, func(p wakustore.Page) error {
					var recs []archive.Message
					for _, sm := range p.Messages {
						got++
						rt, ok := byTopic[sm.Message.ContentTopic]
						if !ok {
							s.backfilled.WithLabelValues(ignoredForeign).Inc()
							continue
						}
						rec, err := Record(pubsub, sm.Message, rt.chat, rt.key)
						if err != nil {
							reason := dropMalformed
							if na := (*NotArchived)(nil); errors.As(err, &na) {
								reason = na.Reason
							}
							s.backfilled.WithLabelValues(reason).Inc()
							continue
						}
						recs = append(recs, rec)
					}
					if len(recs) == 0 {
						return nil
					}
					res, err := s.Ingest.Ingest(ctx, com.ID, recs)
					if err != nil {
						return fmt.Errorf("ingest: %w", err)
					}
					s.backfilled.WithLabelValues("stored").Add(float64(res.Stored))
					s.backfilled.WithLabelValues("duplicate").Add(float64(res.Duplicates))
					s.backfilled.WithLabelValues("late").Add(float64(res.Late))
					s.backfilled.WithLabelValues("refused").Add(float64(res.Refused))
					stored += res.Stored + res.Late
					if res.Failed > 0 {
						return fmt.Errorf("ingest: %d of %d messages not stored (an outage)", res.Failed, len(recs))
					}
					return nil
				})
				pages += n
				s.backfillPages.Add(float64(n))
				if err != nil {
					return fmt.Errorf("store node %s, %s..%s: %w", node.ID, lo.UTC().Format(time.RFC3339), hi.UTC().Format(time.RFC3339), err)
				}
			}
		}
	}
	rec := &state.Backfill{Upto: now.UTC(), At: s.Now().UTC(), Messages: got, Stored: stored, Pages: pages}
	if _, err := s.State.Put(ctx, state.BackfillKey(c), rec, rev); err != nil {
		// Another replica recorded one meanwhile: its record stands, ours
		// was the same work.
		s.Logger.Debug("back-fill progress not recorded", "community", c, "err", err)
	}
	s.Logger.Info("back-fill done", "community", c, "from", from.UTC(), "to", now.UTC(), "store_nodes", len(s.Config.StoreNodes),
		"pages", pages, "messages", got, "new", stored, "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// recordBackfillError keeps the last failure visible (archivectl community
// list) without moving the progress.
func (s *Service) recordBackfillError(ctx context.Context, c string, err error, now time.Time) {
	bf, rev, gerr := s.State.GetBackfill(ctx, c)
	if gerr != nil {
		return
	}
	bf.LastError, bf.LastErrorAt = err.Error(), now.UTC()
	_, _ = s.State.Put(ctx, state.BackfillKey(c), bf, rev)
}
