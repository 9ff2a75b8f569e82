package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fleet"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/schedule"
	"github.com/archivefleet/archivefleet/internal/state"
)

// connect reads the fleet's NATS settings from the environment (as the
// services do), lets -nats override the URL, and sets up the topology.
func connect(ctx context.Context, env Env, url string) (*bus.Bus, error) {
	var c fleet.Common
	if err := fleet.Load(&c); err != nil {
		return nil, err
	}
	if url != "" {
		c.NATSURL = url
	}
	// Connection events arrive on NATS's own goroutine, possibly after the
	// command returned; errors that matter come back from the calls instead.
	return c.Connect(ctx, "archivectl", slog.New(slog.DiscardHandler))
}

func natsFlag(fs *flag.FlagSet) *string {
	return fs.String("nats", "", "NATS URL (default: $ARCHIVEFLEET_NATS_URL or nats://127.0.0.1:4222)")
}

func runCommunity(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(env.Stderr, "usage: archivectl community add|list|disable|enable|remove [flags]")
		return errUsage
	}
	switch args[0] {
	case "add":
		return communityAdd(ctx, env, args[1:])
	case "list":
		return communityList(ctx, env, args[1:])
	case "disable", "enable", "remove":
		return communitySet(ctx, env, args[0], args[1:])
	}
	fmt.Fprintf(env.Stderr, "archivectl community: unknown subcommand %q\n", args[0])
	return errUsage
}

func communityAdd(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "community add", "-private-key 0x… [flags]")
	url := natsFlag(fs)
	keyHex := fs.String("private-key", "", "community private key, 0x + 64 hex (required; signs announcements)")
	interval := fs.Duration("interval", archive.DefaultInterval, "archive window")
	since := fs.String("since", "now", `start of the first archive: unix seconds or "now"`)
	ratchet := fs.String("ratchet", "", "hash-ratchet key file (from keygen -ratchet): the community is token-gated and its archives are encrypted")
	var topics listFlag
	fs.Var(&topics, "topic", "channel content topic 0x…8 hex, repeatable (the universal <id>-memberUpdate topic is always added)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	var key archive.HexBytes
	if err := key.UnmarshalText([]byte(*keyHex)); err != nil || len(key) != 32 {
		return errors.New("-private-key must be 0x + 64 hex digits")
	}
	com := &registry.Community{Interval: registry.Duration(*interval), SigningKey: key}
	copy(com.ID[:], secp256k1.PrivKeyFromBytes(key).PubKey().SerializeCompressed())
	for _, s := range topics {
		t, err := archive.ParseTopic(s)
		if err != nil {
			return err
		}
		com.Topics = append(com.Topics, t)
	}
	if *since == "now" {
		com.Since = uint64(time.Now().Unix())
	} else {
		v, err := strconv.ParseUint(*since, 10, 64)
		if err != nil {
			return fmt.Errorf("-since: %w", err)
		}
		com.Since = v
	}
	if *ratchet != "" {
		_, kf, err := loadKeys(*ratchet, com.ID)
		if err != nil {
			return err
		}
		if kf.State == nil {
			return fmt.Errorf("%s has no current key", *ratchet)
		}
		com.Encrypted, com.InstallationID, com.RatchetKey, com.OldKeys = true, kf.InstallationID, &kf.State.Key, kf.Keys
	}
	b, err := connect(ctx, env, *url)
	if err != nil {
		return err
	}
	defer b.NC.Close()
	if err := registry.New(b.Communities).Put(ctx, com); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "registered %s (interval %v, since %d, %d topics, encrypted=%v)\n", com.ID, *interval, com.Since, len(com.Topics), com.Encrypted)
	return nil
}

// oneCommunity parses the flags of a command about one community (-nats and
// the id flag), and connects.
func oneCommunity(ctx context.Context, env Env, name, idFlag string, args []string) (archive.CommunityID, *bus.Bus, error) {
	fs := newFlagSet(env, name, "-"+idFlag+" 0x…")
	url := natsFlag(fs)
	idStr := fs.String(idFlag, "", "community id")
	if err := parse(fs, args, 0); err != nil {
		return archive.CommunityID{}, nil, err
	}
	id, err := archive.ParseCommunityID(*idStr)
	if err != nil {
		return id, nil, err
	}
	b, err := connect(ctx, env, *url)
	return id, b, err
}

func communitySet(ctx context.Context, env Env, verb string, args []string) error {
	id, b, err := oneCommunity(ctx, env, "community "+verb, "id", args)
	if err != nil {
		return err
	}
	defer b.NC.Close()
	r := registry.New(b.Communities)
	switch verb {
	case "disable":
		err = r.SetDisabled(ctx, id, true)
	case "enable":
		err = r.SetDisabled(ctx, id, false)
	case "remove":
		err = r.Remove(ctx, id)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "%sd %s\n", verb[:len(verb)-1], id)
	return nil
}

func communityList(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "community list", "[-json]")
	url := natsFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON lines")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	b, err := connect(ctx, env, *url)
	if err != nil {
		return err
	}
	defer b.NC.Close()
	coms, err := registry.New(b.Communities).List(ctx)
	if err != nil {
		return err
	}
	st := &state.Store{KV: b.State}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	if !*asJSON {
		fmt.Fprintln(tw, "COMMUNITY\tINTERVAL\tLAST END\tNEXT DUE\tARCHIVES\tINFOHASH\tANNOUNCED\tSTATUS")
	}
	for _, c := range coms {
		bs, _, err := st.GetBuild(ctx, c.ID.String())
		if err != nil {
			return err
		}
		an, _, err := st.GetAnnounce(ctx, c.ID.String())
		if err != nil {
			return err
		}
		due, _ := schedule.NextDue(c, bs.LastEnd, time.Now())
		status := "active"
		if c.Disabled {
			status = "disabled"
		}
		if *asJSON {
			json.NewEncoder(env.Stdout).Encode(map[string]any{"community": c.ID, "interval": c.Interval, "lastEnd": bs.LastEnd,
				"nextDue": due.Unix(), "archives": len(bs.Archives), "infoHash": bs.InfoHash, "magnet": an.Magnet,
				"announcedClock": an.Clock, "disabled": c.Disabled})
			continue
		}
		last := "-"
		if bs.LastEnd > 0 {
			last = ts(bs.LastEnd)
		}
		fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%d\t%s\t%s\t%s\n", c.ID, time.Duration(c.Interval), last, ts(uint64(due.Unix())),
			len(bs.Archives), orDash(bs.InfoHash), orDash(an.Magnet), status)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func runBackfill(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "backfill", "-community 0x… | -all [-wait]")
	url := natsFlag(fs)
	idStr := fs.String("community", "", "community id")
	all := fs.Bool("all", false, "every registered community")
	wait := fs.Bool("wait", false, "wait until every published window is committed, printing progress")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if (*idStr == "") == !*all {
		fs.Usage()
		return errUsage
	}
	b, err := connect(ctx, env, *url)
	if err != nil {
		return err
	}
	defer b.NC.Close()
	reg := registry.New(b.Communities)
	var coms []*registry.Community
	if *all {
		if coms, err = reg.List(ctx); err != nil {
			return err
		}
	} else {
		id, err := archive.ParseCommunityID(*idStr)
		if err != nil {
			return err
		}
		c, err := reg.Get(ctx, id)
		if err != nil {
			return err
		}
		coms = []*registry.Community{c}
	}
	evs, err := schedule.Backfill(ctx, b, coms, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "published %d due events\n", len(evs))
	if !*wait {
		return nil
	}
	st := &state.Store{KV: b.State}
	for {
		done := 0
		for _, ev := range evs {
			bs, _, err := st.GetBuild(ctx, ev.Community)
			if err != nil {
				return err
			}
			if bs.LastEnd >= ev.End {
				done++
			}
		}
		fmt.Fprintf(env.Stderr, "\r%s %d/%d", bar(done, len(evs), 30), done, len(evs))
		if done == len(evs) {
			fmt.Fprintln(env.Stderr)
			return nil
		}
		select {
		case <-ctx.Done():
			fmt.Fprintln(env.Stderr)
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func bar(done, total, width int) string {
	n := width
	if total > 0 {
		n = done * width / total
	}
	out := make([]byte, width+2)
	out[0], out[width+1] = '[', ']'
	for i := 0; i < width; i++ {
		out[i+1] = '.'
		if i < n {
			out[i+1] = '#'
		}
	}
	return string(out)
}

// runTrigger archives a community up to now, including the open window,
// as status-go's catch-up case does (to = now); later windows are anchored
// at the new end.
func runTrigger(ctx context.Context, env Env, args []string) error {
	id, b, err := oneCommunity(ctx, env, "trigger", "community", args)
	if err != nil {
		return err
	}
	defer b.NC.Close()
	com, err := registry.New(b.Communities).Get(ctx, id)
	if err != nil {
		return err
	}
	cur, _, err := (&state.Store{KV: b.State}).GetBuild(ctx, id.String())
	if err != nil {
		return err
	}
	from := com.NextStart(cur.LastEnd)
	end := uint64(time.Now().Unix())
	if end <= from {
		return fmt.Errorf("nothing to archive: archived up to %d", from)
	}
	ev := bus.DueEvent{Community: id.String(), From: from, End: end, Reason: "trigger"}
	// Its own id: an operator's request must not vanish as a duplicate of a
	// scheduled event that happens to end at the same second.
	if _, err := b.Publish(ctx, bus.SubjectDue(ev.Community), fmt.Sprintf("trigger:%s:%d", ev.Community, end), ev); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "archive of %s [%d, %d) requested\n", id, from, end)
	return nil
}
