package state

import (
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/archivefleet/archivefleet/internal/atomicfile"
)

// LocalMark records, beside a local copy of a community folder, the
// committed torrent it was last brought to. Because data only grows, its
// first DataBytes are committed (and verified) data shared by every later
// state; only that prefix is trusted after a crash or restart.
type LocalMark struct {
	InfoHash  string `json:"infoHash"`
	DataBytes int64  `json:"dataBytes"`
}

// ReadLocalMark returns the mark at path, or the zero mark.
func ReadLocalMark(path string) LocalMark {
	var m LocalMark
	if b, err := os.ReadFile(path); err == nil {
		json.Unmarshal(b, &m)
	}
	return m
}

// WriteLocalMark replaces the mark at path atomically.
func WriteLocalMark(path string, m LocalMark) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o600)
}

// FileSize is the size of a file, 0 if it does not exist.
func FileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}
