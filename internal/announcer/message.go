// Package announcer is the announcer service: once a torrent is seeded (or when
// the republish cadence comes round) it sends the community's magnet link as
// status-go does: CommunityMessageArchiveMagnetlink{clock, magnet_uri} in an
// ApplicationMetadataMessage of type 43, signed with the community key.
package announcer

import (
	"errors"
	"fmt"
	"net/url"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
	"golang.org/x/crypto/sha3"
	"google.golang.org/protobuf/proto"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/pb"
)

func keccak(b []byte) []byte {
	h := sha3.NewLegacyKeccak256()
	h.Write(b)
	return h.Sum(nil)
}

// Sign returns status-go's 65-byte R||S||V signature (V in {0,1}) of
// Keccak-256(payload) with the 32-byte private key.
func Sign(key, payload []byte) ([]byte, error) {
	if len(key) != 32 {
		return nil, errors.New("signing key must be 32 bytes")
	}
	priv := secp256k1.PrivKeyFromBytes(key)
	compact := ecdsa.SignCompact(priv, keccak(payload), false) // [27+V] || R || S
	return append(compact[1:65:65], compact[0]-27), nil
}

// Recover returns the compressed public key that signed payload, as a member
// identifies the community from the signature.
func Recover(sig, payload []byte) ([]byte, error) {
	if len(sig) != 65 || sig[64] > 3 {
		return nil, errors.New("signature must be 65 bytes R||S||V with V in 0..3")
	}
	compact := append([]byte{sig[64] + 27}, sig[:64]...)
	pub, _, err := ecdsa.RecoverCompact(compact, keccak(payload))
	if err != nil {
		return nil, err
	}
	return pub.SerializeCompressed(), nil
}

// BuildMessage makes the signed ApplicationMetadataMessage bytes members receive.
func BuildMessage(key []byte, clock uint64, magnet string) ([]byte, error) {
	payload, err := proto.Marshal(&pb.CommunityMessageArchiveMagnetlink{Clock: clock, MagnetUri: magnet})
	if err != nil {
		return nil, err
	}
	sig, err := Sign(key, payload)
	if err != nil {
		return nil, err
	}
	return proto.Marshal(&pb.ApplicationMetadataMessage{
		Signature: sig, Payload: payload,
		Type: pb.ApplicationMetadataMessage_COMMUNITY_MESSAGE_ARCHIVE_MAGNETLINK,
	})
}

// Verified is a decoded, signature-checked announcement.
type Verified struct {
	Community archive.CommunityID
	Clock     uint64
	Magnet    string
}

// Verify decodes an announcement as a member would: type 43, the signer
// recovered from the signature is the community.
func Verify(msg []byte) (*Verified, error) {
	var amm pb.ApplicationMetadataMessage
	if err := proto.Unmarshal(msg, &amm); err != nil {
		return nil, fmt.Errorf("application metadata: %w", err)
	}
	if amm.GetType() != pb.ApplicationMetadataMessage_COMMUNITY_MESSAGE_ARCHIVE_MAGNETLINK {
		return nil, fmt.Errorf("type %d is not 43", amm.GetType())
	}
	pub, err := Recover(amm.GetSignature(), amm.GetPayload())
	if err != nil {
		return nil, err
	}
	var ml pb.CommunityMessageArchiveMagnetlink
	if err := proto.Unmarshal(amm.GetPayload(), &ml); err != nil {
		return nil, fmt.Errorf("magnetlink: %w", err)
	}
	v := &Verified{Clock: ml.GetClock(), Magnet: ml.GetMagnetUri()}
	copy(v.Community[:], pub)
	return v, nil
}

// WithPeers adds x.pe peer addresses to a magnet link, keeping the rest.
func WithPeers(magnet string, peers ...string) (string, error) {
	m, err := metainfo.ParseMagnetUri(magnet)
	if err != nil {
		return "", err
	}
	if m.Params == nil {
		m.Params = url.Values{}
	}
	for _, p := range peers {
		if p != "" && !contains(m.Params["x.pe"], p) {
			m.Params.Add("x.pe", p)
		}
	}
	return m.String(), nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
