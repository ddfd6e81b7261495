// What the SDK's tests share besides the gateways (standalone.js): text helpers, bounded waits
// (a failure fails the test instead of hanging it), and a WebSocket a test can hold, drop,
// rewrite and inject messages on while everything else passes through to the real one.

export const text = (s) => new TextEncoder().encode(s);
export const str = (b) => new TextDecoder().decode(b);
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** How long a test waits for anything before it fails. */
export const WAIT_MS = 15000;

/** Resolves with the next `n` events of `type` on `target`; rejects after `ms`. */
export function events(target, type, n, ms = WAIT_MS) {
  const got = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${got.length} of ${n} "${type}" events in ${ms} ms`)), ms);
    target.addEventListener(type, (e) => {
      got.push(e.detail);
      if (got.length === n) {
        clearTimeout(timer);
        resolve(got);
      }
    });
  });
}

/** Waits until `condition()` holds; throws, saying `what`, after `ms`. */
export async function until(condition, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(20);
  }
}

/**
 * A WebSocket class for `options.WebSocket`: each instance wraps a real one. `inbound(data, n,
 * tap)` sees the `n`th message from the server first and may return `"drop"` (the session never
 * sees it) or replacement data; `outbound(data, tap)` sees every message the session sends.
 * `Tap.sockets` lists the instances, newest last; `tap.inject(data)` hands the session a message
 * as if the server had sent it.
 */
export function tapped({ inbound, outbound } = {}) {
  const Real = globalThis.WebSocket;
  return class Tap {
    static sockets = [];

    static get last() {
      return Tap.sockets[Tap.sockets.length - 1];
    }

    constructor(url) {
      Tap.sockets.push(this);
      this.received = 0;
      this.real = new Real(url);
      this.real.binaryType = "arraybuffer";
      this.real.onopen = (e) => this.onopen?.(e);
      this.real.onerror = (e) => this.onerror?.(e);
      this.real.onclose = (e) => this.onclose?.(e);
      this.real.onmessage = (e) => {
        const verdict = inbound?.(e.data, this.received++, this);
        if (verdict === "drop") return;
        this.onmessage?.({ data: verdict ?? e.data });
      };
    }

    set binaryType(_) {
      // Always arraybuffer: the real socket's is set above.
    }

    send(data) {
      outbound?.(data, this);
      this.real.send(data);
    }

    close() {
      this.real.close();
    }

    inject(data) {
      this.onmessage?.({ data });
    }
  };
}
