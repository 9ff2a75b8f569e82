package bus_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

func TestMayHaveTakenEffect(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"request timeout", fmt.Errorf("kv: %w", nats.ErrTimeout), true},
		{"deadline", context.DeadlineExceeded, true},
		{"async publish timeout", jetstream.ErrAsyncPublishTimeout, true},
		{"no responders", nats.ErrNoResponders, false},
		{"publish: no response from stream", jetstream.ErrNoStreamResponse, false},
		{"cluster unavailable", &jetstream.APIError{Code: 503, ErrorCode: 10008}, false},
		{"not transient: key exists", jetstream.ErrKeyExists, false},
		{"not transient: cancelled", context.Canceled, false},
	} {
		if got := bus.MayHaveTakenEffect(tc.err); got != tc.want {
			t.Errorf("%s: MayHaveTakenEffect(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestPublishRepeats: an event publish is repeated over transient errors;
// a repeat whose first attempt was stored after all (its ack lost) is
// dropped by the stream's duplicate window and not reported as a
// duplicate — it is this call's own event — while an event someone else
// published first still is. An error a repeat cannot fix (a payload over
// the server's limit) fails at once.
func TestPublishRepeats(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{Memory: true})
	ctx := context.Background()
	for i, tc := range []struct {
		name      string
		before    bool  // someone published the same id first
		first     error // the first attempt's answer (nil: none injected)
		firstSent bool  // the first attempt reached the stream before that answer
		dup       bool  // want Duplicate
	}{
		{name: "ack lost", first: nats.ErrTimeout, firstSent: true},
		{name: "published before by another", before: true, dup: true},
		{name: "refused, then found published before by another", before: true,
			first: &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, dup: true},
		{name: "nothing answered, then published", first: jetstream.ErrNoStreamResponse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			subject, id := bus.SubjectDue(fmt.Sprintf("c%d", i)), fmt.Sprintf("test:%d", i)
			pub := func(ctx context.Context) (*jetstream.PubAck, error) {
				return b.JS.Publish(ctx, subject, []byte("{}"), jetstream.WithMsgID(id))
			}
			if tc.before {
				if _, err := pub(ctx); err != nil {
					t.Fatal(err)
				}
			}
			attempts := 0
			ack, err := bus.PublishRetrying(ctx, func(ctx context.Context) (*jetstream.PubAck, error) {
				attempts++
				if attempts == 1 && tc.first != nil {
					if tc.firstSent {
						if _, err := pub(ctx); err != nil {
							t.Fatal(err)
						}
					}
					return nil, tc.first
				}
				return pub(ctx)
			})
			if err != nil {
				t.Fatal(err)
			}
			want := 1
			if tc.first != nil {
				want = 2
			}
			if attempts != want {
				t.Fatalf("%d attempts, want %d", attempts, want)
			}
			if ack.Duplicate != tc.dup {
				t.Fatalf("Duplicate = %v, want %v", ack.Duplicate, tc.dup)
			}
			str, err := b.JS.Stream(ctx, bus.StreamDue)
			if err != nil {
				t.Fatal(err)
			}
			info, err := str.Info(ctx, jetstream.WithSubjectFilter(subject))
			if err != nil {
				t.Fatal(err)
			}
			if n := info.State.Subjects[subject]; n != 1 {
				t.Fatalf("%d events stored, want 1", n)
			}
		})
	}
	t.Run("over the max payload", func(t *testing.T) {
		t0 := time.Now()
		_, err := b.Publish(ctx, bus.SubjectDue("big"), "big", strings.Repeat("x", int(b.NC.MaxPayload())+1))
		if err == nil || bus.IsTransient(err) {
			t.Fatalf("Publish: %v, want a non-transient error", err)
		}
		if took := time.Since(t0); took > 500*time.Millisecond {
			t.Fatalf("failed after %v: repeated", took)
		}
	})
}
