// relay.mjs: a js-waku relay node (11/WAKU2-RELAY over TCP, noise, yamux,
// with js-waku's 66/WAKU2-METADATA) as an independent peer for
// internal/waku/node/js_relay_interop_test.go. Run with
// `node --import ./polyfill.mjs relay.mjs` (Node 20 needs the polyfill).
//
// Environment: WAKU_CLUSTER_ID (default 16) and WAKU_SHARD (default 32) pick
// its one pubsub topic /waku/2/rs/<cluster>/<shard>, which is also what its
// metadata service announces; WAKU_CONTENT_TOPIC; WAKU_SYM_CHATS (below).
//
// Protocol: JSON lines. Bytes are lowercase hex. At start it prints
//   {"event":"ready", "peerId", "addrs":[multiaddr with /p2p]}
// and for every relayed message on the pubsub topic
//   {"event":"message", "pubsubTopic", "contentTopic", "payloadHex", "hashHex"}
// With WAKU_SYM_CHATS set (comma-separated status chat ids), it also
// subscribes, per chat, to status-go's public-chat content topic
// "/waku/1/0x<keccak256(chat)[:4]>/rfc26" with js-waku's symmetric decoder
// and the key it derives itself (pbkdf2(chat, "", 65356, 32, sha256)), and
// prints for every message it opens
//   {"event":"chat", "chat", "contentTopic", "pubsubTopic", "payloadHex"
//    (the decrypted rfc26 payload), "signerHex" (recovered public key),
//    "hashHex", "wakuPayloadSize" (the sealed payload's size),
//    "wakuMessageSize" (the WakuMessage as js-waku re-encodes it)}
// Requests on stdin, one reply line each (in order, no "event" key):
//   {"op":"dial", "addr"}                      -> {"ok":true}
//   {"op":"peers"}                             -> {"mesh":n, "topicPeers":n, "connections":n}
//   {"op":"send", "payloadHex", "timestampMs"} -> {"recipients":n, "hashHex"}
//   {"op":"metadata", "peerId"}                -> {"clusterId":n, "shards":[n...]}
//     js-waku's own 66/WAKU2-METADATA client (node.libp2p.services.metadata
//     .query) asks the connected peer peerId for its cluster and shards.
//   {"op":"connected", "peerId"}               -> {"connections":n, "oldestMs":n}
//     (open connections to peerId, and the age of the oldest; 0 if none)
//   {"op":"sendChat", "chat", "payloadHex", "timestampMs", "sigPrivKeyHex"?,
//    "keyHex"?, "contentTopic"?}
//     -> {"recipients", "hashHex", "timestampNs", "topicHex", "signerHex",
//         "dataHex", "paddingHex"}
//     publishes as a Status client's transport does: js-waku's symmetric
//     encoder with the chat key (pbkdf2 of the chat id; keyHex overrides it,
//     e.g. a wrong key) and the signing key (none: unsigned), on the chat's
//     content topic (contentTopic overrides it). The reply is what a control
//     node must archive, computed here: js-waku's message hash, the
//     timestamp in ns, the topic's 4 bytes, and, opened with the chat key by
//     js-waku's symmetric decoder, the signer and data; the padding is read
//     from the rfc26 plaintext decrypted here with node:crypto.
// Failures reply {"error":"..."}.
//
// What js-waku 0.0.27 does about metadata (@waku/core lib/metadata,
// connection_manager.js): its metadata service (node.libp2p.services
// .metadata) answers requests, storing the requester's cluster and shards
// in its peer store, and queries only when asked (here, or
// waitForRemotePeer for store/filter/lightpush, and not if the peer already
// queried it). It never queries on connect and never disconnects a peer on
// another cluster; relay meshes without it. Its stream manager opens a
// metadata stream to each peer that identifies the protocol ahead of use and
// writes nothing on it until a query, so a peer that times out a silent
// request stream (ours: MetadataTimeout, 10 s) makes a later query fail
// with "stream reset": query soon after connecting. And libp2p's autodial
// (js-waku sets minConnections 1) re-dials a peer that hung up at once, in a
// loop, when it is its only known peer.
import { createDecipheriv, pbkdf2Sync } from "node:crypto";
import { out, serveLines } from "./lines.mjs";

import { yamux } from "@chainsafe/libp2p-yamux";
import { tcp } from "@libp2p/tcp";
import { multiaddr } from "@multiformats/multiaddr";
import { createDecoder, createEncoder } from "@waku/core";
import {
  createDecoder as createSymDecoder,
  createEncoder as createSymEncoder,
} from "@waku/message-encryption/symmetric";
import { messageHash } from "@waku/message-hash";
import { proto_message } from "@waku/proto";
import { keccak_256 } from "@noble/hashes/sha3";
import { createRelayNode } from "@waku/sdk/relay";

const clusterId = Number(process.env.WAKU_CLUSTER_ID ?? 16);
const shard = Number(process.env.WAKU_SHARD ?? 32);
const pubsubTopic = `/waku/2/rs/${clusterId}/${shard}`;
const contentTopic = process.env.WAKU_CONTENT_TOPIC ?? "/archivefleet/1/relay-interop/proto";

const hex = (b) => Buffer.from(b ?? []).toString("hex");
const bytes = (h) => new Uint8Array(Buffer.from(h ?? "", "hex"));

const node = await createRelayNode({
  networkConfig: { clusterId, shards: [shard] },
  libp2p: {
    addresses: { listen: ["/ip4/127.0.0.1/tcp/0"] },
    transports: [tcp()],
    streamMuxers: [yamux()], // go-libp2p has no mplex
    hideWebSocketInfo: true,
  },
});
await node.start();

const encoder = createEncoder({ contentTopic, pubsubTopic });
node.relay.subscribe([createDecoder(contentTopic, pubsubTopic)], (msg) => {
  out({
    event: "message",
    pubsubTopic: msg.pubsubTopic,
    contentTopic: msg.contentTopic,
    payloadHex: hex(msg.payload),
    // The wire message (msg.proto): DecodedMessage.timestamp is a Date, so
    // hashing msg itself would truncate the timestamp to milliseconds.
    hashHex: hex(messageHash(msg.pubsubTopic, msg.proto)),
  });
});

const chatKey = (chat) => new Uint8Array(pbkdf2Sync(chat, "", 65356, 32, "sha256"));
const chatContentTopic = (chat) => `/waku/1/0x${hex(keccak_256(new TextEncoder().encode(chat)).slice(0, 4))}/rfc26`;

// rfc26Padding decrypts a version-1 symmetric payload (AES-256-GCM,
// ciphertext ‖ tag(16) ‖ nonce(12)) and returns the padding of its
// plaintext: flags | size (LE, flags&3 bytes) | data | padding | [sig 65].
function rfc26Padding(key, payload) {
  const nonce = payload.subarray(payload.length - 12);
  const tag = payload.subarray(payload.length - 28, payload.length - 12);
  const d = createDecipheriv("aes-256-gcm", key, nonce);
  d.setAuthTag(tag);
  const pt = Buffer.concat([d.update(payload.subarray(0, payload.length - 28)), d.final()]);
  const width = pt[0] & 3;
  let size = 0;
  for (let i = 0; i < width; i++) size |= pt[1 + i] << (8 * i);
  const end = pt[0] & 4 ? pt.length - 65 : pt.length;
  return pt.subarray(1 + width + size, end);
}

for (const chat of (process.env.WAKU_SYM_CHATS ?? "").split(",").filter(Boolean)) {
  const key = chatKey(chat);
  const chatTopic = chatContentTopic(chat);
  node.relay.subscribe([createSymDecoder(chatTopic, key, pubsubTopic)], (msg) => {
    out({
      event: "chat",
      chat,
      pubsubTopic: msg.pubsubTopic,
      contentTopic: msg.contentTopic,
      payloadHex: hex(msg.payload),
      signerHex: hex(msg.signaturePublicKey),
      hashHex: hex(messageHash(msg.pubsubTopic, msg.proto)),
      wakuPayloadSize: msg.proto.payload?.length ?? 0,
      wakuMessageSize: proto_message.WakuMessage.encode(msg.proto).length,
    });
  });
}

out({
  event: "ready",
  peerId: node.libp2p.peerId.toString(),
  addrs: node.libp2p.getMultiaddrs().map((a) => a.toString()),
});

async function handle(req) {
  switch (req.op) {
    case "dial":
      await node.libp2p.dial(multiaddr(req.addr));
      return { ok: true };
    case "peers":
      return {
        mesh: node.relay.getMeshPeers(pubsubTopic).length,
        topicPeers: node.relay.gossipSub.getSubscribers(pubsubTopic).length,
        connections: node.libp2p.getConnections().length,
      };
    case "sendChat": {
      const ct = req.contentTopic ?? chatContentTopic(req.chat);
      const enc = createSymEncoder({
        contentTopic: ct,
        symKey: req.keyHex ? bytes(req.keyHex) : chatKey(req.chat),
        sigPrivKey: req.sigPrivKeyHex ? bytes(req.sigPrivKeyHex) : undefined,
        pubsubTopic,
      });
      const message = { payload: bytes(req.payloadHex), timestamp: new Date(req.timestampMs) };
      // Encode once and send exactly those bytes (padding and nonce are
      // random: encoding again would make another message).
      const proto = await enc.toProtoObj(message);
      const wire = proto_message.WakuMessage.encode(proto);
      const fixed = { pubsubTopic, contentTopic: ct, ephemeral: false, toWire: async () => wire, toProtoObj: async () => proto };
      const res = await node.relay.send(fixed, message);
      if (res.failures?.length) return { error: JSON.stringify(res.failures) };
      const reply = {
        recipients: res.successes.length,
        hashHex: hex(messageHash(pubsubTopic, proto)),
        timestampNs: String(proto.timestamp),
        topicHex: ct.split("/")[3].slice(2),
      };
      const opened = await createSymDecoder(ct, chatKey(req.chat), pubsubTopic).fromProtoObj(pubsubTopic, proto);
      if (opened) {
        reply.signerHex = hex(opened.signaturePublicKey);
        reply.dataHex = hex(opened.payload);
        reply.paddingHex = hex(rfc26Padding(chatKey(req.chat), proto.payload));
      }
      return reply;
    }
    case "send": {
      const message = { payload: bytes(req.payloadHex), timestamp: new Date(req.timestampMs) };
      const proto = await encoder.toProtoObj(message);
      const res = await node.relay.send(encoder, message);
      if (res.failures?.length) return { error: JSON.stringify(res.failures) };
      return { recipients: res.successes.length, hashHex: hex(messageHash(pubsubTopic, proto)) };
    }
    case "metadata": {
      const peer = node.libp2p.getPeers().find((id) => id.toString() === req.peerId);
      if (!peer) throw new Error(`not connected to ${req.peerId}`);
      // query has no timeout of its own; the Go side waits 10 s per reply.
      const { shardInfo, error } = await withTimeout(node.libp2p.services.metadata.query(peer), 8000);
      if (error) return { error: `metadata query: ${error}` };
      return { clusterId: shardInfo.clusterId, shards: shardInfo.shards };
    }
    case "connected": {
      const conns = node.libp2p.getConnections().filter((c) => c.remotePeer.toString() === req.peerId);
      const now = Date.now();
      return { connections: conns.length, oldestMs: Math.max(0, ...conns.map((c) => now - c.timeline.open)) };
    }
    default:
      throw new Error(`unknown op ${req.op}`);
  }
}

function withTimeout(promise, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

serveLines(handle, node);
