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
	out, _, err := DeadLettersUpTo(ctx, b, 0)
	return out, err
}

// DeadLettersUpTo lists at most limit dead letters (0: all), oldest first,
// and how many the stream holds.
func DeadLettersUpTo(ctx context.Context, b *Bus, limit int) ([]StoredDeadLetter, uint64, error) {
	s, err := b.JS.Stream(ctx, StreamDLQ)
	if err != nil {
		return nil, 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, 0, err
	}
	out := []StoredDeadLetter{}
	if info.State.Msgs == 0 {
		return out, 0, nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && (limit <= 0 || len(out) < limit); seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		var dl DeadLetter
		if err := json.Unmarshal(m.Data, &dl); err != nil {
			continue
		}
		out = append(out, StoredDeadLetter{DeadLetter: dl, Seq: seq, Time: m.Time})
	}
	return out, info.State.Msgs, nil
}

// GetDeadLetter reads the dead letter at seq.
func GetDeadLetter(ctx context.Context, b *Bus, seq uint64) (StoredDeadLetter, error) {
	s, err := b.JS.Stream(ctx, StreamDLQ)
	if err != nil {
		return StoredDeadLetter{}, err
	}
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		return StoredDeadLetter{}, fmt.Errorf("dead letter %d: %w", seq, err)
	}
	var dl DeadLetter
	if err := json.Unmarshal(m.Data, &dl); err != nil {
		return StoredDeadLetter{}, fmt.Errorf("dead letter %d: %w", seq, err)
	}
	return StoredDeadLetter{DeadLetter: dl, Seq: seq, Time: m.Time}, nil
}

// DiscardDeadLetter removes the dead letter at seq without redelivering it.
func DiscardDeadLetter(ctx context.Context, b *Bus, seq uint64) error {
	s, err := b.JS.Stream(ctx, StreamDLQ)
	if err != nil {
		return err
	}
	if err := s.DeleteMsg(ctx, seq); err != nil {
		return fmt.Errorf("dead letter %d: %w", seq, err)
	}
	return nil
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
