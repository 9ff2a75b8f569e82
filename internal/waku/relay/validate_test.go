package relay

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/wakuwire"
	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
	"google.golang.org/protobuf/proto"
)

// TestCheckMessage: the relay's clock and size rule, nwaku's RLN rule (gap
// in whole seconds > 20 rejected).
func TestCheckMessage(t *testing.T) {
	now := time.Unix(1_700_000_000, 123_456_789)
	at := func(d time.Duration) int64 { return now.Add(d).UnixNano() }
	for _, tc := range []struct {
		name string
		ts   int64
		size int
		want string
	}{
		{"now", at(0), 100, ""},
		{"20.99 s old", at(-20990 * time.Millisecond), 100, ""},
		{"20.99 s ahead", at(20990 * time.Millisecond), 100, ""},
		{"21 s old", at(-21 * time.Second), 100, RejectTooOld},
		{"21 s ahead", at(21 * time.Second), 100, RejectTooNew},
		{"1000 hours old", at(-1000 * time.Hour), 100, RejectTooOld},
		{"1000 days ahead", at(1000 * 24 * time.Hour), 100, RejectTooNew},
		{"zero", 0, 100, RejectNoTimestamp},
		{"one nanosecond after 1970", 1, 100, RejectTooOld},
		{"negative", -1, 100, RejectTooOld},
		{"most negative", math.MinInt64, 100, RejectTooOld},
		{"largest", math.MaxInt64, 100, RejectTooNew},
		{"at the size limit", at(0), MaxWakuMessageSize, ""},
		{"over the size limit", at(0), MaxWakuMessageSize + 1, RejectTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &wakuwire.Message{Payload: []byte("x"), ContentTopic: "/archivefleet/1/relay-check/proto", Timestamp: tc.ts}
			if got := CheckMessage(m, tc.size, now); got != tc.want {
				t.Fatalf("CheckMessage = %q, want %q", got, tc.want)
			}
			if tc.want != "" && !strings.HasPrefix(DescribeReject(tc.want, m, now), "invalid message: ") {
				t.Fatalf("description %q", DescribeReject(tc.want, m, now))
			}
		})
	}
}

// TestRelayFrameOverhead: a message of MaxWakuMessageSize on the longest
// shard topic fits gossipsub's frame.
func TestRelayFrameOverhead(t *testing.T) {
	topic := wakuwire.ShardTopic(65535, 1023)
	rpc := &pubsubpb.RPC{Publish: []*pubsubpb.Message{{Data: make([]byte, MaxWakuMessageSize), Topic: &topic}}}
	if n := proto.Size(rpc); n > MaxFrameSize {
		t.Fatalf("RPC of %d bytes, frame limit %d", n, MaxFrameSize)
	}
}
