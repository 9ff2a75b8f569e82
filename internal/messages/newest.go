package messages

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
)

// newestDays is how many UTC days, from tomorrow back, Newest asks for one
// by one before it settles for the community's last stored record.
const newestDays = 8

// Newest returns the timestamp (unix seconds) of the newest message held for
// community c, and false when none is. It reads one record per question,
// never a range: the last record stored on the newest UTC day holding any,
// asking day by day from tomorrow back newestDays days, and past those the
// last record stored for the community at all. So it is exact to the day
// and, within the day, is the message stored last: a back-fill that stores an
// older message of that day after newer ones is ahead of it until the next
// live message. Records of versions before per-message subjects
// (msgs.<c>.<day>) are not looked at.
func (s *Store) Newest(ctx context.Context, c archive.CommunityID) (uint64, bool, error) {
	str, err := s.Bus.JS.Stream(ctx, bus.StreamMessages)
	if err != nil {
		return 0, false, fmt.Errorf("newest message: %w", err)
	}
	prefix := "msgs." + c.String() + "."
	last := func(subject string) (uint64, bool, error) {
		r, err := str.GetLastMsgForSubject(ctx, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, false, nil
		}
		if err != nil {
			return 0, false, fmt.Errorf("newest message: %w", err)
		}
		var newest uint64
		found := recordTimestamps(&bus.Record{Subject: r.Subject, Seq: r.Sequence, Header: r.Header, Data: r.Data}, func(ts uint64) {
			newest = max(newest, ts)
		})
		if !found {
			// Ingest always writes timestamps; a record from elsewhere may not.
			var m archive.Message
			if err := m.UnmarshalBinary(r.Data); err != nil {
				return 0, false, fmt.Errorf("newest message: record %s (seq %d) has no timestamp and does not decode: %v",
					r.Subject, r.Sequence, err)
			}
			newest = m.Timestamp
		}
		return newest, true, nil
	}
	tomorrow := uint64(time.Now().Unix())/day + 1
	for i := range uint64(newestDays) {
		if ts, ok, err := last(prefix + strconv.FormatUint(tomorrow-i, 10) + ".*"); ok || err != nil {
			return ts, ok, err
		}
	}
	return last(prefix + "*.*")
}
