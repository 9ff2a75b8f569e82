// lines.mjs: the JSON-lines protocol relay.mjs and store-client.mjs speak
// with their Go tests (internal/testenv NodeScript): out writes one line;
// serveLines answers each stdin line with handle's result (or {"error"}),
// one request at a time so replies stay in order, and on stdin EOF stops
// the node and exits.
import { createInterface } from "node:readline";

export const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

export function serveLines(handle, node) {
  let chain = Promise.resolve();
  createInterface({ input: process.stdin }).on("line", (line) => {
    chain = chain.then(async () => {
      try {
        out(await handle(JSON.parse(line)));
      } catch (e) {
        out({ error: String(e?.stack ?? e) });
      }
    });
  }).on("close", async () => {
    await chain;
    await node.stop();
    process.exit(0);
  });
}
