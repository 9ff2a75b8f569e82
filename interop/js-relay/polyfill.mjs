// Promise.withResolvers (ES2024, Node 22): the pinned js-waku/libp2p set calls
// it; Node 20 lacks it. Loaded with `node --import ./polyfill.mjs`.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function withResolvers() {
    let resolve, reject;
    const promise = new this((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  };
}
