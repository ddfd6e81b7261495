// The Janus client SDK: `connect()` and the `Session` it returns, over a binary WebSocket
// (PROTOCOL.md §1: one frame per message). The protocol work is in protocol.js (sans-IO); this
// module moves frames, correlates replies, runs heartbeats and acknowledgements, and resumes
// the session by itself after a lost connection or the edge's reconnect hint (§13.3, §13.6).
//
//   import { connect } from "./sdk/js/src/janus.js";
//   const session = await connect({ url, token, serverKey, resumable: true });
//   const reply = await session.request(mod, seq, data, { obj, timeoutMs });
//   session.addEventListener("push", (e) => console.log(e.detail));
//   await session.close();

import { decodeSCReconnect, decodeSCServerLogout, decodeSCServerUnexpectedErr } from "./proto.js";
import { backoff, ClientSession, ProtocolError, SEQ, SYSTEM } from "./protocol.js";

export { ProtocolError } from "./protocol.js";

/** `SCServerLogout` codes (PROTOCOL.md §7). */
export const LOGOUT_CODES = Object.freeze([
  "Server",
  "Waiting",
  "Unauthorized",
  "ConflictingLogin",
  "AdminKickOut",
  "Banned",
]);

/** A request the gateway or the game service could not serve (`SCServerUnexpectedErr`), or one that timed out. */
export class RequestError extends Error {
  constructor(reason, mod, seq) {
    super(`${reason} (request mod=${mod} seq=${seq})`);
    this.name = "RequestError";
    this.reason = reason;
    this.mod = mod;
    this.seq = seq;
  }
}

const nowSecs = () => Math.floor(Date.now() / 1000);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A session with a Janus edge. Events: `push` (detail: a packet `{ mod, seq, obj, index,
 * data }`), `close` (detail: `{ reason, logout?, message? }`), `reconnecting` (detail: `{
 * attempt, url, cause, reason? }`: `cause` is `reconnect_hint` after the edge's hint, whose
 * `reason` it carries, else how the connection was lost), `resumed` (detail: `{ url, startIndex }`), `error` (detail: a
 * `SCServerUnexpectedErr` that matched no request: `{ mod, seq, msg }`).
 */
export class Session extends EventTarget {
  constructor(options) {
    super();
    this.urls = options.urls ?? [options.url];
    if (!this.urls.length || this.urls.some((u) => typeof u !== "string")) throw new TypeError("url: a ws:// or wss:// URL");
    this.options = options;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (!this.WebSocket) throw new TypeError("no WebSocket here: pass options.WebSocket (Node 20: --experimental-websocket)");
    this.protocol = new ClientSession({
      serverKey: options.serverKey,
      mode: options.mode,
      resumable: options.resumable,
      serverId: options.serverId,
      certVersion: options.certVersion,
      limits: options.limits,
    });
    this.reconnect = options.reconnect ?? true;
    this.heartbeatMs = options.heartbeatMs ?? 10000;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10000;
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? 10000;
    /** `connecting`, `open`, `resuming` or `closed`. */
    this.state = "connecting";
    this.at = 0;
    this.ws = null;
    this.pending = new Map();
    this.inbound = Promise.resolve();
    this.outbound = Promise.resolve();
    this.timer = null;
    this.lastError = null;
    this.ackQueued = false;
    /** The close event's detail, once closed. */
    this.closed = null;
    this.waitOpen();
  }

  /** Writes wait for an open connection (a resume in progress holds them, in order). */
  waitOpen() {
    this.ready = new Promise((resolve) => {
      this.opened = resolve;
    });
  }

  /** The URL of the current connection. */
  get url() {
    return this.urls[this.at];
  }

  /**
   * Logs in (or resumes, with `resume`) over a new connection to `url`: resolves with the
   * handshake's outcome once the reply is in and the connection is the session's. Rejects with
   * a `ProtocolError` when the edge refused (it closed the connection on the hello:
   * `login_refused`, `resume_refused`; PROTOCOL.md §13.3) or the reply failed its checks, with
   * `handshake_timeout` when neither the reply nor a close came in time (the dial included),
   * and with a plain `Error` when the connection could not be made (nothing was decided).
   */
  async handshake(url, resume) {
    const hello = resume ? await this.protocol.resume(nowSecs()) : await this.protocol.login(this.options.token, nowSecs());
    return new Promise((resolve, reject) => {
      let opened = false;
      let settled = false;
      let established = false;
      const ws = new this.WebSocket(url);
      ws.binaryType = "arraybuffer";
      const fail = (error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        ws.close();
        reject(error);
      };
      const timer = setTimeout(() => fail(new ProtocolError("handshake_timeout")), this.handshakeTimeoutMs);
      ws.onopen = () => {
        opened = true;
        ws.send(hello);
      };
      ws.onerror = () => {
        // A browser follows an error with a close; Node 20's WebSocket does not when the dial
        // fails, so a failed dial is decided here too (nothing was decided: try again).
        if (!opened) this.inbound = this.inbound.then(() => fail(new Error(`could not connect to ${url} (WebSocket error)`)));
      };
      // Frames and the close are handled in arrival order, one at a time.
      ws.onmessage = (event) => {
        const frame = typeof event.data === "string" ? null : new Uint8Array(event.data);
        this.inbound = this.inbound.then(async () => {
          if (established ? this.ws !== ws : settled) return;
          try {
            if (frame === null) throw new ProtocolError("text_message");
            const got = await this.protocol.receive(frame);
            if (got.type === "packet") return this.onPacket(got.packet);
            settled = established = true;
            clearTimeout(timer);
            if (this.state === "closed") {
              // Closed by the page while this resume was on its way.
              ws.close();
              return reject(new ProtocolError("closed", "the session has ended"));
            }
            // Open from here on: the resend goes first, before anything newer is sealed.
            this.ws = ws;
            this.state = "open";
            for (const resent of got.resend) ws.send(resent);
            this.opened();
            resolve(got);
          } catch (e) {
            if (established) this.fail(ws, e);
            else fail(e);
          }
        });
      };
      ws.onclose = (event) => {
        this.inbound = this.inbound.then(() => {
          if (established) return this.lost(ws, event);
          if (!opened) return fail(new Error(`could not connect to ${url} (WebSocket closed, code ${event.code})`));
          fail(
            new ProtocolError(
              resume ? "resume_refused" : "login_refused",
              `connection closed (code ${event.code}) before the handshake reply`,
            ),
          );
        });
      };
    });
  }

  onPacket(packet) {
    if (this.protocol.ackDue() && !this.ackQueued) {
      // One acknowledgement at a time: it covers everything received when it is sealed.
      this.ackQueued = true;
      this.write(() => {
        this.ackQueued = false;
        return this.protocol.ack();
      }).catch(() => {
        this.ackQueued = false;
      });
    }
    const waiting = packet.index > 0 && this.pending.get(packet.index);
    if (waiting) {
      this.pending.delete(packet.index);
      waiting.resolve(packet);
      return;
    }
    if (packet.mod === SYSTEM) return this.onSystem(packet);
    if (packet.index === 0) this.dispatchEvent(new CustomEvent("push", { detail: packet }));
  }

  onSystem(packet) {
    switch (packet.seq) {
      case SEQ.HEARTBEAT:
        return;
      case SEQ.UNEXPECTED_ERR: {
        const err = decodeSCServerUnexpectedErr(packet.data);
        if (err.mod === SYSTEM && err.seq === 0) {
          // The reason the session is about to end with (PROTOCOL.md §9).
          this.lastError = err.msg;
          return;
        }
        for (const [index, waiting] of this.pending) {
          if (waiting.mod === err.mod && waiting.seq === err.seq) {
            this.pending.delete(index);
            waiting.reject(new RequestError(err.msg, err.mod, err.seq));
            return;
          }
        }
        this.dispatchEvent(new CustomEvent("error", { detail: err }));
        return;
      }
      case SEQ.LOGOUT: {
        const { code } = decodeSCServerLogout(packet.data);
        this.finish({ reason: this.lastError ?? "logged_out", logout: LOGOUT_CODES[code] ?? String(code) });
        return;
      }
      case SEQ.RECONNECT: {
        // The edge drains: resume elsewhere now (§13.6), without CSBye.
        const { reason } = decodeSCReconnect(packet.data);
        const ws = this.ws;
        this.ws = null;
        ws?.close();
        this.resumeLoop((this.at + 1) % this.urls.length, "reconnect_hint", reason);
        return;
      }
      default:
        return;
    }
  }

  /**
   * Serializes writes: frames go out in the order their counters were taken, on an open
   * connection (a packet sealed for a connection that is gone is kept by a resumable session
   * and sent again after the resume).
   */
  write(make) {
    const done = this.outbound.then(async () => {
      await this.ready;
      this.ensureOpen();
      const sent = await make();
      this.ws?.send(sent.frame);
      return sent;
    });
    this.outbound = done.catch(() => {});
    return done;
  }

  /**
   * Sends a request and waits for its reply (the packet echoing its index). Rejects with a
   * `RequestError` when the gateway answers `SCServerUnexpectedErr` for it, or after
   * `timeoutMs` (default `requestTimeoutMs`, 10 s).
   */
  request(mod, seq, data = new Uint8Array(0), { obj = 0, timeoutMs } = {}) {
    return new Promise((resolve, reject) => {
      this.ensureOpen();
      this.write(async () => {
        const sent = await this.protocol.send({ mod, seq, obj, data });
        if (this.state === "closed") {
          reject(new RequestError(this.closed.reason, mod, seq));
          return sent;
        }
        const timer = setTimeout(() => {
          if (this.pending.delete(sent.index)) reject(new RequestError("timeout", mod, seq));
        }, timeoutMs ?? this.requestTimeoutMs);
        this.pending.set(sent.index, {
          mod,
          seq,
          resolve: (p) => {
            clearTimeout(timer);
            resolve(p);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        });
        return sent;
      }).catch(reject);
    });
  }

  /** Sends a packet no reply is expected for; resolves with its index once written. */
  async send(mod, seq, data = new Uint8Array(0), { obj = 0 } = {}) {
    this.ensureOpen();
    return (await this.write(() => this.protocol.send({ mod, seq, obj, data }))).index;
  }

  ensureOpen() {
    if (this.state === "closed") throw new ProtocolError("closed", "the session has ended");
  }

  /** Leaves on purpose: `CSBye`, then the connection closes (PROTOCOL.md §13.2). */
  async close() {
    if (this.state === "closed") return;
    if (this.state === "open") {
      try {
        await this.write(() => this.protocol.bye());
      } catch {
        // Gone already: nothing to say goodbye on.
      }
    }
    this.finish({ reason: "client_closed" });
  }

  startHeartbeats() {
    clearInterval(this.timer);
    this.timer = setInterval(() => {
      if (this.state === "open") this.write(() => this.protocol.heartbeat(nowSecs())).catch(() => {});
    }, this.heartbeatMs);
  }

  fail(ws, error) {
    if (this.ws !== ws) return;
    this.finish({ reason: error.reason ?? "error", message: error.message });
  }

  /** The connection went without a logout: resume if the session can, else it has ended. */
  lost(ws, event) {
    if (this.ws !== ws || this.state !== "open") return;
    this.ws = null;
    this.resumeLoop(this.at, `connection closed (code ${event.code})`);
  }

  /**
   * Resumes at `urls[first]`, then each in turn, with backoff (PROTOCOL.md §13.6), until the
   * session's window has passed; a refused resume ends the session at once (log in again).
   */
  async resumeLoop(first, cause, reason) {
    if (!this.protocol.ticket || !this.reconnect) {
      this.finish({ reason: this.lastError ?? "connection_lost", message: cause });
      return;
    }
    this.state = "resuming";
    this.waitOpen();
    const deadline = Date.now() + this.protocol.resumeWindow * 1000;
    for (let attempt = 0; this.state === "resuming"; attempt++) {
      const at = (first + attempt) % this.urls.length;
      const detail = { attempt, url: this.urls[at], cause, ...(reason ? { reason } : {}) };
      this.dispatchEvent(new CustomEvent("reconnecting", { detail }));
      try {
        const event = await this.handshake(this.urls[at], true);
        if (this.state === "closed") return;
        this.at = at;
        this.dispatchEvent(new CustomEvent("resumed", { detail: { url: this.urls[at], startIndex: event.startIndex } }));
        return;
      } catch (e) {
        // A dial failure or a timeout decided nothing: try again. Anything else did (a resume
        // refused on its hello: the session is gone, §13.3; a reply that fails its checks).
        if (this.state === "closed") return;
        const retry = !(e instanceof ProtocolError) || e.reason === "handshake_timeout";
        const wait = backoff(attempt);
        if (!retry || Date.now() + wait > deadline) {
          this.finish({ reason: retry ? "resume_expired" : e.reason, message: e.message });
          return;
        }
        await sleep(wait);
      }
    }
  }

  finish(detail) {
    if (this.state === "closed") return;
    this.state = "closed";
    this.closed = detail;
    this.opened();
    clearInterval(this.timer);
    const ws = this.ws;
    this.ws = null;
    ws?.close();
    for (const [, waiting] of this.pending) waiting.reject(new RequestError(detail.reason, waiting.mod, waiting.seq));
    this.pending.clear();
    this.dispatchEvent(new CustomEvent("close", { detail }));
  }
}

/**
 * Connects and logs in. `options`: `url` (or `urls`, tried in turn by resumes), `token`,
 * `serverKey` (SPKI PEM string or 32 raw bytes), `resumable`, and optionally `mode` (`"v2"`,
 * `"legacy"` for go-pantheon v1), `serverId`, `certVersion`, `reconnect` (default true: resume by
 * itself), `heartbeatMs` (10000), `requestTimeoutMs` (10000), `handshakeTimeoutMs` (10000),
 * `limits`, `WebSocket` (a constructor, where there is no global one).
 */
export async function connect(options) {
  const session = new Session(options);
  await session.handshake(session.url, false);
  session.startHeartbeats();
  return session;
}
