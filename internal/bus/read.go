package bus

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Reading a stream's records by subject costs what it returns: a JetStream
// direct get with a batch asks the server for the next records matching a
// filter from a sequence on, and the server steps through its message
// blocks by their per-subject index. No consumer is created (a consumer per
// read costs API requests, server state, and — with several filters on a
// stream of many subjects — a walk of its whole subject tree).
//
// Direct gets are answered by any replica of the stream that is current.
// A replica can still be a few writes behind the leader, so a read that
// must see every record up to a sequence (Read.Upto: a build's watermark)
// asks the leader, once the replicas have no more, whether a record past
// what it read exists at or below Upto, and goes on reading if one does.

// Record is a stored message as a read returns it.
type Record struct {
	Subject string
	Seq     uint64
	Time    time.Time
	Header  nats.Header
	Data    []byte
}

// Read names the records to read: those of Stream on Filter (a subject,
// wildcards allowed) with a sequence from From to Upto (0 for From means 1,
// 0 for Upto means no bound: the read ends when the server has no more).
type Read struct {
	Stream, Filter string
	From, Upto     uint64
	// Batch is how many records one request asks for (default 1,000);
	// MaxBytes bounds one answer (default 4 MiB).
	Batch, MaxBytes int
}

// Read limits.
const (
	defaultReadBatch    = 1000
	defaultReadMaxBytes = 4 << 20
	// readRequestTimeout bounds one batch request (the answer's last
	// record included); it is repeated over transient errors.
	readRequestTimeout = 5 * time.Second
	// laggingReplicaWait bounds how long a bounded read waits, without
	// progress, for a replica to catch up with what the leader holds.
	laggingReplicaWait = 30 * time.Second
)

// api is the JetStream API prefix the reads use.
func (b *Bus) api() string {
	if b.APIPrefix != "" {
		return b.APIPrefix
	}
	return "$JS.API"
}

// errStop ends a read from fn without an error.
var errStop = errors.New("stop")

// StopRead, returned by a Read callback, ends the read without an error.
var StopRead = errStop

// Read calls fn for every record r names, in sequence order, and returns
// the last sequence it read (0 for none). fn's error (other than StopRead)
// ends the read and is returned. Batches are repeated over a cluster's
// transient errors, resuming after the last record fn saw.
func (b *Bus) Read(ctx context.Context, r Read, fn func(*Record) error) (uint64, error) {
	if r.Batch <= 0 {
		r.Batch = defaultReadBatch
	}
	if r.MaxBytes <= 0 {
		r.MaxBytes = defaultReadMaxBytes
	}
	upto := r.Upto
	if upto == 0 {
		upto = math.MaxUint64
	}
	next, last := max(r.From, 1), uint64(0)
	idle := time.Time{}
	for next <= upto {
		more, err := b.readBatch(ctx, r, next, upto, fn, &last)
		if errors.Is(err, errStop) {
			return last, nil
		}
		if err != nil {
			return last, err
		}
		if last >= next {
			next = last + 1
		}
		if more {
			idle = time.Time{}
			continue
		}
		if r.Upto == 0 {
			return last, nil
		}
		// The replica that answered had nothing more: the leader tells
		// whether a record at or below the bound is still to come.
		seq, err := b.leaderNext(ctx, r.Stream, r.Filter, next, upto)
		if err != nil {
			return last, fmt.Errorf("read %s %s: ask the leader: %w", r.Stream, r.Filter, err)
		}
		if seq == 0 || seq > upto {
			return last, nil
		}
		if idle.IsZero() {
			idle = time.Now()
		} else if time.Since(idle) > laggingReplicaWait {
			return last, fmt.Errorf("read %s %s: record %d (up to %d) not served by the replicas after %v", r.Stream, r.Filter, seq, upto, laggingReplicaWait)
		}
		next = seq
		if err := Sleep(ctx, 20*time.Millisecond); err != nil {
			return last, err
		}
	}
	return last, nil
}

// readBatch asks for one batch from next on and hands its records up to
// upto to fn; more reports whether the server holds more past it.
func (b *Bus) readBatch(ctx context.Context, r Read, next, upto uint64, fn func(*Record) error, last *uint64) (more bool, err error) {
	err = Retry(ctx, func(ctx context.Context) error {
		// A repeat resumes after what fn has seen.
		if *last >= next {
			next = *last + 1
		}
		req, err := json.Marshal(directBatch{Seq: next, NextFor: r.Filter, Batch: r.Batch, MaxBytes: r.MaxBytes})
		if err != nil {
			return &readAbort{err}
		}
		more = false
		inbox, answers, done, err := b.replies(r.Batch + 1)
		if err != nil {
			return err
		}
		defer done()
		if err := b.NC.PublishRequest(b.api()+".DIRECT.GET."+r.Stream, inbox, req); err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, readRequestTimeout)
		defer cancel()
		for {
			m, err := nextAnswer(ctx, rctx, answers)
			if err != nil {
				return err
			}
			switch status := m.Header.Get("Status"); status {
			case "":
			case "204": // end of batch
				np, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
				more = np > 0
				return nil
			case "404": // nothing (more) on the filter
				return nil
			case "503":
				return nats.ErrNoResponders
			default:
				return fmt.Errorf("direct get %s %s: status %s %s", r.Stream, r.Filter, status, m.Header.Get("Description"))
			}
			rec, err := record(m)
			if err != nil {
				return &readAbort{err}
			}
			if rec.Seq > upto {
				continue // read to the end of the batch, which is past the bound
			}
			if err := fn(rec); err != nil {
				return &readAbort{err}
			}
			*last = rec.Seq
		}
	})
	if ab := (*readAbort)(nil); errors.As(err, &ab) {
		return false, ab.err
	}
	if err != nil {
		return false, fmt.Errorf("read %s %s from %d: %w", r.Stream, r.Filter, next, err)
	}
	return more && *last < upto, nil
}

// directBatch is a batch direct get request.
type directBatch struct {
	Seq      uint64 `json:"seq"`
	NextFor  string `json:"next_by_subj,omitempty"`
	Batch    int    `json:"batch"`
	MaxBytes int    `json:"max_bytes"`
}

// readAbort carries an error that ends a read without a repeat (fn's, or a
// record's unreadable headers). It does not unwrap, so Retry does not take
// a transient error fn returned for its own.
type readAbort struct{ err error }

func (e *readAbort) Error() string { return e.err.Error() }

// record reads a direct get's message into a Record.
func record(m *nats.Msg) (*Record, error) {
	seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("direct get: record without a sequence: %v", err)
	}
	t, _ := time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
	return &Record{Subject: m.Header.Get(jetstream.SubjectHeader), Seq: seq, Time: t, Header: m.Header, Data: m.Data}, nil
}

// leaderNext asks the stream's leader for the sequence of the first record
// on filter from seq on (0 when there is none, or none up to upto). For a
// subject without wildcards it asks for the subject's last record first,
// which the server finds in its subject index; a wildcard's next record
// the server may have to look for through the message blocks.
func (b *Bus) leaderNext(ctx context.Context, stream, filter string, seq, upto uint64) (uint64, error) {
	if !strings.ContainsAny(filter, "*>") {
		r, err := b.LeaderGet(ctx, stream, Get{LastFor: filter})
		if err != nil || r == nil || r.Seq < seq {
			return 0, err
		}
		if r.Seq <= upto {
			return r.Seq, nil // at least that one is still to read
		}
	}
	r, err := b.LeaderGet(ctx, stream, Get{Seq: seq, NextFor: filter})
	if err != nil || r == nil {
		return 0, err
	}
	return r.Seq, nil
}

// LastPerSubject returns, for every subject of stream matching filter
// whose last record has a sequence from seq on, that sequence. It asks any
// replica (a multi-last direct get, served from the subject index) and
// checks the replica holds the stream up to upto, asking again while it
// does not. A filter matching over 1,024 subjects is ErrTooManySubjects.
func (b *Bus) LastPerSubject(ctx context.Context, stream, filter string, seq, upto uint64) (map[string]uint64, error) {
	req, err := json.Marshal(struct {
		MultiLast []string `json:"multi_last"`
		Seq       uint64   `json:"seq,omitempty"`
	}{[]string{filter}, seq})
	if err != nil {
		return nil, err
	}
	start := time.Now()
	for {
		out, servedUpTo, err := b.multiLast(ctx, stream, req)
		if err != nil {
			return nil, fmt.Errorf("last records of %s %s: %w", stream, filter, err)
		}
		if servedUpTo == math.MaxUint64 {
			// No subject matched, which does not say how far the replica
			// is: the leader tells whether one should have.
			r, err := b.LeaderGet(ctx, stream, Get{LastFor: filter})
			if err != nil {
				return nil, fmt.Errorf("last records of %s %s: %w", stream, filter, err)
			}
			if r == nil || r.Seq < seq {
				return out, nil
			}
			servedUpTo = 0
		}
		if servedUpTo >= upto {
			return out, nil
		}
		if time.Since(start) > laggingReplicaWait {
			return nil, fmt.Errorf("last records of %s %s: served up to %d, not %d, after %v", stream, filter, servedUpTo, upto, laggingReplicaWait)
		}
		if err := Sleep(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// ErrTooManySubjects is a multi-last read over the server's limit of 1,024
// subjects.
var ErrTooManySubjects = errors.New("filter matches over 1,024 subjects")

// maxMultiLast is the server's limit on the subjects of a multi-last get.
const maxMultiLast = 1024

// nextAnswer waits for a request's next answer: rctx bounds the request,
// ctx the caller (a request timing out is nats.ErrTimeout, a transient
// error; the caller's own end is its context's error).
func nextAnswer(ctx, rctx context.Context, answers <-chan *nats.Msg) (*nats.Msg, error) {
	select {
	case m := <-answers:
		return m, nil
	case <-rctx.Done():
		if ctx.Err() == nil {
			return nil, nats.ErrTimeout
		}
		return nil, ctx.Err()
	}
}

// multiLast runs one multi-last request and returns the subjects' last
// sequences and the sequence the replica answered up to.
func (b *Bus) multiLast(ctx context.Context, stream string, req []byte) (out map[string]uint64, upTo uint64, err error) {
	err = Retry(ctx, func(ctx context.Context) error {
		out, upTo = map[string]uint64{}, 0
		inbox, answers, done, err := b.replies(maxMultiLast + 1)
		if err != nil {
			return err
		}
		defer done()
		if err := b.NC.PublishRequest(b.api()+".DIRECT.GET."+stream, inbox, req); err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, readRequestTimeout)
		defer cancel()
		for {
			m, err := nextAnswer(ctx, rctx, answers)
			if err != nil {
				return err
			}
			switch status := m.Header.Get("Status"); status {
			case "":
			case "204":
				upTo, _ = strconv.ParseUint(m.Header.Get("Nats-UpTo-Sequence"), 10, 64)
				return nil
			case "404": // no subject matches: the replica's last sequence is not told
				upTo = math.MaxUint64
				return nil
			case "413":
				return &readAbort{ErrTooManySubjects}
			case "503":
				return nats.ErrNoResponders
			default:
				return fmt.Errorf("direct get: status %s %s", status, m.Header.Get("Description"))
			}
			seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
			if err != nil {
				return &readAbort{fmt.Errorf("direct get: record without a sequence: %v", err)}
			}
			out[m.Header.Get(jetstream.SubjectHeader)] = seq
		}
	})
	if ab := (*readAbort)(nil); errors.As(err, &ab) {
		return nil, 0, ab.err
	}
	return out, upTo, err
}

// Get names one record for LeaderGet: the one at Seq, the first on NextFor
// from Seq on, or the last on LastFor.
type Get struct {
	Seq     uint64 `json:"seq,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
}

// LeaderGet reads one record from the stream's leader (never a replica
// that may be behind it); nil when there is no such record. Use it where a
// record missed would be a record stored twice (ingest's duplicate
// checks); reads of many records use Read.
func (b *Bus) LeaderGet(ctx context.Context, stream string, g Get) (*Record, error) {
	req, err := json.Marshal(g)
	if err != nil {
		return nil, err
	}
	return RetryValue(ctx, func(ctx context.Context) (*Record, error) {
		rctx, cancel := context.WithTimeout(ctx, readRequestTimeout)
		defer cancel()
		resp, err := b.NC.RequestWithContext(rctx, b.api()+".STREAM.MSG.GET."+stream, req)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				return nil, nats.ErrTimeout
			}
			return nil, err
		}
		var out struct {
			Error *jetstream.APIError `json:"error"`
			Msg   *struct {
				Subject string    `json:"subject"`
				Seq     uint64    `json:"seq"`
				Header  []byte    `json:"hdrs"`
				Data    []byte    `json:"data"`
				Time    time.Time `json:"time"`
			} `json:"message"`
		}
		if err := json.Unmarshal(resp.Data, &out); err != nil {
			return nil, fmt.Errorf("stream message get: %w", err)
		}
		if out.Error != nil {
			if out.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
				return nil, nil
			}
			return nil, out.Error
		}
		if out.Msg == nil {
			return nil, errors.New("stream message get: empty answer")
		}
		hdr, err := parseHeader(out.Msg.Header)
		if err != nil {
			return nil, fmt.Errorf("stream message get: record %d: %w", out.Msg.Seq, err)
		}
		return &Record{Subject: out.Msg.Subject, Seq: out.Msg.Seq, Time: out.Msg.Time, Header: hdr, Data: out.Msg.Data}, nil
	})
}

// parseHeader reads a stored message's header block ("NATS/1.0\r\n…").
func parseHeader(b []byte) (nats.Header, error) {
	h := nats.Header{}
	if len(b) == 0 {
		return h, nil
	}
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(b)))
	if _, err := r.ReadLine(); err != nil {
		return nil, err
	}
	mh, err := r.ReadMIMEHeader()
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	for k, v := range mh {
		h[k] = v
	}
	return h, nil
}

// errObjectIncomplete is an object read that ended before the object's
// size or chunks: a replica behind the one that answered its info.
// IsTransient takes it: the next attempt reads again.
var errObjectIncomplete = errors.New("object read incomplete")

// ReadObject writes the object name of the fleet's object store to w, from
// byte skip on (a resumed read: the bytes before are read and hashed, not
// written), and returns the bytes written. check, if not nil, is given the
// object's info before anything is written (to refuse a wrong size). The
// chunks are read with batched direct gets, not the consumer an object
// store Get creates per read; the size, the chunk count and the SHA-256
// digest of the whole object are checked (jetstream.ErrDigestMismatch).
func (b *Bus) ReadObject(ctx context.Context, name string, skip int64, w io.Writer, check func(*jetstream.ObjectInfo) error) (int64, error) {
	info, err := b.Objects.GetInfo(ctx, name)
	if err != nil {
		return 0, err
	}
	if check != nil {
		if err := check(info); err != nil {
			return 0, err
		}
	}
	h := sha256.New()
	var pos, written int64
	var chunks uint32
	if info.Size > 0 {
		_, err = b.Read(ctx, Read{Stream: "OBJ_" + info.Bucket, Filter: "$O." + info.Bucket + ".C." + info.NUID}, func(r *Record) error {
			chunks++
			h.Write(r.Data)
			d := r.Data
			if pos < skip {
				cut := min(int64(len(d)), skip-pos)
				d, pos = d[cut:], pos+cut
			}
			if len(d) > 0 {
				n, err := w.Write(d)
				written, pos = written+int64(n), pos+int64(n)
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return written, err
		}
	}
	if pos != int64(info.Size) || chunks != info.Chunks {
		if written == 0 {
			// The replica that answered the direct gets is behind (seen
			// after a rolling restart under load, for longer than the
			// retries): read through the object store, whose consumer the
			// stream's leader serves; nats.go checks the digest.
			return b.readObjectFromLeader(ctx, name, skip, w)
		}
		return written, fmt.Errorf("object %s: %w: %d bytes in %d chunks, its info says %d in %d", name, errObjectIncomplete, pos, chunks, info.Size, info.Chunks)
	}
	if got := jetstream.GetObjectDigestValue(h); info.Digest != "" && got != info.Digest {
		return written, fmt.Errorf("object %s: %w", name, jetstream.ErrDigestMismatch)
	}
	return written, nil
}

// readObjectFromLeader writes object name from byte skip on to w, read with
// the object store's own reader.
func (b *Bus) readObjectFromLeader(ctx context.Context, name string, skip int64, w io.Writer) (int64, error) {
	r, err := b.Objects.Get(ctx, name)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	if _, err := io.CopyN(io.Discard, r, skip); err != nil {
		return 0, fmt.Errorf("object %s: %w", name, err)
	}
	n, err := io.Copy(w, r)
	if err != nil {
		return n, fmt.Errorf("object %s: %w", name, err)
	}
	return n, nil
}
