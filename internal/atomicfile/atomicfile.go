// Package atomicfile replaces files so that readers, and the file system after
// a crash, see either the old content or the new, never a mix.
package atomicfile

import (
	"os"
	"path/filepath"
	"strings"
)

// WriteFile replaces path with data: a temp file in the same folder, fsync,
// rename, fsync of the folder. One writer per path at a time (the temp
// file's name is fixed, so a crash leaves at most one, which RemoveStale
// deletes without listing the folder).
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, true)
}

// WriteCache replaces path with data as WriteFile does, without waiting for
// the disk: after a crash the file holds the old content, the new, or none.
// For files that only save work (a cache), whose loss costs a refetch.
func WriteCache(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, false)
}

func write(path string, data []byte, perm os.FileMode, durable bool) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp := filepath.Join(dir, tempName(base))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // a no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if durable {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if !durable {
		return nil
	}
	return SyncDir(dir)
}

// tempName is WriteFile's temp file for base.
func tempName(base string) string { return "." + base + ".tmp" }

// RemoveStale deletes the temp file an interrupted WriteFile of dir/base
// left.
func RemoveStale(dir, base string) {
	os.Remove(filepath.Join(dir, tempName(base)))
}

// SweepStale deletes every temp file interrupted writes left in dir,
// including those of versions that named them with a random suffix
// (".<base>.tmp-<n>"): for a process's start, as it lists the folder.
func SweepStale(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, ".") && (strings.HasSuffix(n, ".tmp") || strings.Contains(n, ".tmp-")) {
			os.Remove(filepath.Join(dir, n))
		}
	}
}

// SyncDir fsyncs a folder so that a rename in it survives a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
