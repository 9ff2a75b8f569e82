package wakuwire_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

func TestPublicMessage(t *testing.T) {
	const chatID = "0x02dcec6041fb999d65f1d33363e08c93d3c1f6f0fbbb26add383e2cf46c2b921f4-magnetlinks"
	signer := wwKey(t, 20)
	amm := []byte("\x0a\x41sig\x12\x05magnet\x18\x2b")
	now := time.Unix(1700000000, 123456789)
	key := wakuwire.ChatKey(chatID)

	viaKey, err := wakuwire.PublicMessageWithKey(chatID, key, "fleet", amm, signer, now)
	if err != nil {
		t.Fatal(err)
	}
	viaID, err := wakuwire.PublicMessage(chatID, "fleet", amm, signer, now)
	if err != nil {
		t.Fatal(err)
	}
	for name, m := range map[string]*wakuwire.Message{"PublicMessage": viaID, "PublicMessageWithKey": viaKey} {
		if m.ContentTopic != wakuwire.ChatContentTopic(chatID) || m.Version != 1 || m.Timestamp != 1700000000123456789 || m.Ephemeral || m.Meta != nil {
			t.Errorf("%s: header %+v", name, *m)
		}
		if err := m.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		// Decode as a member does: wire bytes → rfc26 with the chat key → ProtocolMessage.
		var wire wakuwire.Message
		if err := wire.Unmarshal(m.Marshal()); err != nil {
			t.Fatal(err)
		}
		env, err := wakuwire.OpenSymmetric(wire.Payload, wakuwire.ChatKey(chatID))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(env.Signer, signer.PubKey().SerializeUncompressed()) {
			t.Errorf("%s: signer %x", name, env.Signer)
		}
		id, got, err := wakuwire.UnwrapPublic(env.Data)
		if err != nil || id != "fleet" || !bytes.Equal(got, amm) {
			t.Errorf("%s: UnwrapPublic = %q %x %v", name, id, got, err)
		}
		// Another chat's key cannot open it.
		if _, err := wakuwire.OpenSymmetric(wire.Payload, wakuwire.ChatKey(chatID+"x")); err == nil {
			t.Errorf("%s: opened with another chat's key", name)
		}
	}

	if _, err := wakuwire.PublicMessageWithKey(chatID, key, "fleet", amm, nil, now); err == nil {
		t.Error("built an unsigned public message, which status-go would drop")
	}
	if _, err := wakuwire.PublicMessageWithKey(chatID, key[:16], "fleet", amm, signer, now); err == nil {
		t.Error("accepted a 16-byte key")
	}
	if _, err := wakuwire.PublicMessageWithKey("", key, "fleet", amm, signer, now); err == nil {
		t.Error("accepted an empty chat id")
	}
}
