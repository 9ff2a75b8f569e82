package wakuwire

import (
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/hex"
	"strconv"

	"golang.org/x/crypto/sha3"
)

// DefaultCommunityShard is the pubsub topic of a community that has no shard
// set: status-go falls back to cluster 16, index 32
// (protocol/common/shard/shard.go), so that is where members listen.
const DefaultCommunityShard = "/waku/2/rs/16/32"

// chatKeyIterations is status-go's PBKDF2 count, 65356 — not 65536. It looks
// like a typo upstream, but every client derives keys with it, so changing it
// would make the fleet's messages unreadable.
const chatKeyIterations = 65356

// The suffixes of a community's two chats that carry archive links, after
// its id "0x…": the universal chat current clients send every channel
// message (and CommunityMessageArchiveLink) on, and the legacy chat older
// clients listen on for CommunityMessageArchiveMagnetlink.
const (
	UniversalChatSuffix   = "-memberUpdate"
	MagnetlinksChatSuffix = "-magnetlinks"
)

// UniversalChatID is status-go's universal chat of the community whose id
// (0x-prefixed hex) is community.
func UniversalChatID(community string) string { return community + UniversalChatSuffix }

// MagnetlinksChatID is the community's legacy magnet-links chat.
func MagnetlinksChatID(community string) string { return community + MagnetlinksChatSuffix }

// ChatTopic is the 4-byte topic of a chat: the first 4 bytes of the legacy
// Keccak-256 (not SHA3-256) of its id, as status-go derives it
// (transport.ToTopic).
func ChatTopic(chatID string) [4]byte {
	h := sha3.NewLegacyKeccak256()
	h.Write([]byte(chatID))
	var t [4]byte
	copy(t[:], h.Sum(nil))
	return t
}

// ChatContentTopic returns the content topic status-go puts on every message
// of a chat: "/waku/1/0x<hex(ChatTopic(chatID))>/rfc26". Members filter and
// query store nodes by it, so it must match byte for byte.
func ChatContentTopic(chatID string) string {
	t := ChatTopic(chatID)
	return "/waku/1/0x" + hex.EncodeToString(t[:]) + "/rfc26"
}

// ChatKey returns a public chat's symmetric key, the one every member
// derives from the chat ID alone: PBKDF2-HMAC-SHA256(password = chatID,
// salt = empty, 65356 iterations, 32 bytes) (status-go wakuv2/waku.go
// AddSymKeyFromPassword). It is deliberately slow; callers sending often
// should cache it and use PublicMessageWithKey.
//
// It panics only if the runtime forbids this non-approved derivation
// (GODEBUG=fips140=only rejects the empty salt); status-go's scheme cannot
// be made FIPS-compliant, so there is no error worth returning.
func ChatKey(chatID string) []byte {
	k, err := pbkdf2.Key(sha256.New, chatID, nil, chatKeyIterations, 32)
	if err != nil {
		panic("wakuwire: ChatKey: " + err.Error())
	}
	return k
}

// ShardTopic returns the static-sharding pubsub topic "/waku/2/rs/<cluster>/<index>"
// (RELAY-SHARDING); relay meshes, lightpush and store queries are all keyed
// by it, so it is built in one place.
func ShardTopic(cluster, index uint16) string {
	return "/waku/2/rs/" + strconv.FormatUint(uint64(cluster), 10) + "/" + strconv.FormatUint(uint64(index), 10)
}
