package wakuwire_test

import (
	"encoding/hex"
	"testing"

	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

func TestChatContentTopic(t *testing.T) {
	for _, tc := range []struct {
		chatID, want, source string
	}{
		// The Status client's published contact discovery topic is the
		// dynamic topic of "contact-discovery".
		{"contact-discovery", "/waku/1/0xf8946aac/rfc26", "Status contact discovery topic"},
		// Keccak-256("") = c5d24601…, the Ethereum empty hash; SHA3-256("")
		// would give a7ffc6f8…, so this pins legacy Keccak.
		{"", "/waku/1/0xc5d24601/rfc26", "Keccak-256 of the empty string"},
	} {
		if got := wakuwire.ChatContentTopic(tc.chatID); got != tc.want {
			t.Errorf("ChatContentTopic(%q) = %q, want %q (%s)", tc.chatID, got, tc.want, tc.source)
		}
	}
}

func TestChatKey(t *testing.T) {
	for _, tc := range []struct {
		chatID, want, source string
	}{
		// status-web packages/status-js/src/utils/generate-key-from-password.test.ts
		{"arbitrary data here", "c49ad65ebf2a7b7253bf400e3d27719362a91b2c9b9f54d50a69117021666c33", "status-js"},
		{"0x02dcec6041fb999d65f1d33363e08c93d3c1f6f0fbbb26add383e2cf46c2b921f41dc14fd8-9a8b-4df5-a358-2c3067be5439",
			"76ff5bf0a74a8e724367c7fc003f066d477641f468768a8da2817addf5c2ce76", "status-js"},
		// python3 hashlib.pbkdf2_hmac('sha256', chatID, b'', 65356, 32)
		{"0x02dcec6041fb999d65f1d33363e08c93d3c1f6f0fbbb26add383e2cf46c2b921f4-memberUpdate",
			"968a5dc1e3efd495ec3a71d4e1772dcec1e372fe400854ab3f6a2402a9fccd89", "python hashlib"},
		{"0x02dcec6041fb999d65f1d33363e08c93d3c1f6f0fbbb26add383e2cf46c2b921f4-magnetlinks",
			"26f3658be9c95736bad0a5bcbb291db73bdd0dfcee93d9c21b862547d16ea0a9", "python hashlib"},
		{"", "ffe46925eca10a1c333a2f37eaea7cafbb7fa5f1f8e097010f93d73ae7fb7e67", "python hashlib"},
	} {
		if got := hex.EncodeToString(wakuwire.ChatKey(tc.chatID)); got != tc.want {
			t.Errorf("ChatKey(%q) = %s, want %s (%s)", tc.chatID, got, tc.want, tc.source)
		}
	}
}

func TestShardTopic(t *testing.T) {
	for _, tc := range []struct {
		cluster, index uint16
		want           string
	}{
		{16, 32, "/waku/2/rs/16/32"},
		{16, 64, "/waku/2/rs/16/64"},
		{1, 0, "/waku/2/rs/1/0"},
		{65535, 1023, "/waku/2/rs/65535/1023"},
	} {
		if got := wakuwire.ShardTopic(tc.cluster, tc.index); got != tc.want {
			t.Errorf("ShardTopic(%d, %d) = %q, want %q", tc.cluster, tc.index, got, tc.want)
		}
	}
	if wakuwire.DefaultCommunityShard != wakuwire.ShardTopic(16, 32) {
		t.Errorf("DefaultCommunityShard = %q", wakuwire.DefaultCommunityShard)
	}
}
