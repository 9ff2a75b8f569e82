package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/archivefleet/archivefleet/internal/archive"
)

func runBuild(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "build", "-community 0x… -messages FILE [flags]")
	community := fs.String("community", "", "community id: 0x + 33-byte compressed public key (required)")
	msgPath := fs.String("messages", "-", "JSON-lines messages file, - for stdin")
	dataDir := fs.String("data-dir", "data/archivedata", "archive data folder (holds <community>/data and index)")
	torrentDir := fs.String("torrent-dir", "data/torrents", "folder for <community>.torrent")
	from := fs.Uint64("from", 0, "range start, unix seconds (default: end of the newest archive, else the earliest message)")
	to := fs.Uint64("to", 0, "range end, exclusive, unix seconds (default: now)")
	interval := fs.Duration("interval", archive.DefaultInterval, "archive window length")
	var topics, trackers, peers, webseeds listFlag
	fs.Var(&topics, "topic", "community content topic 0x…8 hex, repeatable (default: the topics of the messages)")
	fs.Var(&trackers, "tracker", "announce URL, repeatable (default: status-go's two trackers)")
	noTrackers := fs.Bool("no-trackers", false, "write no announce list")
	fs.Var(&peers, "peer", "seeder host:port added to the magnet as x.pe, repeatable")
	fs.Var(&webseeds, "webseed", "BEP 19 web seed base URL, repeatable")
	createdBy := fs.String("created-by", "", `torrent "created by" field`)
	keys := fs.String("keys", "", "hash-ratchet key file: encrypt (token-gated community); the advanced state is saved back")
	verify := fs.Bool("verify", false, "rehash existing data instead of reusing the previous torrent's piece hashes")
	verbose := fs.Bool("v", false, "log each archive")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	c, err := archive.ParseCommunityID(*community)
	if err != nil {
		return err
	}
	msgs, err := readMessages(env, *msgPath)
	if err != nil {
		return err
	}
	src := archive.NewSliceSource(msgs)
	l := archive.Layout{DataDir: *dataDir, TorrentDir: *torrentDir}

	o := archive.BuildOptions{
		Community: c, From: *from, To: *to, Interval: *interval, Source: src, Verify: *verify,
		Torrent: archive.TorrentOptions{CreatedBy: *createdBy, Peers: peers, WebSeeds: webseeds},
		Logger:  logger(env, *verbose).With("community", c.String()),
	}
	if *noTrackers {
		o.Torrent.AnnounceList = [][]string{}
	} else if len(trackers) > 0 {
		for _, tr := range trackers {
			o.Torrent.AnnounceList = append(o.Torrent.AnnounceList, []string{tr})
		}
	}
	if o.Topics, err = parseTopics(topics, msgs); err != nil {
		return err
	}
	var kf *keyFile
	if *keys != "" {
		r, f, err := loadKeys(*keys, c)
		if err != nil {
			return err
		}
		if f.State == nil {
			return fmt.Errorf("key file %s has no sending state", *keys)
		}
		o.Encrypter, o.Decrypter, kf = r, r, f
	}
	if o.To == 0 {
		o.To = uint64(time.Now().Unix())
	}
	if o.From == 0 {
		if o.From, err = defaultFrom(l, c, o.Decrypter, src); err != nil {
			return err
		}
	}
	if o.From >= o.To {
		return fmt.Errorf("nothing to build: range [%d, %d) is empty", o.From, o.To)
	}
	res, err := archive.Build(ctx, l, o)
	if kf != nil && res != nil {
		// The ratchet advanced for what was written: save it even if a later step failed.
		if serr := saveKeys(*keys, kf); serr != nil {
			err = errors.Join(err, fmt.Errorf("save key state: %w", serr))
		}
	}
	if err != nil {
		return err
	}
	for _, s := range res.Skipped {
		fmt.Fprintf(env.Stderr, "warning: message %s at %d skipped: %s\n", s.Hash, s.Timestamp, s.Reason)
	}
	if res.ForeignTopic > 0 {
		fmt.Fprintf(env.Stderr, "warning: %d messages on topics outside the community's were left out\n", res.ForeignTopic)
	}
	enc := json.NewEncoder(env.Stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // keep the magnet's & readable
	return enc.Encode(res)
}

func parseTopics(flags []string, msgs []archive.Message) ([]archive.Topic, error) {
	var out []archive.Topic
	if len(flags) == 0 {
		for _, m := range msgs {
			if !slices.Contains(out, m.Topic) {
				out = append(out, m.Topic)
			}
		}
		slices.SortFunc(out, func(a, b archive.Topic) int { return slices.Compare(a[:], b[:]) })
		return out, nil
	}
	for _, s := range flags {
		t, err := archive.ParseTopic(s)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// defaultFrom continues after the newest archive in the index, or starts at
// the earliest message, as status-go's GetHistoryArchivePartitionStartTimestamp.
func defaultFrom(l archive.Layout, c archive.CommunityID, dec archive.Decrypter, src *archive.SliceSource) (uint64, error) {
	raw, err := os.ReadFile(filepath.Join(l.ArchiveDir(c), archive.IndexFile))
	if errors.Is(err, os.ErrNotExist) {
		if src.Len() == 0 {
			return 0, errors.New("no messages and no -from: nothing to build")
		}
		return src.MinTimestamp(), nil
	}
	if err != nil {
		return 0, err
	}
	ix, err := archive.DecodeIndex(raw, dec, -1, archive.Limits{})
	if err != nil {
		return 0, fmt.Errorf("existing index: %w", err)
	}
	var last uint64
	for _, e := range ix.Entries {
		last = max(last, e.To)
	}
	return last, nil
}
