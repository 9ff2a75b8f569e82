package wakuedge

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

// TestRecord: a received message becomes status-go's archive record, or is
// refused with the reason counted for it. (The end-to-end check against
// js-waku's own computation is TestWakuReceiveToArchive in internal/fleet.)
func TestRecord(t *testing.T) {
	chat := "0x02" + "0f" + "-memberUpdate"
	key := wakuwire.ChatKey(chat)
	signer, _ := secp256k1.GeneratePrivateKey()
	ts := time.Date(2026, 11, 26, 12, 0, 0, 999_999_999, time.UTC)
	seal := func(k []byte, s *secp256k1.PrivateKey) []byte {
		p, err := wakuwire.SealSymmetric([]byte("protocol message"), k, s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	msg := func(payload []byte, version uint32, at int64) *wakuwire.Message {
		return &wakuwire.Message{Payload: payload, ContentTopic: wakuwire.ChatContentTopic(chat), Version: version, Timestamp: at}
	}
	for _, tc := range []struct {
		name   string
		m      *wakuwire.Message
		reason string
	}{
		{"good", msg(seal(key, signer), 1, ts.UnixNano()), ""},
		{"version 0", msg(seal(key, signer), 0, ts.UnixNano()), dropMalformed},
		{"no timestamp", msg(seal(key, signer), 1, 0), dropMalformed},
		{"another chat's key", msg(seal(wakuwire.ChatKey(chat+"x"), signer), 1, ts.UnixNano()), dropUndecryptable},
		{"not sealed", msg([]byte("plain text, not rfc26"), 1, ts.UnixNano()), dropUndecryptable},
		{"unsigned", msg(seal(key, nil), 1, ts.UnixNano()), dropUnsigned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, err := Record("/waku/2/rs/16/32", tc.m, chat, key)
			if tc.reason != "" {
				var na *NotArchived
				if !errors.As(err, &na) || na.Reason != tc.reason {
					t.Fatalf("err %v, want reason %s", err, tc.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			h := wakuwire.Hash("/waku/2/rs/16/32", tc.m)
			env, _ := wakuwire.OpenSymmetric(tc.m.Payload, key)
			if !bytes.Equal(rec.Sig, signer.PubKey().SerializeUncompressed()) || rec.Timestamp != uint64(ts.Unix()) ||
				rec.Topic != registry.ChatTopic(chat) || string(rec.Payload) != "protocol message" ||
				!bytes.Equal(rec.Padding, env.Padding) || len(rec.Padding) == 0 || !bytes.Equal(rec.Hash, h[:]) {
				t.Fatalf("record %+v", rec)
			}
			if err := rec.Validate(); err != nil {
				t.Fatalf("record does not validate: %v", err)
			}
		})
	}
}
