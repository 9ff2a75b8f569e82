package ctl

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/registry"
)

// runSample writes synthetic but well-formed messages: real uncompressed
// public keys as sig, 4-byte topics, Keccak-256 hashes. With -community they
// are on the community's universal "<id>-memberUpdate" topic (plus any
// -topic), so a fleet that registered the community takes them.
func runSample(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "sample", "[flags] > messages.jsonl")
	n := fs.Int("n", 1000, "number of messages")
	from := newTimeFlag("now-672h")
	fs.Var(from, "from", "earliest timestamp: "+timeHelp)
	to := newTimeFlag("")
	fs.Var(to, "to", "timestamps stay before this: "+timeHelp+" (default: -from plus -span)")
	span := fs.Duration("span", 28*24*time.Hour, "time range the messages spread over, when -to is not given")
	size := fs.Int("size", 200, "payload bytes per message")
	ntopics := fs.Int("topics", 3, "number of generated channel topics, when neither -community nor -topic is given")
	community := fs.String("community", "", "community id 0x…: messages go on its universal <id>-memberUpdate topic")
	var topicFlags listFlag
	fs.Var(&topicFlags, "topic", "content topic 0x…8 hex to use, repeatable")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	end := from.v + uint64(*span/time.Second)
	if to.set {
		end = to.v
	}
	if *n < 0 || *size < 0 || *ntopics < 1 || *ntopics > 1000 || *span < time.Second || end <= from.v {
		return fmt.Errorf("bad sample parameters: want -n >= 0, -size >= 0, 1 <= -topics <= 1000 and -from before -to")
	}
	var topics []archive.Topic
	for _, s := range topicFlags {
		t, err := archive.ParseTopic(s)
		if err != nil {
			return err
		}
		topics = append(topics, t)
	}
	if *community != "" {
		c, err := archive.ParseCommunityID(*community)
		if err != nil {
			return err
		}
		topics = append(topics, registry.UniversalTopic(c))
	}
	if len(topics) == 0 {
		for i := 0; i < *ntopics; i++ {
			var t archive.Topic
			binary.BigEndian.PutUint32(t[:], 0xa0000000+uint32(i))
			topics = append(topics, t)
		}
	}
	bw := bufio.NewWriter(env.Stdout)
	enc := json.NewEncoder(bw)
	spec := fixture.Messages{N: *n, From: from.v, To: end, Random: true, Topics: topics, Signers: fixture.Signers(4),
		Size: *size, Padding: []byte{1}}
	if *size == 0 {
		spec.Size = -1
	}
	if err := spec.Each(func(m archive.Message) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return enc.Encode(m)
	}); err != nil {
		return err
	}
	return bw.Flush()
}

// runKeygen prints a new community id with its private key (or writes the
// key to a file of its own), and writes a hash-ratchet key file for it when
// asked.
func runKeygen(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "keygen", "[-out FILE] [-ratchet FILE]")
	out := fs.String("out", "", "write the private key to this new file (mode 0600) for community add -private-key-file, and print only the community id")
	ratchet := fs.String("ratchet", "", "also write a new hash-ratchet key file here (for token-gated communities)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	k, err := secp256k1.GeneratePrivateKey()
	if err != nil {
		return err
	}
	var c archive.CommunityID
	copy(c[:], k.PubKey().SerializeCompressed())
	res := map[string]string{"community": c.String()}
	if *out == "" {
		res["privateKey"] = archive.HexBytes(k.Serialize()).String()
	} else {
		if err := writeNewFile(*out, []byte(archive.HexBytes(k.Serialize()).String()+"\n")); err != nil {
			return err
		}
		res["keyFile"] = *out
	}
	if *ratchet != "" {
		key := make([]byte, 32)
		rand.Read(key)
		id := make([]byte, 16)
		rand.Read(id)
		kf := &keyFile{
			// 'f' starts the id: a member can never mistake the sealed archive for a plain one.
			InstallationID: fmt.Sprintf("f%x", id)[:33],
			State:          &archive.RatchetState{Key: archive.RatchetKey{Timestamp: uint64(time.Now().UnixMilli()), Key: key}},
		}
		if err := archive.CheckInstallationID(kf.InstallationID); err != nil {
			return err
		}
		if err := saveKeys(*ratchet, kf); err != nil {
			return err
		}
		res["ratchetKeys"] = *ratchet
	}
	enc := json.NewEncoder(env.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

// writeNewFile writes a secret to a file that must not exist yet, readable
// by its owner only.
func writeNewFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists: not overwriting a key file (remove it or pick another name)", path)
		}
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
