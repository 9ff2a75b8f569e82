package ctl

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/big"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"golang.org/x/crypto/sha3"

	"github.com/archivefleet/archivefleet/internal/archive"
)

// runSample writes synthetic but well-formed messages: real uncompressed
// public keys as sig, 4-byte topics, Keccak-256 hashes.
func runSample(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "sample", "[flags] > messages.jsonl")
	n := fs.Int("n", 1000, "number of messages")
	from := fs.Int64("from", time.Now().Add(-28*24*time.Hour).Unix(), "earliest timestamp, unix seconds")
	span := fs.Duration("span", 28*24*time.Hour, "time range the messages spread over")
	size := fs.Int("size", 200, "payload bytes per message")
	topics := fs.Int("topics", 3, "number of channel topics")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *n < 0 || *size < 0 || *topics < 1 || *topics > 1000 || *span < time.Second {
		return fmt.Errorf("bad sample parameters")
	}
	signers := make([][]byte, 4)
	for i := range signers {
		k, err := secp256k1.GeneratePrivateKey()
		if err != nil {
			return err
		}
		signers[i] = k.PubKey().SerializeUncompressed()
	}
	enc := json.NewEncoder(env.Stdout)
	for i := 0; i < *n; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		off, err := rand.Int(rand.Reader, big.NewInt(int64(*span/time.Second)))
		if err != nil {
			return err
		}
		payload := make([]byte, *size)
		rand.Read(payload)
		var topic archive.Topic
		binary.BigEndian.PutUint32(topic[:], 0xa0000000+uint32(i%*topics))
		h := sha3.NewLegacyKeccak256()
		h.Write(payload)
		m := archive.Message{
			Sig: signers[i%len(signers)], Timestamp: uint64(*from + off.Int64()), Topic: topic,
			Payload: payload, Padding: []byte{1}, Hash: h.Sum(nil),
		}
		if err := enc.Encode(m); err != nil {
			return err
		}
	}
	return nil
}

// runKeygen prints a new community id with its private key, and writes a
// hash-ratchet key file for it when asked.
func runKeygen(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "keygen", "[-ratchet FILE]")
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
	out := map[string]string{"community": c.String(), "privateKey": archive.HexBytes(k.Serialize()).String()}
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
		out["ratchetKeys"] = *ratchet
	}
	enc := json.NewEncoder(env.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
