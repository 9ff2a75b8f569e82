// wire.mjs: js-waku as an independent implementation of the Waku wire formats
// (14/WAKU2-MESSAGE, 26/WAKU2-PAYLOAD symmetric, deterministic message hash),
// driven by internal/wakuwire/js_interop_test.go.
//
// Protocol: one JSON request per stdin line, one JSON reply per stdout line,
// in order. Bytes are lowercase hex without 0x. Failures reply {"error": "..."}.
//
//   {"op":"chat", "chatId"}
//     -> {chatKeyHex, contentTopic}
//        key = PBKDF2-SHA256(chatId, empty salt, 65356, 32) computed here;
//        topic = /waku/1/0x<keccak256(chatId)[:4]>/rfc26 with js-waku's keccak256.
//   {"op":"decrypt", "chatId" | "chatKeyHex", "pubsubTopic", "contentTopic"?,
//    "wakuMessageHex", "expectedSignerHex"?}
//     -> {payloadHex, signaturePublicKeyHex, signatureHex, signatureOk, version,
//         timestampNs, contentTopic, metaHex, ephemeral, hashHex, chatKeyHex}
//   {"op":"encrypt", "chatId" | "chatKeyHex", "pubsubTopic", "contentTopic"?,
//    "payloadHex", "sigPrivKeyHex"?, "timestampMs"}
//     -> {wakuMessageHex, hashHex, chatKeyHex}
//
// js-waku's decoder/encoder are the published @waku/message-encryption/symmetric
// ones; the hash is @waku/core messageHash. Nothing here re-implements the
// formats: this file only moves bytes in and out of js-waku.
import { pbkdf2Sync } from "node:crypto";
import { createInterface } from "node:readline";

import { messageHash } from "@waku/core";
import { keccak256 } from "@waku/message-encryption/crypto";
import { createDecoder, createEncoder } from "@waku/message-encryption/symmetric";

const hex = (b) => (b === undefined || b === null ? "" : Buffer.from(b).toString("hex"));
const bytes = (h) => new Uint8Array(Buffer.from(h ?? "", "hex"));

// What status-go does in wakuv2/waku.go (AddSymKeyFromPassword) and
// transport/topic.go (ToTopic), computed independently of the Go code.
const chatKey = (chatId) => new Uint8Array(pbkdf2Sync(chatId, "", 65356, 32, "sha256"));
const chatContentTopic = (chatId) =>
  `/waku/1/0x${hex(keccak256(new TextEncoder().encode(chatId)).slice(0, 4))}/rfc26`;

function keyOf(req) {
  if (typeof req.chatId === "string") return chatKey(req.chatId);
  if (typeof req.chatKeyHex === "string") return bytes(req.chatKeyHex);
  throw new Error("need chatId or chatKeyHex");
}

function contentTopicOf(req) {
  if (req.contentTopic) return req.contentTopic;
  if (typeof req.chatId === "string") return chatContentTopic(req.chatId);
  throw new Error("need contentTopic or chatId");
}

// The encoder/decoder only read routingInfo.pubsubTopic.
const routing = (pubsubTopic) => ({ pubsubTopic, clusterId: 16, shardId: 0 });

const ops = {
  async chat(req) {
    return { chatKeyHex: hex(chatKey(req.chatId)), contentTopic: chatContentTopic(req.chatId) };
  },

  async decrypt(req) {
    const key = keyOf(req);
    const decoder = createDecoder(contentTopicOf(req), routing(req.pubsubTopic), key);
    const proto = await decoder.fromWireToProtoObj(bytes(req.wakuMessageHex));
    const msg = await decoder.fromProtoObj(req.pubsubTopic, proto);
    if (!msg) throw new Error("js-waku symmetric decoder rejected the message (wrong version, key or layout)");
    let signatureOk = msg.signaturePublicKey !== undefined;
    if (req.expectedSignerHex) signatureOk = msg.verifySignature(bytes(req.expectedSignerHex));
    return {
      payloadHex: hex(msg.payload),
      signaturePublicKeyHex: hex(msg.signaturePublicKey),
      signatureHex: hex(msg.signature),
      signatureOk,
      version: msg.version,
      timestampNs: proto.timestamp === undefined ? null : proto.timestamp.toString(),
      contentTopic: msg.contentTopic,
      metaHex: hex(msg.meta),
      ephemeral: msg.ephemeral,
      hashHex: hex(msg.hash), // messageHash(pubsubTopic, proto) inside js-waku
      chatKeyHex: hex(key),
    };
  },

  async encrypt(req) {
    const key = keyOf(req);
    const encoder = createEncoder({
      contentTopic: contentTopicOf(req),
      routingInfo: routing(req.pubsubTopic),
      symKey: key,
      sigPrivKey: req.sigPrivKeyHex ? bytes(req.sigPrivKeyHex) : undefined,
    });
    const message = { payload: bytes(req.payloadHex), timestamp: new Date(Number(req.timestampMs)) };
    const wire = await encoder.toWire(message);
    // Hash what went on the wire, as js-waku reads it back.
    const decoder = createDecoder(encoder.contentTopic, routing(req.pubsubTopic), key);
    const proto = await decoder.fromWireToProtoObj(wire);
    return {
      wakuMessageHex: hex(wire),
      hashHex: hex(messageHash(req.pubsubTopic, proto)),
      chatKeyHex: hex(key),
    };
  },
};

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false });
// Replies must stay in request order: handle one line at a time.
let chain = Promise.resolve();
rl.on("line", (line) => {
  chain = chain.then(async () => {
    if (line.trim() === "") return;
    let reply;
    try {
      const req = JSON.parse(line);
      const op = ops[req.op];
      if (!op) throw new Error(`unknown op ${JSON.stringify(req.op)}`);
      reply = await op(req);
    } catch (e) {
      reply = { error: String(e?.stack ?? e) };
    }
    process.stdout.write(JSON.stringify(reply) + "\n");
  });
});
