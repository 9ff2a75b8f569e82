package ctl

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/messages"
)

// runConflicts lists the records ingest refused because their hash was
// stored with other content, next to the stored record.
func runConflicts(ctx context.Context, env Env, args []string) error {
	const usage = "usage: archivectl conflicts list [flags]"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprintln(env.Stderr, usage)
		return flag.ErrHelp
	}
	if len(args) == 0 || args[0] != "list" {
		fmt.Fprintln(env.Stderr, usage)
		return errUsage
	}
	fs := newFlagSet(env, "conflicts list", "[-community 0x…] [-limit N] [-json]")
	url := natsFlag(fs)
	community := fs.String("community", "", "only this community (0x…); default every community")
	limit := fs.Int("limit", 100, "show the newest N")
	asJSON := fs.Bool("json", false, "print every field as JSON lines (both records, payloads as hex)")
	if err := parse(fs, args[1:], 0); err != nil {
		return err
	}
	if *community != "" {
		id, err := archive.ParseCommunityID(*community)
		if err != nil {
			return err
		}
		*community = id.String()
	}
	if *limit < 1 {
		return fmt.Errorf("-limit must be at least 1")
	}
	b, err := connect(ctx, env, *url, "archivectl")
	if err != nil {
		return err
	}
	defer b.NC.Close()
	cs, err := (&messages.Store{Bus: b}).Conflicts(ctx, *community, *limit)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		for _, c := range cs {
			if err := enc.Encode(c); err != nil {
				return err
			}
		}
		return nil
	}
	if len(cs) == 0 {
		fmt.Fprintln(env.Stdout, "no conflicts")
		return nil
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tCOMMUNITY\tHASH\tSOURCE\tSTORED (stays)\tREFUSED (kept aside)")
	for _, c := range cs {
		stored := c.StoredError
		if c.Stored != nil {
			stored = describe(c.Stored, len(c.Stored.Payload))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Seq, c.Time.UTC().Format(time.RFC3339), truncate(c.Community, 12),
			truncate(c.Refused.Hash.String(), 18), c.Source, stored, describe(&c.Refused, c.PayloadBytes))
	}
	return tw.Flush()
}

// describe sums a message up for the conflicts table.
func describe(m *archive.Message, payloadBytes int) string {
	return fmt.Sprintf("ts %d, sig %s, %d payload bytes", m.Timestamp, truncate(m.Sig.String(), 14), payloadBytes)
}
