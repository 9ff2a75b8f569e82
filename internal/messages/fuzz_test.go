package messages

import (
	"encoding/json"
	"testing"

	"github.com/archivefleet/archivefleet/internal/archive"
)

// FuzzDecodeBatch feeds the ingest decoder arbitrary batches: it never
// panics, and every item it hands on without an error is a valid message.
func FuzzDecodeBatch(f *testing.F) {
	good, _ := json.Marshal([]archive.Message{msg(5), msg(6)})
	f.Add(good)
	line, _ := json.Marshal(msg(7))
	f.Add(append(append(line, '\n'), line...))
	f.Add([]byte(`[{"sig":"0x04","timestamp":1}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		items, err := DecodeBatch(b, 1<<20)
		if err != nil {
			return
		}
		for i := range items {
			if items[i].Err != nil {
				continue
			}
			if err := items[i].Msg.Validate(); err != nil {
				t.Fatalf("accepted an invalid message: %v", err)
			}
		}
	})
}
