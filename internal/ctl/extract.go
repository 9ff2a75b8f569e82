package ctl

import (
	"context"
	"fmt"

	"github.com/archivefleet/archivefleet/internal/archive"
)

func runExtract(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "extract", "[flags] ARCHIVE_FOLDER")
	keys := fs.String("keys", "", "hash-ratchet key file for encrypted archives")
	var ids listFlag
	fs.Var(&ids, "archive", "archive id to extract, repeatable (default: all, oldest first)")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	folder, err := openFolder(fs.Arg(0), *keys)
	if err != nil {
		return err
	}
	defer folder.Close()
	entries := folder.Index.ByFrom()
	if len(ids) > 0 {
		entries = entries[:0]
		for _, id := range ids {
			e, ok := folder.Index.Lookup(id)
			if !ok {
				return fmt.Errorf("no archive %s in %s", id, fs.Arg(0))
			}
			entries = append(entries, e)
		}
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		a, err := archive.ReadArchive(folder.Data, e, folder.dec)
		if err != nil {
			return err
		}
		if err := writeJSONLines(env.Stdout, a.Messages); err != nil {
			return err
		}
	}
	return nil
}
