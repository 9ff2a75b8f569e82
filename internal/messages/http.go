package messages

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/registry"
)

// IngestPath is the HTTP route of the ingest endpoint.
const IngestPath = "POST /v1/communities/{id}/messages"

// IngestContentTypes are the media types the ingest endpoint takes. A form
// or text/plain post, which a web page may send to any site without asking,
// is refused.
var IngestContentTypes = []string{"application/json", "application/x-ndjson", "application/jsonl", "application/x-jsonlines"}

// A request's body must keep coming: it has bodyGrace, then as long as
// sending at bodyMinRate takes. A client dripping bytes is cut off instead
// of holding its share of the ingest budget.
var bodyGrace = 15 * time.Second // a variable for tests

const (
	bodyMinRate = 256 << 10 // bytes per second
	// replyTimeout bounds writing the (bounded) reply.
	replyTimeout = 30 * time.Second
	// RetryAfter is what a busy or failed request is told to wait, seconds.
	RetryAfter = 5
)

// Handler serves the ingest endpoint: a JSON array or JSON lines of messages
// for one community, with a JSON content type (IngestContentTypes). With a
// non-empty token, requests must carry "Authorization: Bearer <token>".
// Cross-origin requests from browsers are refused (403), so a web page an
// operator opens cannot write into archives. The body is read and stored
// chunk by chunk within the ingest budget; the reply counts every message
// and names (up to MaxReportedMessages of) those not plainly stored:
//
//	200 every message has its outcome;
//	400 the batch is malformed from some point on (the reply counts the
//	    messages before it) or the community id is invalid;
//	401 missing or wrong token; 404 unknown community;
//	408 the body came too slowly; 413 over MaxBatchBytes; 415 not JSON;
//	503 (Retry-After) busy, or some messages could not be stored for an
//	    outage: send those again (stored ones come back as duplicates).
func (s *Store) Handler(token string) http.Handler {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := s.serveHTTP(w, r, token)
		if s.Metrics != nil {
			s.Metrics.requests.WithLabelValues("http", status).Inc()
		}
	})
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.Metrics != nil {
			s.Metrics.requests.WithLabelValues("http", "cross_origin").Inc()
		}
		writeJSON(w, http.StatusForbidden, errorReply{Error: "cross-origin request refused", Code: "cross_origin"})
	}))
	return cop.Handler(h)
}

// errorReply answers a request refused as a whole.
type errorReply struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func (s *Store) serveHTTP(w http.ResponseWriter, r *http.Request, token string) string {
	if token != "" {
		got := r.Header.Get("Authorization")
		if subtle.ConstantTimeCompare([]byte(got), []byte("Bearer "+token)) != 1 {
			writeJSON(w, http.StatusUnauthorized, errorReply{"missing or wrong bearer token", "unauthorized"})
			return "unauthorized"
		}
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || !slices.Contains(IngestContentTypes, mt) {
		writeJSON(w, http.StatusUnsupportedMediaType, errorReply{"Content-Type must be one of " + joinTypes() +
			" (e.g. curl -H 'Content-Type: application/x-ndjson')", "content_type"})
		return "bad_request"
	}
	c, err := archive.ParseCommunityID(r.PathValue("id"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorReply{err.Error(), "bad_request"})
		return "bad_request"
	}
	if r.ContentLength > MaxBatchBytes {
		writeJSON(w, http.StatusRequestEntityTooLarge, errorReply{ErrBatchTooLarge.Error(), "too_large"})
		return "too_large"
	}
	if _, err := s.communities().Get(r.Context(), c); errors.Is(err, registry.ErrNotFound) {
		writeJSON(w, http.StatusNotFound, errorReply{err.Error(), "not_found"})
		return "not_found"
	} else if err != nil {
		retryLater(w)
		writeJSON(w, http.StatusServiceUnavailable, errorReply{err.Error(), "unavailable"})
		return "error"
	}
	lease, err := s.budget().Acquire(r.Context())
	if err != nil {
		s.busy()
		retryLater(w)
		writeJSON(w, http.StatusServiceUnavailable, errorReply{err.Error(), "busy"})
		return "busy"
	}
	defer lease.Release()
	if s.Metrics != nil {
		s.Metrics.inflight.Inc()
		defer s.Metrics.inflight.Dec()
	}
	rc := http.NewResponseController(w)
	body := &pacedReader{r: r.Body, rc: rc, start: time.Now()}
	res, err := s.IngestBatch(r.Context(), c, body, MaxBatchBytes, lease, "http")
	if err != nil && !errors.Is(err, ErrBatchTooLarge) && !errors.Is(err, os.ErrDeadlineExceeded) {
		body.drain()
	}
	rc.SetWriteDeadline(time.Now().Add(replyTimeout))
	code, status := http.StatusOK, "ok"
	switch {
	case errors.Is(err, registry.ErrNotFound):
		writeJSON(w, http.StatusNotFound, errorReply{err.Error(), "not_found"})
		return "not_found"
	case errors.Is(err, ErrMalformedBatch):
		code, status = http.StatusBadRequest, "bad_request"
	case errors.Is(err, ErrBatchTooLarge):
		code, status = http.StatusRequestEntityTooLarge, "too_large"
	case errors.Is(err, ErrBusy):
		s.busy()
		retryLater(w)
		code, status = http.StatusServiceUnavailable, "busy"
	case errors.Is(err, os.ErrDeadlineExceeded):
		code, status = http.StatusRequestTimeout, "timeout"
		res.Error += " (the body must arrive within " + bodyGrace.String() + " plus " + strconv.Itoa(bodyMinRate>>10) + " KiB/s)"
	case err != nil && r.Context().Err() != nil:
		retryLater(w)
		code, status = http.StatusServiceUnavailable, "error"
	case err != nil:
		code, status = http.StatusBadRequest, "bad_request"
	case res.Failed > 0:
		retryLater(w)
		code, status = http.StatusServiceUnavailable, "partial"
	}
	writeJSON(w, code, res)
	return status
}

func (s *Store) busy() {
	if s.Metrics != nil {
		s.Metrics.busy.Inc()
	}
}

func retryLater(w http.ResponseWriter) { w.Header().Set("Retry-After", strconv.Itoa(RetryAfter)) }

func joinTypes() string {
	out := ""
	for i, t := range IngestContentTypes {
		if i > 0 {
			out += ", "
		}
		out += t
	}
	return out
}

// pacedReader moves the connection's read deadline along as the body
// arrives: bodyGrace from the start plus what bodyMinRate allows for the
// bytes read so far.
type pacedReader struct {
	r     io.Reader
	rc    *http.ResponseController
	start time.Time
	n     int64
}

func (p *pacedReader) Read(b []byte) (int, error) {
	p.rc.SetReadDeadline(p.start.Add(bodyGrace + time.Duration(p.n)*time.Second/bodyMinRate))
	n, err := p.r.Read(b)
	p.n += int64(n)
	return n, err
}

// drain reads and discards what is left of a body within the batch cap, so
// a client still sending when its request is refused part-way (busy,
// malformed) reads the answer instead of a connection reset. It costs
// bandwidth and time under the body's pace, no memory.
func (p *pacedReader) drain() {
	io.CopyN(io.Discard, p, MaxBatchBytes-p.n)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
