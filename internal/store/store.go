// Package store keeps the Waku messages of every community, as status-go's
// control node keeps its waku_messages table, in the MESSAGES stream: one
// subject per community and UTC day of the message timestamp, so reading a
// time range touches only the days it spans, and a late message lands in its
// own day and is included if it arrives before that window is built.
package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
)

const day = 86400

// Store ingests and reads messages.
type Store struct {
	Bus *bus.Bus
	// Known reports whether a community is registered; unknown ones are
	// refused so the store holds only what will be archived. Nil accepts all.
	Known  func(ctx context.Context, c archive.CommunityID) error
	Logger *slog.Logger

	scanned atomic.Uint64
}

// Scanned counts stored messages read back so far: a range read costs the
// messages of the days it spans, not the whole history.
func (s *Store) Scanned() uint64 { return s.scanned.Load() }

// IngestResult counts what an ingest did.
type IngestResult struct {
	Stored     int `json:"stored"`
	Duplicates int `json:"duplicates"`
}

// Ingest stores messages of community c. Each is validated first; the batch
// is refused whole if any is invalid, naming it. Re-sent messages (same hash)
// are dropped by the stream's deduplication.
func (s *Store) Ingest(ctx context.Context, c archive.CommunityID, msgs []archive.Message) (IngestResult, error) {
	var res IngestResult
	if s.Known != nil {
		if err := s.Known(ctx, c); err != nil {
			return res, err
		}
	}
	for i := range msgs {
		if err := msgs[i].Validate(); err != nil {
			return res, fmt.Errorf("message %d (%s): %w", i, msgs[i].Hash, err)
		}
	}
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		data, err := json.Marshal(m)
		if err != nil {
			return res, err
		}
		f, err := s.Bus.JS.PublishAsync(bus.SubjectMessages(c.String(), m.Timestamp/day), data,
			jetstream.WithMsgID("m:"+c.String()+":"+hex.EncodeToString(m.Hash)))
		if err != nil {
			return res, fmt.Errorf("store message %s: %w", m.Hash, err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				res.Duplicates++
			} else {
				res.Stored++
			}
		case err := <-f.Err():
			return res, fmt.Errorf("store message: %w", err)
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	return res, nil
}

// Source returns the archive.Source of community c.
func (s *Store) Source(c archive.CommunityID) archive.Source { return &source{s: s, c: c.String()} }

type source struct {
	s *Store
	c string
}

// Messages reads the days [from, to) spans one at a time, keeps messages
// inside the range, drops duplicates by hash and yields them ordered by
// (timestamp, hash). A message's day subject follows from its timestamp, so
// sorting day by day gives the global order while memory holds one day of
// one community at most.
func (src *source) Messages(ctx context.Context, from, to uint64) iter.Seq2[archive.Message, error] {
	return func(yield func(archive.Message, error) bool) {
		if from >= to {
			return
		}
		for d := from / day; d <= (to-1)/day; d++ {
			var msgs []archive.Message
			seen := make(map[string]bool)
			err := src.s.read(ctx, bus.SubjectMessages(src.c, d), func(m archive.Message) {
				if m.Timestamp < from || m.Timestamp >= to || seen[string(m.Hash)] {
					return
				}
				seen[string(m.Hash)] = true
				msgs = append(msgs, m)
			})
			if err != nil {
				yield(archive.Message{}, err)
				return
			}
			slices.SortFunc(msgs, func(a, b archive.Message) int {
				return cmp.Or(cmp.Compare(a.Timestamp, b.Timestamp), bytes.Compare(a.Hash, b.Hash))
			})
			for _, m := range msgs {
				if !yield(m, nil) {
					return
				}
			}
		}
	}
}

// read delivers every message stored on subject now, through an ordered
// consumer, and stops once it has seen what was pending when it started.
func (s *Store) read(ctx context.Context, subject string, fn func(archive.Message)) error {
	// Every read makes a server-side consumer; delete it when done, or the
	// stream reaches its consumer limit under load. The short inactivity
	// threshold cleans up after a reader that died mid-read.
	cons, err := s.Bus.JS.OrderedConsumer(ctx, bus.StreamMessages, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("read messages: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("read messages: %w", err)
	}
	defer func() {
		if ci := cons.CachedInfo(); ci != nil {
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s.Bus.JS.DeleteConsumer(dctx, bus.StreamMessages, ci.Name)
		}
	}()
	pending := info.NumPending
	for got := uint64(0); got < pending; {
		batch, err := cons.Fetch(int(min(pending-got, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("read messages: %w", err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			s.scanned.Add(1)
			var m archive.Message
			if err := json.Unmarshal(msg.Data(), &m); err != nil {
				// Ingest validated it; a bad record here was written by something else.
				s.log().Error("skipping undecodable stored message", "subject", msg.Subject(), "err", err)
				continue
			}
			fn(m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("read messages: %w", err)
		}
		if n == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			return fmt.Errorf("read messages: %d of %d pending messages arrived", got, pending)
		}
		got += uint64(n)
	}
	return nil
}

func (s *Store) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// ServeNATS answers ingest requests on archive.ingest.<community> (a queue
// group, so every replica shares the load). The payload is a JSON array or
// JSON lines of messages; the reply is IngestResult or {"error": "..."}.
func (s *Store) ServeNATS(ctx context.Context) (*nats.Subscription, error) {
	return s.Bus.NC.QueueSubscribe(bus.SubjectIngest("*"), "ingest", func(m *nats.Msg) {
		reply := func(v any) {
			b, _ := json.Marshal(v)
			m.Respond(b)
		}
		tok := m.Subject[len(bus.SubjectIngest("")):]
		c, err := archive.ParseCommunityID(tok)
		if err != nil {
			reply(map[string]string{"error": err.Error()})
			return
		}
		msgs, err := DecodeMessages(m.Data, MaxBatchBytes)
		if err != nil {
			reply(map[string]string{"error": err.Error()})
			return
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		res, err := s.Ingest(rctx, c, msgs)
		if err != nil {
			s.log().Warn("ingest refused", "community", c.String(), "err", err)
			reply(map[string]string{"error": err.Error()})
			return
		}
		reply(res)
	})
}
