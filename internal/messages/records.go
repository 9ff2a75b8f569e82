package messages

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/messages/recordpb"
)

// A record holds the messages one write put in a bucket (recordpb.Record):
// each an entry, status-go's WakuMessage with its payload left out when an
// object holds it. Writing many messages in one record costs the server
// one stored message, one index entry and one read for all of them: per
// message, the stream costs its bytes and little else.

// maxRecordBytes bounds one record's data, well inside the NATS server's
// default max payload (1 MiB).
const maxRecordBytes = 512 << 10

// entry is one message as a record stores it.
type entry struct {
	msg  []byte // WakuMessage, without a payload kept in an object
	body string // that object's name
}

func (e *entry) size() int { return len(e.msg) + len(e.body) + 16 }

// marshalRecord encodes entries as one record.
func marshalRecord(es []entry) ([]byte, error) {
	r := &recordpb.Record{Entries: make([]*recordpb.Entry, len(es))}
	for i := range es {
		r.Entries[i] = &recordpb.Entry{Message: es[i].msg, PayloadObject: es[i].body}
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(r)
}

// isRecordsSubject tells a record of this layout (msgs.<c>.<day>.m) from
// the one-message records of the version before (msgs.<c>.<day>.<hash
// hex>) and the JSON ones before that (msgs.<c>.<day>).
func isRecordsSubject(subject string) bool {
	return strings.HasSuffix(subject, "."+recordsToken) && strings.Count(subject, ".") == 3
}

// recordEntries returns the entries of a stored record, whatever its
// layout: a bucket record's, or the one message of an earlier record (its
// payload object named by the Archivefleet-Body header).
func recordEntries(r *bus.Record) ([]entry, error) {
	if !isRecordsSubject(r.Subject) {
		return []entry{{msg: r.Data, body: r.Header.Get(headerBody)}}, nil
	}
	var rec recordpb.Record
	if err := proto.Unmarshal(r.Data, &rec); err != nil {
		return nil, fmt.Errorf("%w: record %d: %v", errUndecodable, r.Seq, err)
	}
	out := make([]entry, len(rec.Entries))
	for i, e := range rec.Entries {
		out[i] = entry{msg: e.Message, body: e.PayloadObject}
	}
	return out, nil
}

// entryField reads a bytes or varint field of an encoded WakuMessage
// without decoding the rest: 6 is its hash, 2 its timestamp.
func entryHash(msg []byte) []byte {
	for b := msg; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		if num == 6 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil
			}
			return v
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return nil
		}
		b = b[n:]
	}
	return nil
}

func entryTimestamp(msg []byte) (uint64, bool) {
	for b := msg; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, false
		}
		b = b[n:]
		if num == 2 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			return v, n >= 0
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return 0, false
		}
		b = b[n:]
	}
	return 0, true // proto3 leaves a zero timestamp out
}

// recordTimestamps calls fn with the timestamp of every message of r;
// false when one cannot be read (a JSON record of the first layout without
// its header, say).
func recordTimestamps(r *bus.Record, fn func(ts uint64)) bool {
	if !isRecordsSubject(r.Subject) {
		ts, err := strconv.ParseUint(r.Header.Get(headerTimestamp), 10, 64)
		if err != nil {
			return false
		}
		fn(ts)
		return true
	}
	es, err := recordEntries(r)
	if err != nil {
		return false
	}
	for _, e := range es {
		ts, ok := entryTimestamp(e.msg)
		if !ok {
			return false
		}
		fn(ts)
	}
	return true
}

// storedEntry is the entry a record holds for a hash, with the record's
// sequence.
type storedEntry struct {
	entry
	seq uint64
}

// findEntry reads record seq from the stream's leader and returns its
// entry for hash; nil when the record is gone (pruned) or holds no such
// entry.
func (s *Store) findEntry(ctx context.Context, seq uint64, hash []byte) (*storedEntry, error) {
	r, err := s.Bus.LeaderGet(ctx, bus.StreamMessages, bus.Get{Seq: seq})
	if err != nil || r == nil {
		return nil, err
	}
	es, err := recordEntries(r)
	if err != nil {
		return nil, err
	}
	for _, e := range es {
		if bytes.Equal(entryHash(e.msg), hash) {
			return &storedEntry{entry: e, seq: r.Seq}, nil
		}
	}
	return nil, nil
}

// decodeEntry turns an entry into its message, fetching a payload kept in
// an object.
func (s *Store) decodeEntry(ctx context.Context, e *entry) (archive.Message, error) {
	var m archive.Message
	if len(e.msg) > 0 && e.msg[0] == '{' {
		// A record of the first layout: one JSON message.
		if err := json.Unmarshal(e.msg, &m); err != nil {
			return m, fmt.Errorf("%w: %v", errUndecodable, err)
		}
		return m, nil
	}
	if err := m.UnmarshalBinary(e.msg); err != nil {
		return m, fmt.Errorf("%w: %v", errUndecodable, err)
	}
	if e.body != "" {
		payload, err := bus.RetryValue(ctx, func(ctx context.Context) ([]byte, error) {
			var b bytes.Buffer
			_, err := s.Bus.ReadObject(ctx, e.body, 0, &b, nil)
			return b.Bytes(), err
		})
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			// Retrying cannot bring it back; failing would stop the
			// community's builds for good.
			return m, fmt.Errorf("%w: payload object %s of %s is missing", errUndecodable, e.body, m.Hash)
		}
		if err != nil {
			return m, fmt.Errorf("payload of %s (%s): %w", m.Hash, e.body, err)
		}
		m.Payload = payload
	}
	return m, nil
}

// RecordMessages returns the messages a stored record of MESSAGES holds,
// whatever its layout (for tools and tests reading the stream directly).
// A payload kept in the object store is left out.
func RecordMessages(subject string, hdr nats.Header, data []byte) ([]archive.Message, error) {
	es, err := recordEntries(&bus.Record{Subject: subject, Header: hdr, Data: data})
	if err != nil {
		return nil, err
	}
	out := make([]archive.Message, 0, len(es))
	for _, e := range es {
		var m archive.Message
		if len(e.msg) > 0 && e.msg[0] == '{' {
			err = json.Unmarshal(e.msg, &m)
		} else {
			err = m.UnmarshalBinary(e.msg)
		}
		if err != nil {
			return nil, fmt.Errorf("record on %s: %w", subject, err)
		}
		out = append(out, m)
	}
	return out, nil
}
