package ctl

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/anacrolix/torrent/metainfo"

	"github.com/archivefleet/archivefleet/internal/archive"
)

func runInspect(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "inspect", "[flags] TORRENT_FILE|ARCHIVE_FOLDER")
	dataDir := fs.String("data-dir", "", "archive data folder for a torrent argument (default: ../archivedata beside the torrent folder)")
	keys := fs.String("keys", "", "hash-ratchet key file for encrypted archives")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	path := fs.Arg(0)
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	dir := path
	if !st.IsDir() {
		mi, err := metainfo.LoadFromFile(path)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		info, err := mi.UnmarshalInfo()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		ih := mi.HashInfoBytes()
		fmt.Fprintf(env.Stdout, "torrent   %s\ninfohash  %s\nname      %s\npieces    %d x %d bytes\nmagnet    %s\n",
			path, ih.HexString(), info.Name, info.NumPieces(), info.PieceLength, archive.Magnet(mi, info.Name, nil))
		for _, f := range info.Files {
			fmt.Fprintf(env.Stdout, "file      %-6s %d bytes\n", strings.Join(f.Path, "/"), f.Length)
		}
		if _, err := archive.ParseCommunityID(info.Name); err != nil {
			return fmt.Errorf("torrent name: %w", err)
		}
		base := *dataDir
		if base == "" {
			base = filepath.Join(filepath.Dir(filepath.Dir(path)), "archivedata")
		}
		dir = filepath.Join(base, info.Name)
		if _, err := os.Stat(dir); err != nil {
			fmt.Fprintf(env.Stdout, "(no archive folder at %s)\n", dir)
			return nil
		}
		fmt.Fprintln(env.Stdout)
	}
	folder, err := openFolder(dir, *keys)
	if err != nil {
		return err
	}
	defer folder.Close()
	fmt.Fprintf(env.Stdout, "folder    %s (%d archives, encrypted=%v)\n\n", dir, len(folder.Index.Entries), folder.Index.Encrypted)
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tFROM\tTO\tMESSAGES\tOFFSET\tSIZE\tPADDING\tPIECES")
	for _, e := range folder.Index.ByFrom() {
		if err := ctx.Err(); err != nil {
			return err
		}
		msgs := "?"
		if a, err := archive.ReadArchive(folder.Data, e, folder.dec); err == nil {
			msgs = fmt.Sprint(len(a.Messages))
		} else {
			msgs = "error: " + err.Error()
		}
		start, end := e.Pieces()
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d-%d\n", e.ID, ts(e.From), ts(e.To), msgs, e.Offset, e.Size, e.Padding, start, end-1)
	}
	return tw.Flush()
}

func ts(s uint64) string {
	return time.Unix(int64(s), 0).UTC().Format("2006-01-02T15:04:05Z")
}

type openedFolder struct {
	*archive.Folder
	dec archive.Decrypter
}

// openFolder opens an archive folder, whose name is the community id, with
// the key file's keys when given.
func openFolder(dir, keys string) (*openedFolder, error) {
	var dec archive.Decrypter
	if keys != "" {
		c, err := archive.ParseCommunityID(filepath.Base(filepath.Clean(dir)))
		if err != nil {
			return nil, fmt.Errorf("folder name must be the community id to use keys: %w", err)
		}
		r, _, err := loadKeys(keys, c)
		if err != nil {
			return nil, err
		}
		dec = r
	}
	f, err := archive.OpenFolder(dir, dec, archive.Limits{})
	if err != nil {
		return nil, err
	}
	return &openedFolder{Folder: f, dec: dec}, nil
}
