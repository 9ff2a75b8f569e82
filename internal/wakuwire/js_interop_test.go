package wakuwire

// Interop with js-waku, a Waku implementation nobody here wrote: the published
// npm packages @waku/message-encryption (26/WAKU2-PAYLOAD symmetric encoder and
// decoder) and @waku/core (messageHash), driven through interop/js/wire.mjs.
// Versions are pinned in interop/js/package-lock.json; scripts/test installs
// them (npm ci) before running the Go tests.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/archivefleet/archivefleet/internal/testenv"
)

const jsPubsubTopic = "/waku/2/rs/16/32"

// jsPeer is one `node wire.mjs` child: one JSON request per line, one reply per line.
type jsPeer struct {
	t      *testing.T
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *bytes.Buffer
}

func startJSPeer(t *testing.T) *jsPeer {
	t.Helper()
	node, dir := testenv.NodeInterop(t, "js-waku interop", "js", "@waku/message-encryption")
	// No Promise.withResolvers polyfill: the pinned @waku/message-encryption and
	// @waku/core code paths used here do not call it on Node 20.
	cmd := exec.Command(node, "wire.mjs")
	cmd.Dir = dir
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &jsPeer{t: t, cmd: cmd, in: in, out: bufio.NewReader(out), stderr: new(bytes.Buffer)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("js-waku interop: starting node wire.mjs: %v", err)
	}
	t.Cleanup(func() {
		in.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return p
}

// call sends one request and decodes the reply into reply; a js-side error fails the test.
func (p *jsPeer) call(t *testing.T, req map[string]any, reply any) {
	t.Helper()
	line, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		b   []byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		if _, err := p.in.Write(append(line, '\n')); err != nil {
			got <- result{nil, err}
			return
		}
		b, err := p.out.ReadBytes('\n')
		got <- result{b, err}
	}()
	var r result
	select {
	case r = <-got:
	case <-time.After(2 * time.Minute):
		p.cmd.Process.Kill()
		t.Fatalf("js-waku interop: no reply to %s within 2m; node stderr:\n%s", req["op"], p.stderr)
	}
	if r.err != nil {
		t.Fatalf("js-waku interop: %s: %v; node stderr:\n%s", req["op"], r.err, p.stderr)
	}
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(r.b, &e); err != nil {
		t.Fatalf("js-waku interop: bad reply %q: %v", truncate(r.b), err)
	}
	if e.Error != "" {
		t.Fatalf("js-waku %s failed: %s", req["op"], e.Error)
	}
	if err := json.Unmarshal(r.b, reply); err != nil {
		t.Fatalf("js-waku interop: decoding %s reply: %v", req["op"], err)
	}
}

func truncHex(b []byte) []byte {
	if len(b) > 64 {
		return b[len(b)-64:]
	}
	return b
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}

type jsChat struct {
	ChatKeyHex   string `json:"chatKeyHex"`
	ContentTopic string `json:"contentTopic"`
}

type jsDecrypted struct {
	PayloadHex            string  `json:"payloadHex"`
	SignaturePublicKeyHex string  `json:"signaturePublicKeyHex"`
	SignatureHex          string  `json:"signatureHex"`
	SignatureOk           bool    `json:"signatureOk"`
	Version               uint32  `json:"version"`
	TimestampNs           *string `json:"timestampNs"`
	ContentTopic          string  `json:"contentTopic"`
	MetaHex               string  `json:"metaHex"`
	Ephemeral             bool    `json:"ephemeral"`
	HashHex               string  `json:"hashHex"`
	ChatKeyHex            string  `json:"chatKeyHex"`
}

type jsEncrypted struct {
	WakuMessageHex string `json:"wakuMessageHex"`
	HashHex        string `json:"hashHex"`
	ChatKeyHex     string `json:"chatKeyHex"`
}

// interopCommunity returns a fixed community key whose compressed public key
// starts with 0x02, so chat ids look like status-go's "0x02…".
func interopCommunity(t *testing.T) *secp256k1.PrivateKey {
	for i := 0; i < 256; i++ {
		seed := sha256.Sum256([]byte("wakuwire js interop community " + strconv.Itoa(i)))
		k := secp256k1.PrivKeyFromBytes(seed[:])
		if k.PubKey().SerializeCompressed()[0] == 0x02 {
			return k
		}
	}
	t.Fatal("no even-y community key")
	return nil
}

func interopKey(label string) *secp256k1.PrivateKey {
	seed := sha256.Sum256([]byte("wakuwire js interop " + label))
	return secp256k1.PrivKeyFromBytes(seed[:])
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex from js: %v", err)
	}
	return b
}

func TestJSInterop(t *testing.T) {
	js := startJSPeer(t)

	community := interopCommunity(t)
	communityID := "0x" + hex.EncodeToString(community.PubKey().SerializeCompressed())
	chats := []string{communityID + "-memberUpdate", communityID + "-magnetlinks"}
	signer := interopKey("node signer")
	signerPub := signer.PubKey().SerializeUncompressed()
	const installationID = "archivefleet-interop"

	// Content topic and symmetric key of a chat, each computed in Node from the
	// chat id alone (js-waku's keccak256; node:crypto PBKDF2).
	t.Run("ChatTopicAndKey", func(t *testing.T) {
		// A channel chat id (community id + channel UUID) too.
		for _, chatID := range append(chats, communityID, communityID+"3f1c2a7e-5b8d-4c1e-9a2f-6d7e8f901234") {
			var r jsChat
			js.call(t, map[string]any{"op": "chat", "chatId": chatID}, &r)
			if got := ChatContentTopic(chatID); got != r.ContentTopic {
				t.Errorf("ChatContentTopic(%q) = %q, js-waku keccak256 gives %q", chatID, got, r.ContentTopic)
			}
			if got := hex.EncodeToString(ChatKey(chatID)); got != r.ChatKeyHex {
				t.Errorf("ChatKey(%q) = %s, node PBKDF2 gives %s", chatID, got, r.ChatKeyHex)
			}
		}
	})

	// Timestamps below are all set and non-zero. js-waku's messageHash leaves an
	// unset (0/absent) timestamp out of the hash, while go-waku (pb/utils.go)
	// always appends 8 bytes: the two disagree for timestamp-less messages, which
	// status-go never sends. TestJSInteropUnsetTimestamp records that case.
	now := time.Unix(1_760_000_000, 123_456_789)

	t.Run("GoToJS/PublicMessage", func(t *testing.T) {
		for _, chatID := range chats {
			for _, size := range []int{0, 100, 5000, 300000} {
				t.Run(fmt.Sprintf("%s/%d", chatID[len(communityID):], size), func(t *testing.T) {
					app := randBytes(1, size)
					msg, err := PublicMessageWithKey(chatID, ChatKey(chatID), installationID, app, signer, now)
					if err != nil {
						t.Fatal(err)
					}
					var r jsDecrypted
					// chatId, not the key: js derives key and content topic itself.
					js.call(t, map[string]any{
						"op": "decrypt", "chatId": chatID, "pubsubTopic": jsPubsubTopic,
						"wakuMessageHex":    hex.EncodeToString(msg.Marshal()),
						"expectedSignerHex": hex.EncodeToString(signerPub),
					}, &r)

					wrapped, err := WrapPublic(installationID, app)
					if err != nil {
						t.Fatal(err)
					}
					payload := mustHex(t, r.PayloadHex)
					if !bytes.Equal(payload, wrapped) {
						t.Errorf("js-decrypted payload (%d bytes) != WrapPublic output (%d bytes)", len(payload), len(wrapped))
					}
					gotInst, gotApp, err := UnwrapPublic(payload)
					if err != nil {
						t.Errorf("UnwrapPublic(js payload): %v", err)
					} else if gotInst != installationID || !bytes.Equal(gotApp, app) {
						t.Errorf("UnwrapPublic(js payload) = %q, %d bytes; want %q, %d bytes", gotInst, len(gotApp), installationID, len(app))
					}
					if r.SignaturePublicKeyHex != hex.EncodeToString(signerPub) || !r.SignatureOk {
						t.Errorf("js recovered signer %s (ok=%v), want %x", r.SignaturePublicKeyHex, r.SignatureOk, signerPub)
					}
					checkJSMeta(t, r, msg, chatID)
				})
			}
		}
	})

	// The rfc26 layer alone, around the size-field and padding boundaries
	// (1+size+data+65 ≡ 0 mod 256 at 189; 2-byte size field from 256; 3-byte from 65536),
	// signed and unsigned.
	t.Run("GoToJS/SealSymmetric", func(t *testing.T) {
		chatID := chats[0]
		key := ChatKey(chatID)
		for _, size := range []int{0, 1, 189, 190, 255, 256, 65535, 65536, 300000} {
			for _, signed := range []bool{true, false} {
				t.Run(fmt.Sprintf("%d/signed=%v", size, signed), func(t *testing.T) {
					data := randBytes(2, size)
					var sk *secp256k1.PrivateKey
					if signed {
						sk = signer
					}
					sealed, err := SealSymmetric(data, key, sk)
					if err != nil {
						t.Fatal(err)
					}
					msg := &Message{Payload: sealed, ContentTopic: ChatContentTopic(chatID), Version: 1, Timestamp: now.UnixNano()}
					var r jsDecrypted
					js.call(t, map[string]any{
						"op": "decrypt", "chatId": chatID, "pubsubTopic": jsPubsubTopic,
						"wakuMessageHex": hex.EncodeToString(msg.Marshal()),
					}, &r)
					if got := mustHex(t, r.PayloadHex); !bytes.Equal(got, data) {
						t.Errorf("js-decrypted data: %d bytes, want %d (equal=%v)", len(got), len(data), bytes.Equal(got, data))
					}
					wantSigner := ""
					if signed {
						wantSigner = hex.EncodeToString(signerPub)
					}
					if r.SignaturePublicKeyHex != wantSigner {
						t.Errorf("js recovered signer %q, want %q", r.SignaturePublicKeyHex, wantSigner)
					}
					checkJSMeta(t, r, msg, chatID)
				})
			}
		}
	})

	t.Run("JSToGo", func(t *testing.T) {
		jsSigner := interopKey("js signer")
		jsSignerPub := jsSigner.PubKey().SerializeUncompressed()
		const tsMs = 1_760_000_000_321
		for _, chatID := range chats {
			for _, size := range []int{0, 1, 100, 189, 256, 5000, 65536, 300000} {
				for _, signed := range []bool{true, false} {
					t.Run(fmt.Sprintf("%s/%d/signed=%v", chatID[len(communityID):], size, signed), func(t *testing.T) {
						data := randBytes(3, size)
						req := map[string]any{
							"op": "encrypt", "chatId": chatID, "pubsubTopic": jsPubsubTopic,
							"payloadHex": hex.EncodeToString(data), "timestampMs": tsMs,
						}
						if signed {
							req["sigPrivKeyHex"] = hex.EncodeToString(jsSigner.Serialize())
						}
						var r jsEncrypted
						js.call(t, req, &r)
						wire := mustHex(t, r.WakuMessageHex)

						var m Message
						if err := m.Unmarshal(wire); err != nil {
							t.Fatalf("Unmarshal(js-waku toWire): %v", err)
						}
						if m.ContentTopic != ChatContentTopic(chatID) {
							t.Errorf("content topic %q, want %q", m.ContentTopic, ChatContentTopic(chatID))
						}
						if m.Version != 1 || m.Timestamp != tsMs*1_000_000 || m.Ephemeral || len(m.Meta) != 0 {
							t.Errorf("js message: version %d timestamp %d ephemeral %v meta %x; want 1, %d, false, none",
								m.Version, m.Timestamp, m.Ephemeral, m.Meta, int64(tsMs*1_000_000))
						}
						env, err := OpenSymmetric(m.Payload, ChatKey(chatID))
						if err != nil {
							t.Fatalf("OpenSymmetric(js-waku payload): %v", err)
						}
						if !bytes.Equal(env.Data, data) {
							t.Errorf("OpenSymmetric data: %d bytes, want %d (equal=%v)", len(env.Data), len(data), bytes.Equal(env.Data, data))
						}
						var wantSigner []byte
						if signed {
							wantSigner = jsSignerPub
						}
						if !bytes.Equal(env.Signer, wantSigner) {
							t.Errorf("OpenSymmetric signer %x, want %x", env.Signer, wantSigner)
						}
						// js-waku pads by 256-(raw%256): a full 256 bytes when raw is already aligned.
						sigLen := 0
						if signed {
							sigLen = 65
						}
						if raw := 1 + sizeFieldLen(len(data)) + len(env.Data) + len(env.Padding) + sigLen; raw%256 != 0 {
							t.Errorf("flags+size+data+padding+sig = %d bytes, not a multiple of 256 (padding %d)", raw, len(env.Padding))
						}
						if got := Hash(jsPubsubTopic, &m); hex.EncodeToString(got[:]) != r.HashHex {
							t.Errorf("Hash = %x, js-waku messageHash = %s", got, r.HashHex)
						}
						// js-waku writes ephemeral=false explicitly (field 31: f8 01 00);
						// Marshal omits zero fields. Any other byte difference is a bug.
						if re := m.Marshal(); !bytes.Equal(re, wire) {
							if !bytes.Equal(append(re, 0xf8, 0x01, 0x00), wire) {
								t.Errorf("Marshal of the js message differs from js-waku's bytes beyond the explicit ephemeral=false (last 64 bytes):\n go %x\n js %x", truncHex(re), truncHex(wire))
							} else if size == 0 && signed {
								t.Logf("js-waku encodes ephemeral=false explicitly (trailing f80100); Marshal omits it: gossipsub ids of re-encoded messages differ")
							}
						}
						// The same message re-encoded by Go must still read the same in js-waku.
						var back jsDecrypted
						js.call(t, map[string]any{
							"op": "decrypt", "chatId": chatID, "pubsubTopic": jsPubsubTopic,
							"wakuMessageHex": hex.EncodeToString(m.Marshal()),
						}, &back)
						if back.HashHex != r.HashHex || back.PayloadHex != hex.EncodeToString(data) {
							t.Errorf("Go re-Marshal of the js message reads differently in js-waku: hash %s vs %s", back.HashHex, r.HashHex)
						}
					})
				}
			}
		}
	})
}

// sizeFieldLen is the rfc26 size-field length for n data bytes (as js-waku computes it).
func sizeFieldLen(n int) int {
	s := 1
	for i := n; i >= 256; i /= 256 {
		s++
	}
	return s
}

// checkJSMeta compares what js-waku read from a Go-encoded message with the message.
func checkJSMeta(t *testing.T, r jsDecrypted, msg *Message, chatID string) {
	t.Helper()
	if r.ContentTopic != msg.ContentTopic || r.ContentTopic != ChatContentTopic(chatID) {
		t.Errorf("js content topic %q, Go message %q, ChatContentTopic %q", r.ContentTopic, msg.ContentTopic, ChatContentTopic(chatID))
	}
	if r.Version != 1 || msg.Version != 1 {
		t.Errorf("version: js %d, Go %d, want 1", r.Version, msg.Version)
	}
	if r.TimestampNs == nil || *r.TimestampNs != strconv.FormatInt(msg.Timestamp, 10) {
		t.Errorf("js timestamp %v ns, Go %d ns", r.TimestampNs, msg.Timestamp)
	}
	if r.Ephemeral != msg.Ephemeral || r.MetaHex != hex.EncodeToString(msg.Meta) {
		t.Errorf("js ephemeral %v meta %q; Go %v %x", r.Ephemeral, r.MetaHex, msg.Ephemeral, msg.Meta)
	}
	if r.ChatKeyHex != hex.EncodeToString(ChatKey(chatID)) {
		t.Errorf("js-derived chat key %s != ChatKey %x", r.ChatKeyHex, ChatKey(chatID))
	}
	if got := Hash(jsPubsubTopic, msg); hex.EncodeToString(got[:]) != r.HashHex {
		t.Errorf("Hash = %x, js-waku messageHash = %s", got, r.HashHex)
	}
}

// TestJSInteropUnsetTimestamp pins down the one known hash divergence: with no
// timestamp, js-waku's messageHash omits the timestamp bytes, while go-waku
// (whose hash Hash follows) appends 8 zero bytes. Not a failure: it records
// which side does what, so a change in either shows up here.
func TestJSInteropUnsetTimestamp(t *testing.T) {
	js := startJSPeer(t)
	chatID := "0x02" + hex.EncodeToString(randBytes(4, 32)) + "-memberUpdate"
	sealed, err := SealSymmetric([]byte("no timestamp"), ChatKey(chatID), nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := &Message{Payload: sealed, ContentTopic: ChatContentTopic(chatID), Version: 1}
	var r jsDecrypted
	js.call(t, map[string]any{
		"op": "decrypt", "chatId": chatID, "pubsubTopic": jsPubsubTopic,
		"wakuMessageHex": hex.EncodeToString(msg.Marshal()),
	}, &r)
	if r.TimestampNs != nil {
		t.Logf("js read timestamp %q from a Go message with none (Go wrote the zero field)", *r.TimestampNs)
	}
	without := sha256.Sum256(bytes.Join([][]byte{[]byte(jsPubsubTopic), sealed, []byte(msg.ContentTopic)}, nil))
	with := sha256.Sum256(bytes.Join([][]byte{[]byte(jsPubsubTopic), sealed, []byte(msg.ContentTopic), make([]byte, 8)}, nil))
	if r.HashHex != hex.EncodeToString(without[:]) {
		t.Errorf("js-waku messageHash without timestamp = %s; expected it to omit the timestamp (%x)", r.HashHex, without)
	}
	got := Hash(jsPubsubTopic, msg)
	switch got {
	case with:
		t.Logf("unset timestamp: Hash appends 8 zero bytes (go-waku), js-waku omits them: %x vs %s", got, r.HashHex)
	case without:
		t.Logf("unset timestamp: Hash omits the timestamp like js-waku (differs from go-waku)")
	default:
		t.Errorf("unset timestamp: Hash = %x matches neither go-waku (%x) nor js-waku (%x)", got, with, without)
	}
}
