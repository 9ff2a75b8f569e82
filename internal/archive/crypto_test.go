package archive

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/archivefleet/archivefleet/internal/pb"
)

// TestHashRatchetEnvelope checks the sealed bytes against status-go's scheme
// step by step, independently of Decrypt.
func TestHashRatchetEnvelope(t *testing.T) {
	c := testCommunity(t, 11)
	r := newTestRatchet(t, c)
	key := r.State.Key
	for seq := uint32(1); seq <= 3; seq++ {
		plain := []byte("archive bytes " + string(rune('0'+seq)))
		blob, err := r.Encrypt(plain)
		if err != nil {
			t.Fatal(err)
		}
		if proto.Unmarshal(blob, &pb.WakuMessageArchive{}) == nil {
			t.Fatal("sealed blob also parses as a plain archive: members would import nothing")
		}
		var pm pb.ProtocolMessage
		if err := proto.Unmarshal(blob, &pm); err != nil {
			t.Fatal(err)
		}
		em := pm.GetEncryptedMessage()["none"]
		h := em.GetHRHeader()
		var ts [8]byte
		binary.LittleEndian.PutUint64(ts[:], key.Timestamp)
		wantKeyID := keccak256(c[:], ts[:], key.Key)
		if pm.GetInstallationId() != r.InstallationID || h.GetSeqNo() != seq ||
			!bytes.Equal(h.GetGroupId(), c[:]) || !bytes.Equal(h.GetKeyId(), wantKeyID) ||
			h.GetDeprecatedKeyId() != uint32(key.Timestamp) {
			t.Fatalf("seq %d: header %+v", seq, h)
		}
		hash := []byte(key.Key)
		for i := uint32(0); i < seq; i++ {
			hash = keccak256(hash)
		}
		got, err := openGCM(hash, em.GetPayload())
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("seq %d: opening with Keccak^%d(key) gave %q, %v", seq, seq, got, err)
		}
		if r.State.SeqNo != seq || !bytes.Equal(r.State.Hash, hash) {
			t.Fatalf("state not advanced to seq %d", seq)
		}
	}
}

func TestHashRatchetDecrypt(t *testing.T) {
	c := testCommunity(t, 12)
	sender := newTestRatchet(t, c)
	var blobs [][]byte
	for i := 0; i < 5; i++ {
		b, err := sender.Encrypt([]byte{byte(i)})
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, b)
	}
	other := RatchetKey{Timestamp: 5, Key: keccak256([]byte("other"))}
	member := &HashRatchet{Community: c, Keys: []RatchetKey{other, sender.State.Key}}
	// Out of order on purpose: the chain cache must walk back from the key.
	for _, i := range []int{3, 0, 4, 1, 2} {
		got, err := member.Decrypt(blobs[i])
		if err != nil || !bytes.Equal(got, []byte{byte(i)}) {
			t.Fatalf("blob %d: %v %v", i, got, err)
		}
	}
	tests := []struct {
		name string
		r    *HashRatchet
		blob []byte
		want error
	}{
		{"no keys", &HashRatchet{Community: c}, blobs[0], ErrKeyNotFound},
		{"other community", &HashRatchet{Community: testCommunity(t, 13), Keys: member.Keys}, blobs[0], ErrKeyNotFound},
		{"garbage", member, []byte{0xff, 0xff, 0xff}, ErrMalformed},
		{"not an envelope", member, []byte{}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.r.Decrypt(tt.blob); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	t.Run("deprecated key id", func(t *testing.T) {
		var pm pb.ProtocolMessage
		proto.Unmarshal(blobs[2], &pm)
		pm.GetEncryptedMessage()["none"].GetHRHeader().KeyId = nil
		old, _ := proto.Marshal(&pm)
		got, err := (&HashRatchet{Community: c, Keys: member.Keys}).Decrypt(old)
		if err != nil || !bytes.Equal(got, []byte{2}) {
			t.Fatalf("old-format header: %v %v", got, err)
		}
	})
	t.Run("tampered", func(t *testing.T) {
		bad := bytes.Clone(blobs[1])
		bad[len(bad)-20] ^= 1
		if _, err := member.Decrypt(bad); err == nil {
			t.Fatal("tampered ciphertext opened")
		}
	})
}

func TestCheckInstallationID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"", false},
		{"\x10\x01", false}, // parses as metadata{from: 1}
		{"f3a1c2d4-0000-4000-8000-archivefleet", true},
		{"7a5e2c3d-1b2c-4d5e-8f90-0123456789ab", true},
	}
	for _, tt := range tests {
		if err := CheckInstallationID(tt.id); (err == nil) != tt.ok {
			t.Errorf("CheckInstallationID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
	}
}
