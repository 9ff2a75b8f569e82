package store

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/archivefleet/archivefleet/internal/archive"
)

// MaxBatchBytes bounds one ingest request.
const MaxBatchBytes = 64 << 20

// DecodeMessages parses a JSON array of messages or JSON lines, validating
// each and naming the first bad one.
func DecodeMessages(b []byte, limit int) ([]archive.Message, error) {
	if len(b) > limit {
		return nil, fmt.Errorf("batch of %d bytes is over the %d-byte limit", len(b), limit)
	}
	t := bytes.TrimSpace(b)
	if len(t) == 0 {
		return nil, fmt.Errorf("empty batch")
	}
	if t[0] == '[' {
		var raw []json.RawMessage
		if err := json.Unmarshal(t, &raw); err != nil {
			return nil, fmt.Errorf("decode batch: %w", err)
		}
		out := make([]archive.Message, 0, len(raw))
		for i, r := range raw {
			m, err := archive.DecodeMessageJSON(r)
			if err != nil {
				return nil, fmt.Errorf("message %d: %w", i, err)
			}
			out = append(out, m)
		}
		return out, nil
	}
	var out []archive.Message
	sc := bufio.NewScanner(bytes.NewReader(t))
	sc.Buffer(nil, limit)
	for line := 1; sc.Scan(); line++ {
		l := bytes.TrimSpace(sc.Bytes())
		if len(l) == 0 {
			continue
		}
		m, err := archive.DecodeMessageJSON(l)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out = append(out, m)
	}
	return out, sc.Err()
}
