package store

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/archivefleet/archivefleet/internal/archive"
)

// MaxBatchBytes bounds one ingest request. It holds one message at the
// 30,000,000-byte archive cap written as hex JSON.
const MaxBatchBytes = 64 << 20

// DecodeBatch parses a JSON array of messages or JSON lines. A message that
// does not decode or validate becomes an Item with its error, so the rest of
// the batch can still be stored; only a batch that is not a JSON array or
// JSON lines at all is an error.
func DecodeBatch(b []byte, limit int) ([]Item, error) {
	if len(b) > limit {
		return nil, fmt.Errorf("batch of %d bytes is over the %d-byte limit", len(b), limit)
	}
	t := bytes.TrimSpace(b)
	if len(t) == 0 {
		return nil, fmt.Errorf("empty batch")
	}
	decode := func(raw []byte, where string) Item {
		m, err := archive.DecodeMessageJSON(raw)
		if err != nil {
			err = fmt.Errorf("%s: %w", where, err)
		}
		return Item{Msg: m, Err: err}
	}
	if t[0] == '[' {
		var raw []json.RawMessage
		if err := json.Unmarshal(t, &raw); err != nil {
			return nil, fmt.Errorf("decode batch: %w", err)
		}
		out := make([]Item, 0, len(raw))
		for i, r := range raw {
			out = append(out, decode(r, fmt.Sprintf("message %d", i)))
		}
		return out, nil
	}
	var out []Item
	sc := bufio.NewScanner(bytes.NewReader(t))
	sc.Buffer(nil, limit)
	for line := 1; sc.Scan(); line++ {
		l := bytes.TrimSpace(sc.Bytes())
		if len(l) == 0 {
			continue
		}
		out = append(out, decode(l, fmt.Sprintf("line %d", line)))
	}
	return out, sc.Err()
}
