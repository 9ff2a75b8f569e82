package messages

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/registry"
)

// NATS ingest bounds: requests waiting in this process's queue (beyond them
// the client library drops requests, whose senders time out with nothing
// stored), and the time one request may take.
const (
	natsPendingMsgs  = 64
	natsPendingBytes = 32 << 20
	natsTimeout      = 30 * time.Second
)

// ServeNATS answers ingest requests on archive.ingest.<community> (a queue
// group, so every replica shares the load) until ctx ends; stop drains the
// subscription and waits for the requests in flight. The payload is a JSON
// array or JSON lines of messages; with a non-empty token the request must
// carry the header "Authorization: Bearer <token>", as HTTP ingest. Requests
// share the ingest budget with HTTP ingest. The reply is an IngestResult
// (cut to fit the connection's max payload: Omitted counts the entries left
// out) or {"error", "code"} for a request refused as a whole.
func (s *Store) ServeNATS(ctx context.Context, token string) (stop func(), err error) {
	var wg sync.WaitGroup
	sub, err := s.Bus.NC.QueueSubscribe(bus.SubjectIngest("*"), "ingest", func(m *nats.Msg) {
		status := s.acceptNATS(ctx, token, m, &wg)
		if status != "" && s.Metrics != nil {
			s.Metrics.requests.WithLabelValues("nats", status).Inc()
		}
	})
	if err != nil {
		return nil, err
	}
	if err := sub.SetPendingLimits(natsPendingMsgs, natsPendingBytes); err != nil {
		sub.Unsubscribe()
		return nil, err
	}
	return func() {
		sub.Drain()
		wg.Wait()
	}, nil
}

// acceptNATS checks a request and hands it to a goroutine once it holds its
// lease; it returns the request's status when it answered it itself.
func (s *Store) acceptNATS(ctx context.Context, token string, m *nats.Msg, wg *sync.WaitGroup) string {
	if token != "" && subtle.ConstantTimeCompare([]byte(m.Header.Get("Authorization")), []byte("Bearer "+token)) != 1 {
		s.replyNATS(m, errorReply{"missing or wrong bearer token (header Authorization: Bearer <token>)", "unauthorized"})
		return "unauthorized"
	}
	c, err := archive.ParseCommunityID(m.Subject[len(bus.SubjectIngest("")):])
	if err != nil {
		s.replyNATS(m, errorReply{err.Error(), "bad_request"})
		return "bad_request"
	}
	lease, err := s.budget().Acquire(ctx)
	if err == nil {
		// The request's bytes are held until it is answered.
		if err = lease.Grow(ctx, LeaseBase+int64(len(m.Data))); err != nil {
			lease.Release()
		}
	}
	if err != nil {
		s.busy()
		s.replyNATS(m, struct {
			errorReply
			RetryAfter int `json:"retryAfter"`
		}{errorReply{ErrBusy.Error(), "busy"}, RetryAfter})
		return "busy"
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer lease.Release()
		status := s.serveNATS(ctx, c, m, lease)
		if s.Metrics != nil {
			s.Metrics.requests.WithLabelValues("nats", status).Inc()
		}
	}()
	return ""
}

func (s *Store) serveNATS(ctx context.Context, c archive.CommunityID, m *nats.Msg, lease *Lease) string {
	if s.Metrics != nil {
		s.Metrics.inflight.Inc()
		defer s.Metrics.inflight.Dec()
	}
	rctx, cancel := context.WithTimeout(ctx, natsTimeout)
	defer cancel()
	res, err := s.IngestBatch(rctx, c, bytes.NewReader(m.Data), MaxBatchBytes, lease, "nats")
	switch {
	case errors.Is(err, registry.ErrNotFound):
		s.replyNATS(m, errorReply{err.Error(), "not_found"})
		return "not_found"
	case err != nil && res.Total() == 0 && res.Error == "":
		s.log().Warn("ingest refused", "community", c.String(), "err", err)
		s.replyNATS(m, errorReply{err.Error(), "unavailable"})
		return "error"
	}
	s.replyNATS(m, res)
	switch {
	case errors.Is(err, ErrMalformedBatch), errors.Is(err, ErrBatchTooLarge):
		return "bad_request"
	case errors.Is(err, ErrBusy):
		s.busy()
		return "busy"
	case err != nil:
		return "error"
	case res.Failed > 0:
		return "partial"
	}
	return "ok"
}

// replyNATS answers m with v as JSON, within the connection's max payload:
// a result whose per-message entries do not fit loses entries (counted in
// Omitted) until it does, so the client always learns what happened.
func (s *Store) replyNATS(m *nats.Msg, v any) {
	limit := int(s.Bus.NC.MaxPayload())
	b, err := json.Marshal(v)
	if res, ok := v.(IngestResult); ok && err == nil {
		for len(b) > limit && len(res.Messages) > 0 {
			keep := len(res.Messages) / 2
			res.Omitted += len(res.Messages) - keep
			res.Messages = res.Messages[:keep]
			b, err = json.Marshal(res)
		}
	}
	if err != nil {
		b, _ = json.Marshal(errorReply{err.Error(), "error"})
	}
	if err := m.Respond(b); err != nil {
		s.log().Warn("ingest reply not sent", "subject", m.Subject, "err", err)
	}
}
