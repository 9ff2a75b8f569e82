package announcer

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/pb"
)

func TestSignedMessage(t *testing.T) {
	key := fixture.Key()
	msg, err := BuildMessage(key, 1795611274737, "magnet:?xt=urn:btih:5ba51fec45a6e521db60b2e33dbabeb61308fdfa")
	if err != nil {
		t.Fatal(err)
	}
	v, err := Verify(msg)
	if err != nil {
		t.Fatal(err)
	}
	if v.Community != fixture.ID(key) || v.Clock != 1795611274737 {
		t.Fatalf("verified %+v", v)
	}
	var amm pb.ApplicationMetadataMessage
	proto.Unmarshal(msg, &amm)
	if amm.GetType() != 43 || len(amm.GetSignature()) != 65 || amm.GetSignature()[64] > 1 {
		t.Fatalf("type %d, signature %x: want 43 and R||S||V with V in {0,1}", amm.GetType(), amm.GetSignature())
	}
	// A tampered payload recovers another key.
	amm.Payload = append(bytes.Clone(amm.Payload), 0)
	bad, _ := proto.Marshal(&amm)
	if v2, err := Verify(bad); err == nil && v2.Community == v.Community {
		t.Fatal("tampered payload still verifies as the community")
	}
}

func TestWithPeers(t *testing.T) {
	m := "magnet:?xt=urn:btih:5ba51fec45a6e521db60b2e33dbabeb61308fdfa&dn=0x02ab&tr=udp%3A%2F%2Ftracker.opentrackr.org%3A1337%2Fannounce"
	got, err := WithPeers(m, "127.0.0.1:9025", "127.0.0.1:9025")
	if err != nil {
		t.Fatal(err)
	}
	want := m + "&x.pe=127.0.0.1%3A9025"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}
