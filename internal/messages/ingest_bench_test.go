package messages

import (
	"bytes"
	"context"
	"testing"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// BenchmarkIngestEmpty: the cost of a batch of empty messages, all refused
// (per message).
func BenchmarkIngestEmpty(b *testing.B) {
	bs := testenv.Bus(b, testenv.NATS(b), bus.Config{})
	register(&testing.T{}, bs, start)
	s := &Store{Bus: bs}
	const n = 100_000
	body := bytes.Repeat([]byte("{}\n"), n)
	lease, _ := s.budget().Acquire(context.Background())
	b.ResetTimer()
	for range b.N {
		res, err := s.IngestBatch(context.Background(), community, bytes.NewReader(body), MaxBatchBytes, lease, "bench")
		if err != nil || res.Refused != n {
			b.Fatal(err, res.Refused)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/message")
}
