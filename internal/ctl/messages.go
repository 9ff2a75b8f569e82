package ctl

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/archivefleet/archivefleet/internal/archive"
)

// maxLineBytes bounds one JSON line: a 30 MB payload in hex plus the rest.
const maxLineBytes = 128 << 20

// readMessages reads JSON-lines messages from path ("-" for stdin),
// reporting the line of the first bad one. A message over the archive cap is
// kept: the build skips it with a warning naming its hash and archives the
// rest (status-go drops such messages silently).
func readMessages(env Env, path string) ([]archive.Message, error) {
	var r io.Reader = env.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), maxLineBytes)
	var out []archive.Message
	for line := 1; sc.Scan(); line++ {
		b := sc.Bytes()
		if len(trimSpace(b)) == 0 {
			continue
		}
		m, err := archive.DecodeMessageJSON(b)
		if err != nil && !errors.Is(err, archive.ErrTooLarge) {
			return nil, fmt.Errorf("%s line %d: %w", path, line, err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

func writeJSONLines[T any](w io.Writer, items []T) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for i := range items {
		if err := enc.Encode(&items[i]); err != nil {
			return err
		}
	}
	return bw.Flush()
}
