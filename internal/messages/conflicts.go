package messages

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
)

// Evidence headers of a conflict record.
const (
	headerStoredSeq     = "Archivefleet-Stored-Seq"     // the stream sequence of the record that stays
	headerSource        = "Archivefleet-Source"         // http, nats, waku, fleet
	headerPayloadDigest = "Archivefleet-Payload-Digest" // SHA-256 of the conflicting payload
	headerPayloadBytes  = "Archivefleet-Payload-Bytes"  // its length
)

// keepEvidence keeps a conflicting message aside in bus.StreamConflicts: its
// record with the payload when that is inline-sized, else the payload's
// digest and length (the payload object prepare stored is removed, so a
// client forging large records cannot grow the object store). The stream is
// bounded (bus.ConflictsMaxBytes, oldest dropped). A failure is logged and
// counted: the client is told of the conflict either way.
func (s *Store) keepEvidence(ctx context.Context, c archive.CommunityID, m *archive.Message, rec *entry, stored *storedEntry, source string) {
	digest := sha256.Sum256(m.Payload)
	hdr := nats.Header{}
	hdr.Set(headerTimestamp, strconv.FormatUint(m.Timestamp, 10))
	hdr.Set(headerStoredSeq, strconv.FormatUint(stored.seq, 10))
	hdr.Set(headerSource, source)
	hdr.Set(headerPayloadDigest, hex.EncodeToString(digest[:]))
	hdr.Set(headerPayloadBytes, strconv.Itoa(len(m.Payload)))
	data := rec.msg // with the payload when it is inline-sized
	if rec.body != "" && rec.body != stored.body {
		s.dropObject(rec.body) // described by its digest only
	}
	id := sha256.New()
	id.Write(data)
	id.Write(digest[:])
	subject := bus.SubjectConflict(c.String(), hex.EncodeToString(m.Hash))
	msgID := "conflict:" + c.String() + ":" + hex.EncodeToString(m.Hash) + ":" + hex.EncodeToString(id.Sum(nil)[:16])
	_, err := bus.RetryValue(ctx, func(ctx context.Context) (*jetstream.PubAck, error) {
		return s.Bus.JS.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: hdr, Data: data}, jetstream.WithMsgID(msgID))
	})
	result := "kept"
	if err != nil {
		result = "failed"
		s.log().Error("conflicting record not kept as evidence", "community", c.String(), "hash", m.Hash.String(), "err", err)
	} else {
		s.log().Warn("message conflicts with a stored one: the stored record stays, this one is kept aside (archivectl conflicts list)",
			"community", c.String(), "hash", m.Hash.String(), "stored_seq", stored.seq, "source", source)
	}
	if s.Metrics != nil {
		s.Metrics.evidence.WithLabelValues(result).Inc()
	}
}

// dropObject removes a payload object no record refers to.
func (s *Store) dropObject(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Bus.Objects.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		s.log().Warn("payload object of a conflicting record not removed", "object", name, "err", err)
	}
}

// ConflictRecord is one piece of evidence: a message refused because a
// record with its hash and other content was stored first, and that record.
type ConflictRecord struct {
	Seq       uint64          `json:"seq"` // in bus.StreamConflicts
	Time      time.Time       `json:"time"`
	Community string          `json:"community"`
	Source    string          `json:"source"`
	StoredSeq uint64          `json:"storedSeq"` // the stored record's sequence in MESSAGES
	Refused   archive.Message `json:"refused"`
	// PayloadDigest and PayloadBytes describe the refused payload, which
	// is left out of Refused when it was too large to keep.
	PayloadDigest string `json:"payloadDigest"`
	PayloadBytes  int    `json:"payloadBytes"`
	// Stored is the record that stays, when it is still in MESSAGES
	// (payload left out when it is kept in the object store).
	Stored      *archive.Message `json:"stored,omitempty"`
	StoredError string           `json:"storedError,omitempty"`
}

// Conflicts lists the evidence kept for community c (all communities when
// c is empty), oldest first: the newest limit records.
func (s *Store) Conflicts(ctx context.Context, c string, limit int) ([]ConflictRecord, error) {
	filter := bus.SubjectConflict("*", "*")
	if c != "" {
		filter = bus.SubjectConflict(c, "*")
	}
	cons, err := s.Bus.JS.OrderedConsumer(ctx, bus.StreamConflicts, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		return nil, fmt.Errorf("read conflicts: %w", err)
	}
	defer func() {
		if ci := cons.CachedInfo(); ci != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			s.Bus.JS.DeleteConsumer(dctx, bus.StreamConflicts, ci.Name)
		}
	}()
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read conflicts: %w", err)
	}
	var out []ConflictRecord
	for got := uint64(0); got < info.NumPending; {
		batch, err := cons.Fetch(int(min(info.NumPending-got, 500)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("read conflicts: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			r, err := conflictRecord(m)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
			if len(out) > limit {
				out = out[1:]
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("read conflicts: %w", err)
		}
		if n == 0 {
			break
		}
		got += uint64(n)
	}
	for i := range out {
		r := &out[i]
		se, err := s.findEntry(ctx, r.StoredSeq, r.Refused.Hash)
		if err != nil || se == nil {
			r.StoredError = "the stored record is gone (pruned after its window was archived)"
			if err != nil {
				r.StoredError = err.Error()
			}
			continue
		}
		var m archive.Message
		if err := m.UnmarshalBinary(se.msg); err != nil {
			r.StoredError = err.Error()
			continue
		}
		r.Stored = &m
	}
	return out, nil
}

func conflictRecord(m jetstream.Msg) (ConflictRecord, error) {
	meta, err := m.Metadata()
	if err != nil {
		return ConflictRecord{}, err
	}
	h := m.Headers()
	r := ConflictRecord{Seq: meta.Sequence.Stream, Time: meta.Timestamp, Source: h.Get(headerSource),
		PayloadDigest: h.Get(headerPayloadDigest)}
	if parts := strings.Split(m.Subject(), "."); len(parts) == 3 {
		r.Community = parts[1]
	}
	r.StoredSeq, _ = strconv.ParseUint(h.Get(headerStoredSeq), 10, 64)
	r.PayloadBytes, _ = strconv.Atoi(h.Get(headerPayloadBytes))
	if err := r.Refused.UnmarshalBinary(m.Data()); err != nil {
		return r, fmt.Errorf("conflict record %d: %w", r.Seq, err)
	}
	return r, nil
}
