package ctl

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/archivefleet/archivefleet/internal/bus"
)

func runDLQ(ctx context.Context, env Env, args []string) error {
	const usage = "usage: archivectl dlq list|retry [flags]"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprintln(env.Stderr, usage)
		return flag.ErrHelp
	}
	if len(args) == 0 || (args[0] != "list" && args[0] != "retry") {
		fmt.Fprintln(env.Stderr, usage)
		return errUsage
	}
	fs := newFlagSet(env, "dlq "+args[0], map[string]string{"list": "", "retry": "-seq N [-seq N]... | -all"}[args[0]])
	url := natsFlag(fs)
	var seqs listFlag
	all := new(bool)
	if args[0] == "retry" {
		fs.Var(&seqs, "seq", "dead letter sequence to retry, repeatable")
		all = fs.Bool("all", false, "retry every dead letter")
	}
	if err := parse(fs, args[1:], 0); err != nil {
		return err
	}
	b, err := connect(ctx, env, *url, "archivectl")
	if err != nil {
		return err
	}
	defer b.NC.Close()
	letters, err := bus.DeadLetters(ctx, b)
	if err != nil {
		return err
	}
	if args[0] == "list" {
		if len(letters) == 0 {
			fmt.Fprintln(env.Stdout, "no dead-lettered events")
			return nil
		}
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tTIME\tSUBJECT\tDELIVERIES\tREASON\tPAYLOAD")
		for _, l := range letters {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", l.Seq, l.Time.UTC().Format(time.RFC3339), l.Subject, l.Deliveries,
				l.Reason, truncate(string(l.Payload), 80))
		}
		return tw.Flush()
	}
	want := map[string]bool{}
	for _, s := range seqs {
		want[s] = true
	}
	if !*all && len(want) == 0 {
		fs.Usage()
		return errUsage
	}
	n := 0
	for _, l := range letters {
		if !*all && !want[fmt.Sprint(l.Seq)] {
			continue
		}
		if err := bus.Redeliver(ctx, b, l); err != nil {
			return fmt.Errorf("retry %d: %w", l.Seq, err)
		}
		n++
	}
	fmt.Fprintf(env.Stdout, "retried %d dead letters\n", n)
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
