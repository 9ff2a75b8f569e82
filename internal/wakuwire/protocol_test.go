package wakuwire_test

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/archivefleet/archivefleet/internal/pb"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

func TestWrapPublic(t *testing.T) {
	for _, tc := range []struct {
		name, installation string
		amm                []byte
	}{
		{"typical", "archivefleet-announcer", []byte("\x0a\x41signature\x12\x07payload\x18\x2b")},
		{"no installation id", "", []byte{1}},
		{"large", "i", bytes.Repeat([]byte{0xcd}, 70000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := wakuwire.WrapPublic(tc.installation, tc.amm)
			if err != nil {
				t.Fatal(err)
			}
			// The generated status-go ProtocolMessage proves the field numbers.
			var pm pb.ProtocolMessage
			if err := proto.Unmarshal(b, &pm); err != nil {
				t.Fatal(err)
			}
			if pm.GetInstallationId() != tc.installation || !bytes.Equal(pm.GetPublicMessage(), tc.amm) || len(pm.GetEncryptedMessage()) != 0 {
				t.Errorf("pb.ProtocolMessage = %v", &pm)
			}
			if len(pm.ProtoReflect().GetUnknown()) != 0 {
				t.Errorf("unknown fields %x: a bundle or stray field was written", pm.ProtoReflect().GetUnknown())
			}
			// Deterministic and identical to protobuf-go's encoding.
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(&pb.ProtocolMessage{InstallationId: tc.installation, PublicMessage: tc.amm})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, want) {
				t.Errorf("WrapPublic = %x, protobuf-go %x", b, want)
			}
			id, amm, err := wakuwire.UnwrapPublic(b)
			if err != nil || id != tc.installation || !bytes.Equal(amm, tc.amm) {
				t.Errorf("UnwrapPublic = %q, %x, %v", id, amm, err)
			}
		})
	}
	// An empty application message is still written as a present, empty
	// public_message (tag 102, length 0), so it reads back as public.
	empty, err := wakuwire.WrapPublic("i", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{0x12, 0x01, 'i', 0xb2, 0x06, 0x00}; !bytes.Equal(empty, want) {
		t.Errorf("empty: WrapPublic = %x, want %x", empty, want)
	}
	var pm pb.ProtocolMessage
	if err := proto.Unmarshal(empty, &pm); err != nil || pm.GetInstallationId() != "i" || len(pm.GetPublicMessage()) != 0 {
		t.Errorf("empty: pb reads %v, %v", &pm, err)
	}
	if id, amm, err := wakuwire.UnwrapPublic(empty); err != nil || id != "i" || len(amm) != 0 {
		t.Errorf("empty: UnwrapPublic = %q, %x, %v", id, amm, err)
	}
	if _, err := wakuwire.WrapPublic("\xff", []byte{1}); err == nil {
		t.Error("wrapped a non-UTF-8 installation id")
	}
}

func TestUnwrapPublicAsSentByStatusGo(t *testing.T) {
	// status-go attaches a bundle (field 3) and may carry encrypted_message;
	// a public-chat reader skips both.
	base, err := proto.Marshal(&pb.ProtocolMessage{
		InstallationId:   "desktop-1",
		EncryptedMessage: map[string]*pb.EncryptedMessageProtocol{"none": {Payload: []byte("x")}},
		PublicMessage:    []byte("amm"),
	})
	if err != nil {
		t.Fatal(err)
	}
	bundle := protowire.AppendTag(nil, 3, protowire.BytesType)
	bundle = protowire.AppendBytes(bundle, []byte("\x0a\x21signed-prekey-bundle-bytes......"))
	id, amm, err := wakuwire.UnwrapPublic(append(bundle, base...))
	if err != nil || id != "desktop-1" || string(amm) != "amm" {
		t.Errorf("UnwrapPublic = %q, %q, %v", id, amm, err)
	}

	private, err := proto.Marshal(&pb.ProtocolMessage{
		InstallationId:   "desktop-1",
		EncryptedMessage: map[string]*pb.EncryptedMessageProtocol{"none": {Payload: []byte("x")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := wakuwire.UnwrapPublic(private); !errors.Is(err, wakuwire.ErrNotPublic) {
		t.Errorf("private message: %v, want ErrNotPublic", err)
	}
	if _, _, err := wakuwire.UnwrapPublic(nil); !errors.Is(err, wakuwire.ErrNotPublic) {
		t.Errorf("empty input: %v, want ErrNotPublic", err)
	}

	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"public_message as varint", append(protowire.AppendTag(nil, 102, protowire.VarintType), 1)},
		{"installation_id as fixed64", append(protowire.AppendTag(nil, 2, protowire.Fixed64Type), make([]byte, 8)...)},
		{"truncated public_message", append(protowire.AppendTag(nil, 102, protowire.BytesType), 10, 1)},
		{"non-UTF-8 installation id", append(protowire.AppendTag(nil, 2, protowire.BytesType), 1, 0xff)},
		{"garbage", []byte{0xff, 0xff, 0xff}},
	} {
		if _, _, err := wakuwire.UnwrapPublic(tc.in); !errors.Is(err, wakuwire.ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", tc.name, err)
		}
	}
}
