package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StoredDeadLetter is a dead letter with its place in the DLQ stream.
type StoredDeadLetter struct {
	DeadLetter
	Seq  uint64
	Time time.Time
}

// DeadLetters lists the dead-letter stream, oldest first.
func DeadLetters(ctx context.Context, b *Bus) ([]StoredDeadLetter, error) {
	s, err := b.JS.Stream(ctx, StreamDLQ)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []StoredDeadLetter
	if info.State.Msgs == 0 {
		return out, nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var dl DeadLetter
		if err := json.Unmarshal(m.Data, &dl); err != nil {
			continue
		}
		out = append(out, StoredDeadLetter{DeadLetter: dl, Seq: seq, Time: m.Time})
	}
	return out, nil
}

// Redeliver publishes a dead letter's payload to its original subject again and
// removes it from the dead-letter stream.
func Redeliver(ctx context.Context, b *Bus, l StoredDeadLetter) error {
	if _, err := b.JS.Publish(ctx, l.Subject, l.Payload, jetstream.WithMsgID(fmt.Sprintf("retry:%d:%d", l.Seq, time.Now().UnixNano()))); err != nil {
		return err
	}
	s, err := b.JS.Stream(ctx, StreamDLQ)
	if err != nil {
		return err
	}
	return s.DeleteMsg(ctx, l.Seq)
}
