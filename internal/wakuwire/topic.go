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

// ChatContentTopic returns the content topic status-go puts on every message
// of a chat: "/waku/1/0x<hex(Keccak256(chatID)[:4])>/rfc26"
// (transport/topic.go ToTopic, wakuv2/common/topic.go ContentTopic). Members
// filter and query store nodes by it, so it must match byte for byte; note
// the hash is legacy Keccak-256, not SHA3-256.
func ChatContentTopic(chatID string) string {
	h := sha3.NewLegacyKeccak256()
	h.Write([]byte(chatID))
	sum := h.Sum(nil)
	return "/waku/1/0x" + hex.EncodeToString(sum[:4]) + "/rfc26"
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
