// store-client.mjs: js-waku's own Store v3 client as an independent client
// of internal/waku/store's service (internal/waku/node/store_jswaku_test.go).
// It is a @waku/sdk 0.0.27 light node (createLightNode) whose store SDK
// (node.store.queryGenerator, over @waku/core StoreCore.queryPerPage)
// queries one store peer. Run with `node --import ./polyfill.mjs store-client.mjs` (Node 20
// needs the polyfill).
//
// Environment: STORE_PEER (required), the store's multiaddr with /p2p;
// WAKU_CLUSTER_ID (default 16) and WAKU_SHARD (default 32) pick the node's
// one pubsub topic /waku/2/rs/<cluster>/<shard>, the one queries go to.
//
// Protocol: JSON lines, bytes as lowercase hex. At start it dials STORE_PEER,
// waits for it as a store peer (waitForRemotePeer with Protocols.Store: the
// peer must identify the store protocol and pass js-waku's metadata
// handshake, which the store SDK's peer selection needs: a connected peer
// whose stored shard info has our cluster), then prints
//   {"event":"ready", "peerId"}
// Requests on stdin, one reply line each (in order):
//   {"op":"query", "contentTopics":[...], "forward":bool, "limit":n,
//    "timeStartMs":n, "timeEndMs":n}                      (all but op optional)
//   -> {"pages":[n...], "messages":[{"hashHex", "payloadHex", "contentTopic",
//       "pubsubTopic", "timestampNs"}...], "undecoded":n}
//   pages are the sizes js-waku yielded, in order; messages are those it
//   decoded (plain version-0 decoders, one per content topic), in the order
//   it yielded them, with the hash js-waku computes itself
//   (@waku/message-hash over the message as received); undecoded counts the
//   entries it could not decode. limit, timeStartMs, timeEndMs left out are
//   left out of the query (js-waku then sends no limit or time bound).
// Failures reply {"error":"..."}.
//
// What js-waku 0.0.27's store client does on the wire (@waku/core
// lib/store/index.js, rpc.js; @waku/sdk protocols/store.js): a fresh request
// id (uuid) per page; include_data true, pagination_forward true unless
// told otherwise; time bounds as Date (ms) * 1e6; the next page's cursor is
// the hash of the last message of the page going forward and of the FIRST
// going backward (it ignores the response's pagination_cursor); it stops
// only on a page without messages (or a status >= 300, which it throws); a
// response frame over 4 MiB cannot be read (it-length-prefixed default).
// It does not split long time ranges (later js-waku versions split at 24 h).
import { out, serveLines } from "./lines.mjs";

import { yamux } from "@chainsafe/libp2p-yamux";
import { tcp } from "@libp2p/tcp";
import { multiaddr } from "@multiformats/multiaddr";
import { createDecoder, createLightNode, Protocols, waitForRemotePeer } from "@waku/sdk";
import { messageHash } from "@waku/message-hash";

const clusterId = Number(process.env.WAKU_CLUSTER_ID ?? 16);
const shard = Number(process.env.WAKU_SHARD ?? 32);
const pubsubTopic = `/waku/2/rs/${clusterId}/${shard}`;
const storePeer = process.env.STORE_PEER;
if (!storePeer) throw new Error("STORE_PEER not set");

const hex = (b) => Buffer.from(b ?? []).toString("hex");

const node = await createLightNode({
  networkConfig: { clusterId, shards: [shard] },
  libp2p: {
    transports: [tcp()],
    streamMuxers: [yamux()], // go-libp2p has no mplex
    hideWebSocketInfo: true,
  },
});
await node.start();
// A plain connection: node.dial would also open (and leave idle) a stream
// per protocol.
await node.libp2p.dial(multiaddr(storePeer));
await waitForRemotePeer(node, [Protocols.Store], 20000);
out({ event: "ready", peerId: node.libp2p.peerId.toString() });

// query, retried for up to 10 s while js-waku says "No peers available":
// its store peer selection needs the shard info our peer's metadata request
// leaves in js-waku's peer store, which can land a moment after
// waitForRemotePeer resolves (seen 1 run in 4).
async function queryWhenPeered(req) {
  for (let tries = 0; ; tries++) {
    try {
      return await query(req);
    } catch (e) {
      if (!String(e?.message).includes("No peers available") || tries >= 50) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

async function query(req) {
  const decoders = (req.contentTopics ?? []).map((ct) => createDecoder(ct, pubsubTopic));
  const options = { paginationForward: req.forward ?? true };
  if (req.limit) options.paginationLimit = req.limit;
  if (req.timeStartMs != null) options.timeStart = new Date(req.timeStartMs);
  if (req.timeEndMs != null) options.timeEnd = new Date(req.timeEndMs);
  const pages = [];
  const messages = [];
  let undecoded = 0;
  for await (const page of node.store.queryGenerator(decoders, options)) {
    pages.push(page.length);
    for (const msg of await Promise.all(page)) {
      if (!msg) {
        undecoded++;
        continue;
      }
      messages.push({
        // The wire message (msg.proto): DecodedMessage.timestamp is a Date,
        // hashing it would truncate the timestamp to milliseconds.
        hashHex: hex(messageHash(msg.pubsubTopic, msg.proto)),
        payloadHex: hex(msg.payload),
        contentTopic: msg.contentTopic,
        pubsubTopic: msg.pubsubTopic,
        timestampNs: String(msg.proto.timestamp ?? 0),
      });
    }
  }
  return { pages, messages, undecoded };
}

async function handle(req) {
  switch (req.op) {
    case "query":
      return await queryWhenPeered(req);
    default:
      throw new Error(`unknown op ${req.op}`);
  }
}

serveLines(handle, node);
