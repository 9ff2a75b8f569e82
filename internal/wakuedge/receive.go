package wakuedge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/waku/node"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

// Ingester stores received messages through the fleet's ingest
// (*messages.Store): duplicates are dropped by hash, late ones supplemented.
type Ingester interface {
	Ingest(ctx context.Context, c archive.CommunityID, msgs []archive.Message) (messages.IngestResult, error)
}

// Listener is the relay feed of the peer's pubsub topics (*node.Node).
type Listener interface {
	Subscribe(pubsubTopic string) (<-chan node.Received, func(), error)
	PubsubTopics() []string
}

// Receive defaults.
const (
	// DefaultFlushEvery is how often received messages are ingested.
	DefaultFlushEvery = 200 * time.Millisecond
	// DefaultMaxPending bounds the messages held while ingest is failing;
	// past it the newest are dropped (counted) and left to back-fill.
	DefaultMaxPending = 100_000
	// flushBatch ingests at once when this many are waiting.
	flushBatch = 1000
)

// Reasons a received message on one of our content topics is not archived
// (archivefleet_waku_received_total's outcome label; the ingest outcomes
// stored, duplicate, late, refused and failed are the others).
const (
	dropUndecryptable = "undecryptable"
	dropUnsigned      = "unsigned"
	dropMalformed     = "malformed"
	dropOverflow      = "overflow"
	ignoredForeign    = "foreign"
)

// route is one chat a content topic belongs to.
type route struct {
	community archive.CommunityID
	chat      string
	key       []byte
}

// routes maps content topics to chats; rebuilt as the registry changes.
type routes struct {
	mu          sync.RWMutex
	byCommunity map[string][]route
	byTopic     map[string][]route
}

func (r *routes) set(id string, rs []route) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(rs) == 0 {
		delete(r.byCommunity, id)
	} else {
		r.byCommunity[id] = rs
	}
	r.byTopic = map[string][]route{}
	for _, rs := range r.byCommunity {
		for _, rt := range rs {
			ct := wakuwire.ChatContentTopic(rt.chat)
			r.byTopic[ct] = append(r.byTopic[ct], rt)
		}
	}
}

func (r *routes) lookup(contentTopic string) []route {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byTopic[contentTopic]
}

// NotArchived says why a received message on one of our chats is not
// archived; Reason is the metric label.
type NotArchived struct {
	Reason string
	Err    error
}

func (e *NotArchived) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *NotArchived) Unwrap() error { return e.Err }

// Record is the archive record status-go keeps of a received message: the
// rfc26 payload opened with the chat key, sig = the recovered 65-byte
// uncompressed key, the padding, timestamp = ns / 1e9 truncated, topic =
// the content topic's 4 bytes, hash = the 14/WAKU2-MESSAGE hash as
// received. A message that cannot be archived is a *NotArchived.
func Record(pubsubTopic string, m *wakuwire.Message, chat string, key []byte) (archive.Message, error) {
	if m.Version != 1 {
		return archive.Message{}, &NotArchived{dropMalformed, fmt.Errorf("version %d, status chats use 1", m.Version)}
	}
	if m.Timestamp <= 0 {
		return archive.Message{}, &NotArchived{dropMalformed, errors.New("no timestamp")}
	}
	env, err := wakuwire.OpenSymmetric(m.Payload, key)
	if err != nil {
		return archive.Message{}, &NotArchived{dropUndecryptable, err}
	}
	if env.Signer == nil {
		// status-go drops unsigned messages (protocol/v1/status_message.go).
		return archive.Message{}, &NotArchived{dropUnsigned, errors.New("no rfc26 signature")}
	}
	h := wakuwire.Hash(pubsubTopic, m)
	return archive.Message{Sig: env.Signer, Timestamp: uint64(m.Timestamp / 1e9), Topic: registry.ChatTopic(chat),
		Payload: env.Data, Padding: env.Padding, Hash: h[:]}, nil
}

// routesFor derives the routes (and chat keys, once each) of a community.
func (s *Service) routesFor(c *registry.Community) []route {
	if c == nil || c.Disabled {
		return nil
	}
	var out []route
	for _, chat := range c.ChatIDs() {
		out = append(out, route{community: c.ID, chat: chat, key: s.chatKey(chat)})
	}
	return out
}

// received is the receiver's buffer of records waiting for ingest.
type received struct {
	mu      sync.Mutex
	pending map[archive.CommunityID][]archive.Message
	n       int
	full    chan struct{} // signalled when flushBatch are waiting
}

// receive hears the peer's pubsub topics and ingests what belongs to a
// registered community's chat until ctx ends.
func (s *Service) receive(ctx context.Context) error {
	buf := &received{pending: map[archive.CommunityID][]archive.Message{}, full: make(chan struct{}, 1)}
	var wg sync.WaitGroup
	for _, topic := range s.Listen.PubsubTopics() {
		ch, cancel, err := s.Listen.Subscribe(topic)
		if err != nil {
			return fmt.Errorf("waku receive: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			// Subscribed at once, read once every community is routed: a
			// message heard earlier would be taken for a foreign one.
			select {
			case <-s.routesLoaded:
			case <-ctx.Done():
				return
			}
			for {
				select {
				case r, ok := <-ch:
					if !ok {
						return
					}
					s.take(buf, r)
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	s.Logger.Info("waku receive started", "pubsub_topics", s.Listen.PubsubTopics(), "summary_every", s.Config.SummaryEvery)
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.logSummaries(ctx)
	}()
	err := s.flushLoop(ctx, buf)
	wg.Wait()
	return err
}

// take turns one relayed message into a record for each chat its content
// topic routes to.
func (s *Service) take(buf *received, r node.Received) {
	s.tally.hear()
	rs := s.routes.lookup(r.Message.ContentTopic)
	if len(rs) == 0 {
		s.count(ignoredForeign, 1)
		return
	}
	for _, rt := range rs {
		rec, err := Record(r.PubsubTopic, r.Message, rt.chat, rt.key)
		if err != nil {
			reason := dropMalformed
			if na := (*NotArchived)(nil); errors.As(err, &na) {
				reason = na.Reason
			}
			s.count(reason, 1)
			s.Logger.Debug("received message not archived", "community", rt.community.String(), "chat", rt.chat, "err", err)
			continue
		}
		s.queue(buf, rt.community, []archive.Message{rec})
	}
}

// queue adds records for ingest, dropping (counted) past MaxPending.
func (s *Service) queue(buf *received, c archive.CommunityID, msgs []archive.Message) {
	buf.mu.Lock()
	room := s.Config.MaxPending - buf.n
	if room < len(msgs) {
		s.count(dropOverflow, len(msgs)-max(room, 0))
		msgs = msgs[:max(room, 0)]
	}
	buf.pending[c] = append(buf.pending[c], msgs...)
	buf.n += len(msgs)
	full := buf.n >= flushBatch
	buf.mu.Unlock()
	if full {
		select {
		case buf.full <- struct{}{}:
		default:
		}
	}
}

// flushLoop ingests the buffer every FlushEvery (sooner when flushBatch
// are waiting). Messages ingest could not take (an outage) go back into
// the buffer and are tried again with back-off; on shutdown what is left
// is logged (back-fill fetches it again from store nodes).
func (s *Service) flushLoop(ctx context.Context, buf *received) error {
	backoff := time.Duration(0)
	t := time.NewTimer(s.Config.FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// One last flush, bounded: what a graceful stop has heard is kept.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			buf.mu.Lock()
			batch := buf.pending
			buf.pending, buf.n = map[archive.CommunityID][]archive.Message{}, 0
			buf.mu.Unlock()
			left := 0
			for c, msgs := range batch {
				retry, _ := s.ingest(fctx, c, msgs)
				left += len(retry)
			}
			if left > 0 {
				s.Logger.Warn("waku receive stopping with messages not ingested; back-fill from store nodes fetches them at the next start",
					"messages", left)
			}
			return nil
		case <-t.C:
		case <-buf.full:
			if backoff > 0 {
				continue // waiting out an outage; the timer fires
			}
		}
		buf.mu.Lock()
		batch := buf.pending
		buf.pending, buf.n = map[archive.CommunityID][]archive.Message{}, 0
		buf.mu.Unlock()
		failed := false
		for c, msgs := range batch {
			retry, err := s.ingest(ctx, c, msgs)
			if len(retry) > 0 {
				failed = true
				s.queue(buf, c, retry)
				s.Logger.Warn("ingest of received messages failed; trying again", "community", c.String(), "messages", len(retry), "err", err)
			}
		}
		if failed {
			backoff = min(max(2*backoff, time.Second), 30*time.Second)
		} else {
			backoff = 0
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(max(backoff, s.Config.FlushEvery))
	}
}

// ingest stores msgs of c and counts the outcomes; it returns the messages
// to try again (an outage), with the reason.
func (s *Service) ingest(ctx context.Context, c archive.CommunityID, msgs []archive.Message) ([]archive.Message, error) {
	res, err := s.Ingest.Ingest(ctx, c, msgs)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		// Removed since: nothing to keep them for.
		s.count("unregistered", len(msgs))
		return nil, nil
	case err != nil:
		return msgs, err
	}
	var retry []archive.Message
	var reason string
	for _, m := range res.Messages {
		if m.Outcome == messages.Failed {
			retry = append(retry, msgs[m.Index])
			reason = m.Reason
		}
	}
	s.count(string(messages.Stored), res.Stored)
	s.count(string(messages.Duplicate), res.Duplicates)
	s.count(string(messages.Late), res.Late)
	s.count(string(messages.Refused), res.Refused)
	if len(retry) > 0 {
		return retry, errors.New(reason)
	}
	return nil, nil
}
