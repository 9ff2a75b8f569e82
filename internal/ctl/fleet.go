package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/natsconf"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/scheduler"
	"github.com/archivefleet/archivefleet/internal/state"
)

// connect reads the fleet's NATS settings from the environment (as the
// services do), lets -nats override the URL, and sets up the topology.
// name is the connection's (and its reply inboxes', see natsconf.Connect):
// "archivectl" for the admin's commands, "prober" for probe.
func connect(ctx context.Context, env Env, url, name string) (*bus.Bus, error) {
	c := natsconf.DefaultCommon()
	if err := natsconf.Load(&c); err != nil {
		return nil, err
	}
	if url != "" {
		c.NATSURL = url
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	// Connection events arrive on NATS's own goroutine, possibly after the
	// command returned; errors that matter come back from the calls instead.
	b, err := c.Connect(ctx, name, slog.New(slog.DiscardHandler))
	if errors.Is(err, bus.ErrTopologyDenied) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w\n(is the fleet running? `go run ./cmd/fleet` listens on %s; elsewhere pass -nats URL or set %s_NATS_URL)",
			err, natsconf.DefaultNATSURL, natsconf.Prefix)
	}
	return b, nil
}

func natsFlag(fs *flag.FlagSet) *string {
	return fs.String("nats", "", "NATS URL (default: $ARCHIVEFLEET_NATS_URL or "+natsconf.DefaultNATSURL+")")
}

const communityUsage = "usage: archivectl community add|list|disable|enable|remove [flags]"

func runCommunity(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(env.Stderr, communityUsage)
		return errUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(env.Stderr, communityUsage)
		return flag.ErrHelp
	case "add":
		return communityAdd(ctx, env, args[1:])
	case "list":
		return communityList(ctx, env, args[1:])
	case "disable", "enable", "remove":
		return communitySet(ctx, env, args[0], args[1:])
	}
	fmt.Fprintf(env.Stderr, "archivectl community: unknown subcommand %q\n%s\n", args[0], communityUsage)
	return errUsage
}

func communityAdd(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "community add", "-private-key-file FILE | -private-key - | -update -id 0x… [-chat <channel uuid>]… [flags]")
	url := natsFlag(fs)
	keyPath := fs.String("private-key-file", "", "file holding the community private key (0x + 64 hex, as keygen -out writes it, or keygen's JSON); "+
		"required for a new community: it signs announcements and is stored where only the announcer reads it")
	keyArg := fs.String("private-key", "", "the community private key: - reads it from standard input; 0x + 64 hex on the command line "+
		"works but is visible to other users of the machine (ps, shell history)")
	idStr := fs.String("id", "", "with -update: the community to change, when its key is not given")
	interval := fs.Duration("interval", archive.DefaultInterval, "archive window")
	since := newTimeFlag("now")
	fs.Var(since, "since", "start of the first archive: "+timeHelp)
	ratchet := fs.String("ratchet", "", "hash-ratchet key file (from keygen -ratchet): the community is token-gated and its archives are encrypted")
	shard := fs.Int("shard", -1, "Waku shard index 0..1023 the community's members listen on (-1: status-go's default community shard, /waku/2/rs/16/32)")
	update := fs.Bool("update", false, "change a registered community: the flags given replace its settings, the rest are kept")
	var topics listFlag
	fs.Var(&topics, "topic", "channel content topic 0x…8 hex, repeatable (the universal <id>-memberUpdate topic is always added)")
	var chats listFlag
	fs.Var(&chats, "chat", "legacy channel chat: the channel's `uuid` (the community id is prefixed) or its whole chat id "+
		"<0xID><channel uuid>; repeatable or comma-separated; its content topic is added. The universal <0xID>-memberUpdate chat "+
		"is always heard. With -update the chats given replace the list; -chat \"\" clears it")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if *shard < -1 || *shard > registry.MaxShard {
		return fmt.Errorf("-shard %d is out of range 0..%d (-1: the default shard)", *shard, registry.MaxShard)
	}
	key, err := readPrivateKey(env, *keyPath, *keyArg, given)
	if err != nil {
		return err
	}
	var id archive.CommunityID
	switch {
	case key != nil && given["id"]:
		return errors.New("give the community by its key or by -id, not both")
	case key != nil:
		if id, err = registry.KeyID(key); err != nil {
			return err
		}
	case given["id"] && !*update:
		return errors.New("a new community needs its private key (-private-key-file FILE or -private-key - for standard input); " +
			"-id names a registered community to change with -update")
	case given["id"]:
		if id, err = archive.ParseCommunityID(*idStr); err != nil {
			return fmt.Errorf("-id: %w", err)
		}
	default:
		return errors.New("give the community's private key: -private-key-file FILE (keygen -out writes one) or -private-key - " +
			"to read it from standard input; with -update, -id 0x… changes a registered community without its key")
	}
	var newTopics []archive.Topic
	for _, s := range topics {
		t, err := archive.ParseTopic(s)
		if err != nil {
			return err
		}
		newTopics = append(newTopics, t)
	}
	var newChats []string
	for _, c := range chats {
		newChats = append(newChats, chatID(id, c))
	}
	var kf *keyFile
	if *ratchet != "" {
		_, k, err := loadKeys(*ratchet, id)
		if err != nil {
			return err
		}
		if k.State == nil {
			return fmt.Errorf("%s has no current key", *ratchet)
		}
		kf = k
	}
	b, err := connect(ctx, env, *url, "archivectl")
	if err != nil {
		return err
	}
	defer b.NC.Close()
	reg, keys := registry.New(b.Communities), registry.NewKeys(b.CommunityKeys)
	com, err := reg.Get(ctx, id)
	exists := err == nil
	switch {
	case errors.Is(err, registry.ErrNotFound) && key == nil:
		return fmt.Errorf("%s is not registered: add it with its private key (-private-key-file FILE)", id)
	case errors.Is(err, registry.ErrNotFound):
		com = &registry.Community{ID: id}
	case err != nil:
		return err
	case !*update:
		return fmt.Errorf("%s is already registered (interval %v, since %d, %d topics, %d channel chats): add -update to change the settings given and keep the rest",
			id, time.Duration(com.Interval), com.Since, len(com.Topics), len(com.Chats))
	}
	var changed []string
	// The key goes to the keys bucket before the registry entry, so the
	// announcer finds it as soon as the community is registered. An entry
	// of an earlier version still holding its key has it moved.
	if key == nil && len(com.LegacySigningKey) > 0 {
		if kid, err := registry.KeyID(com.LegacySigningKey); err != nil || kid != id {
			return fmt.Errorf("%s: the signing key stored in its registry entry is not its own: give the right one (-private-key-file FILE)", id)
		}
		key = com.LegacySigningKey
	}
	if key != nil {
		if _, err := keys.Put(ctx, key); err != nil {
			return err
		}
		if exists {
			changed = append(changed, "signing key")
		}
	}
	com.LegacySigningKey = nil
	if !exists || given["interval"] {
		com.Interval = registry.Duration(*interval)
		changed = append(changed, "interval")
	}
	if !exists || given["since"] {
		com.Since = since.v
		changed = append(changed, "since")
	}
	if !exists || given["topic"] {
		com.Topics = newTopics
		changed = append(changed, "topics")
	}
	if !exists || given["chat"] {
		if exists && !given["topic"] {
			// The topics of the chats replaced were added for them: drop
			// them (Put adds the new chats' topics).
			old := map[archive.Topic]bool{}
			for _, c := range com.Chats {
				old[registry.ChatTopic(c)] = true
			}
			com.Topics = slices.DeleteFunc(com.Topics, func(t archive.Topic) bool { return old[t] })
		}
		com.Chats = newChats
		if exists {
			changed = append(changed, "chats")
		}
	}
	if !exists || given["shard"] {
		com.Shard = nil
		if *shard >= 0 {
			v := uint16(*shard)
			com.Shard = &v
		}
		if exists {
			changed = append(changed, "shard")
		}
	}
	if kf != nil {
		com.Encrypted, com.InstallationID, com.RatchetKey, com.OldKeys = true, kf.InstallationID, &kf.State.Key, kf.Keys
		changed = append(changed, "ratchet")
	}
	if err := reg.Put(ctx, com); err != nil {
		return err
	}
	if exists {
		fmt.Fprintf(env.Stdout, "updated %s (%s; interval %v, since %d, %d topics, %d channel chats, encrypted=%v)\n", com.ID,
			strings.Join(changed, ", "), time.Duration(com.Interval), com.Since, len(com.Topics), len(com.Chats), com.Encrypted)
		return nil
	}
	fmt.Fprintf(env.Stdout, "registered %s (interval %v, since %d, %d topics, %d channel chats, encrypted=%v)\n", com.ID,
		time.Duration(com.Interval), com.Since, len(com.Topics), len(com.Chats), com.Encrypted)
	return nil
}

// chatID makes a -chat value a chat id of community id: a value that does
// not start with 0x is a channel uuid and gets the id prefixed; a whole chat
// id gets its community part in lower case, as status-go writes it (the
// content topic hashes the exact string). Whatever else is wrong is left to
// registry's Validate to say.
func chatID(id archive.CommunityID, v string) string {
	p := id.String()
	switch {
	case !strings.HasPrefix(v, "0x") && !strings.HasPrefix(v, "0X"):
		return p + v
	case len(v) >= len(p) && strings.EqualFold(v[:len(p)], p):
		return p + v[len(p):]
	}
	return v
}

// wakuShard is the Waku shard index a community's members listen on.
func wakuShard(c *registry.Community) uint16 {
	if c.Shard != nil {
		return *c.Shard
	}
	return 32 // wakuwire.DefaultCommunityShard
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
		return id, nil, fmt.Errorf("-%s: %w", idFlag, err)
	}
	b, err := connect(ctx, env, *url, "archivectl")
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
		if err = r.Remove(ctx, id); err == nil {
			err = registry.NewKeys(b.CommunityKeys).Delete(ctx, id)
		}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "%sd %s\n", verb[:len(verb)-1], id)
	return nil
}

// shortID fits a community id in a narrow column; -wide prints it whole.
func shortID(id archive.CommunityID) string {
	s := id.String()
	return s[:10] + "…" + s[len(s)-6:]
}

// shortDuration drops zero units: 168h, 1m, 1m30s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// relative says when t is from now: "in 40s", "12s ago".
func relative(t, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	if d >= 0 {
		return "in " + shortDuration(d)
	}
	return shortDuration(-d) + " ago"
}

func tsShort(s uint64) string {
	if s == 0 {
		return "-"
	}
	return time.Unix(int64(s), 0).UTC().Format(time.DateTime)
}

func communityList(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "community list", "[-wide | -json]")
	url := natsFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON lines with every field (magnet link, chats, newest message and Waku back-fill progress included)")
	wide := fs.Bool("wide", false, "print whole ids, infohashes, announcements, chats, content topics, the newest message held and "+
		"the last Waku Store back-fill with its error (wide terminals). The newest message is the one stored last on the newest UTC day that holds "+
		"any: a back-fill may store an older message of that day after it")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	b, err := connect(ctx, env, *url, "archivectl")
	if err != nil {
		return err
	}
	defer b.NC.Close()
	coms, err := registry.New(b.Communities).List(ctx)
	if err != nil {
		return err
	}
	if len(coms) == 0 && !*asJSON {
		fmt.Fprintln(env.Stdout, "no communities registered (add one with: archivectl community add -private-key-file FILE)")
		return nil
	}
	st := &state.Store{KV: b.State}
	msgs := &messages.Store{Bus: b}
	seeders, err := readSeeders(ctx, b)
	if err != nil {
		return err
	}
	now := time.Now()
	var notes []string
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	switch {
	case *wide:
		fmt.Fprintln(tw, "COMMUNITY\tINTERVAL\tSINCE\tARCHIVED TO\tNEXT END\tARCHIVES\tINFOHASH\tANNOUNCED\tSEEDERS\tCHATS\tTOPICS\t"+
			"NEWEST MESSAGE\tWAKU BACKFILL TO\tWAKU BACKFILL AT\tSTATUS\tWAKU BACKFILL ERROR")
	case !*asJSON:
		fmt.Fprintln(tw, "COMMUNITY\tEVERY\tARCHIVES\tARCHIVED TO UTC\tNEXT END\tSEEDS\tSTATUS")
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
		bf, bfRev, err := st.GetBackfill(ctx, c.ID.String())
		if err != nil {
			return err
		}
		var newest uint64
		if *asJSON || *wide {
			if newest, _, err = msgs.Newest(ctx, c.ID); err != nil {
				return err
			}
		}
		seeding, err := seeders.of(ctx, c.ID.String(), bs.InfoHash)
		if err != nil {
			return err
		}
		nextAt, _ := scheduler.NextDue(c, bs.LastEnd, time.Now())
		next := uint64(nextAt.Unix())
		status := "active"
		if c.Disabled {
			status = "disabled"
		}
		switch {
		case *asJSON:
			var backfill *state.Backfill
			if bfRev > 0 {
				backfill = bf
			}
			if err := json.NewEncoder(env.Stdout).Encode(map[string]any{"community": c.ID, "interval": c.Interval, "since": c.Since,
				"chats": append([]string{}, c.Chats...), "topics": c.Topics, "encrypted": c.Encrypted, "lastEnd": bs.LastEnd,
				"nextEnd": next, "archives": len(bs.Archives), "infoHash": bs.InfoHash, "builtAt": bs.BuiltAt, "magnet": an.Magnet,
				"announcedClock": an.Clock, "newestMessage": newest, "wakuBackfill": backfill, "disabled": c.Disabled,
				"wakuShard": wakuShard(c), "seeders": seeding.Serving, "placedOn": seeding.Placed}); err != nil {
				return err
			}
		case *wide:
			announced := "-"
			if an.Clock > 0 {
				announced = time.UnixMilli(int64(an.Clock)).UTC().Format(time.RFC3339)
			}
			topics := make([]string, len(c.Topics))
			for i, t := range c.Topics {
				topics[i] = t.String()
			}
			backfillErr := "-"
			if bf.LastError != "" {
				backfillErr = oneLine(bf.LastError)
				if !bf.LastErrorAt.IsZero() {
					backfillErr = bf.LastErrorAt.UTC().Format(time.RFC3339) + " " + backfillErr
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, shortDuration(time.Duration(c.Interval)),
				ts(c.Since), orDash(tsIf(bs.LastEnd)), ts(next), len(bs.Archives), orDash(bs.InfoHash), announced, seeding, len(c.Chats),
				strings.Join(topics, ","), orDash(tsIf(newest)), timeOrDash(bf.Upto), timeOrDash(bf.At), status, backfillErr)
		default:
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", shortID(c.ID), shortDuration(time.Duration(c.Interval)), len(bs.Archives),
				tsShort(bs.LastEnd), relative(time.Unix(int64(next), 0), now), seeding.count(), status)
			if bf.LastError != "" {
				note := "Waku back-fill of " + shortID(c.ID) + " failing"
				if !bf.LastErrorAt.IsZero() {
					note += " (" + relative(bf.LastErrorAt, now) + ")"
				}
				notes = append(notes, fitLine(note+": "+oneLine(bf.LastError), 80))
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(notes) > 0 {
		fmt.Fprintln(env.Stdout, strings.Join(notes, "\n")+"\n(archivectl community list -wide shows the whole error)")
	}
	return nil
}

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// oneLine keeps a free-text value on its table row.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// fitLine cuts s to n columns, ending it with … when cut.
func fitLine(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func tsIf(s uint64) string {
	if s == 0 {
		return ""
	}
	return ts(s)
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
		fmt.Fprintln(env.Stderr, "archivectl backfill: give -community 0x… or -all")
		fs.Usage()
		return errUsage
	}
	b, err := connect(ctx, env, *url, "archivectl")
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
			return fmt.Errorf("-community: %w", err)
		}
		c, err := reg.Get(ctx, id)
		if err != nil {
			return err
		}
		coms = []*registry.Community{c}
	}
	now := time.Now()
	outcomes, err := scheduler.Backfill(ctx, b, coms, now, 0)
	for _, o := range outcomes {
		id := o.Community.ID.String()
		switch {
		case o.Community.Disabled:
			fmt.Fprintf(env.Stdout, "%s: disabled, skipped\n", id)
		case o.Event == nil:
			next, _ := scheduler.NextDue(o.Community, o.LastEnd, now)
			fmt.Fprintf(env.Stdout, "%s: already archived to %s; the next window ends %s (%s)\n", id, orDash(tsIf(o.LastEnd)),
				ts(uint64(next.Unix())), relative(next, now))
		case o.Duplicate:
			fmt.Fprintf(env.Stdout, "%s: duplicate: an identical event is already queued, nothing new published\n", id)
		default:
			fmt.Fprintf(env.Stdout, "%s: published [%s, %s)\n", id, ts(o.Event.From), ts(o.Event.End))
		}
	}
	if err != nil {
		return err
	}
	evs := scheduler.Published(outcomes)
	fmt.Fprintf(env.Stdout, "published %d due events\n", len(evs))
	if !*wait || len(evs) == 0 {
		return nil
	}
	return waitBuilt(ctx, env.Stderr, b, evs, now)
}

// waitBuilt shows a progress bar until every event's window is committed or
// dead-lettered; the bar always ends its line.
func waitBuilt(ctx context.Context, w io.Writer, b *bus.Bus, evs []bus.DueEvent, published time.Time) error {
	dead := map[string]string{}
	err := progress(ctx, w, b, evs, published, dead)
	fmt.Fprintln(w)
	if err != nil {
		return err
	}
	for c, reason := range dead {
		fmt.Fprintf(w, "%s: dead-lettered: %s\n", c, reason)
	}
	if len(dead) > 0 {
		return fmt.Errorf("%d of %d windows were dead-lettered (see archivectl dlq list)", len(dead), len(evs))
	}
	return nil
}

func progress(ctx context.Context, w io.Writer, b *bus.Bus, evs []bus.DueEvent, published time.Time, dead map[string]string) error {
	st := &state.Store{KV: b.State}
	var lastDLQ time.Time
	for {
		done := 0
		for _, ev := range evs {
			bs, _, err := st.GetBuild(ctx, ev.Community)
			if err != nil {
				return err
			}
			if _, ok := dead[ev.Community]; ok || bs.LastEnd >= ev.End {
				done++
			}
		}
		fmt.Fprintf(w, "\r%s %d/%d", bar(done, len(evs), 30), done, len(evs))
		if done == len(evs) {
			return nil
		}
		if time.Since(lastDLQ) > 2*time.Second {
			lastDLQ = time.Now()
			letters, err := bus.DeadLetters(ctx, b)
			if err != nil {
				return err
			}
			for _, l := range letters {
				for _, ev := range evs {
					if l.Subject == bus.SubjectDue(ev.Community) && !l.Time.Before(published.Add(-time.Second)) {
						dead[ev.Community] = l.Reason
					}
				}
			}
		}
		select {
		case <-ctx.Done():
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
	ev, err := scheduler.Trigger(ctx, b, id, time.Now())
	switch {
	case errors.Is(err, scheduler.ErrDisabled):
		return fmt.Errorf("%s is disabled: archivectl community enable -id %s first", id, id)
	case errors.Is(err, scheduler.ErrNothingToArchive):
		return fmt.Errorf("nothing to archive: archived up to %s", ts(ev.From))
	case errors.Is(err, scheduler.ErrDuplicateEvent):
		return fmt.Errorf("duplicate: an identical trigger is already queued")
	case err != nil:
		return err
	}
	fmt.Fprintf(env.Stdout, "archive of %s [%s, %s) requested; it is built once the window has settled (the fleet's %s_SETTLE)\n",
		id, ts(ev.From), ts(ev.End), natsconf.Prefix)
	return nil
}

// readPrivateKey reads community add's key: from -private-key-file, from
// standard input (-private-key -) or, with a warning, from the command line.
// nil when none is given.
func readPrivateKey(env Env, file, arg string, given map[string]bool) ([]byte, error) {
	var raw []byte
	var from string
	switch {
	case given["private-key-file"] && given["private-key"]:
		return nil, errors.New("give -private-key-file or -private-key, not both")
	case given["private-key-file"]:
		fi, err := os.Stat(file)
		if err != nil {
			return nil, fmt.Errorf("-private-key-file: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			fmt.Fprintf(env.Stderr, "archivectl: warning: %s is readable by other users (mode %v): chmod 600 %s\n", file, fi.Mode().Perm(), file)
		}
		if raw, err = os.ReadFile(file); err != nil {
			return nil, fmt.Errorf("-private-key-file: %w", err)
		}
		from = file
	case given["private-key"] && arg == "-":
		var err error
		if raw, err = io.ReadAll(io.LimitReader(env.Stdin, 64<<10)); err != nil {
			return nil, fmt.Errorf("read the private key from standard input: %w", err)
		}
		from = "standard input"
	case given["private-key"]:
		fmt.Fprintln(env.Stderr, "archivectl: warning: a private key on the command line is visible to other users of this machine "+
			"(ps, shell history): use -private-key-file FILE or -private-key - (standard input)")
		raw, from = []byte(arg), "-private-key"
	default:
		return nil, nil
	}
	key, err := parsePrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	return key, nil
}

// parsePrivateKey takes 0x + 64 hex (the 0x optional, surrounding space
// ignored) or keygen's JSON output.
func parsePrivateKey(raw []byte) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	if bytes.HasPrefix(raw, []byte("{")) {
		var kg struct {
			PrivateKey string `json:"privateKey"`
		}
		if err := json.Unmarshal(raw, &kg); err != nil || kg.PrivateKey == "" {
			return nil, errors.New("not keygen's JSON (no privateKey field)")
		}
		raw = []byte(kg.PrivateKey)
	}
	var key archive.HexBytes
	if err := key.UnmarshalText(raw); err != nil || len(key) != 32 {
		return nil, errors.New("the private key must be 0x + 64 hex digits")
	}
	return key, nil
}
