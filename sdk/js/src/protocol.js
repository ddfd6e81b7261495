// The client end of a Janus session, sans-IO: frames and time in, frames and events out. It
// owns the handshake (v2, legacy, and the resume of PROTOCOL.md §13.3), frame protection (§4),
// the index rule (§5), compression (§8), and what a resumable client keeps across connections
// (the ticket, the server-packet count, its unanswered packets; §13.2). The WebSocket driver
// (janus.js) only moves bytes; this module is tested without sockets against the vectors.
//
// Async only because WebCrypto is: nothing here waits on anything but crypto.subtle and the
// compression streams.

import * as crypto from "./crypto.js";
import * as proto from "./proto.js";

/** System module and its messages (PROTOCOL.md §7). */
export const SYSTEM = 1;
export const SEQ = Object.freeze({
  HANDSHAKE: 1,
  HEARTBEAT: 2,
  UNEXPECTED_ERR: 3,
  LOGOUT: 4,
  RESUME_ACK: 5,
  BYE: 6,
  RECONNECT: 7,
});

/** The first request index of a login (PROTOCOL.md §5). */
export const START_INDEX = 1;
/** Client packets kept until a counted server packet echoes them (PROTOCOL.md §13.2). */
export const MAX_UNACKED = 256;
/** A resumable client acknowledges after this many server packets (PROTOCOL.md §13.2). */
export const ACK_EVERY = 32;

/** Limits a client applies to what it receives and sends (PROTOCOL.md §10). */
export const DEFAULT_LIMITS = Object.freeze({
  maxFrame: 16384,
  inflateCap: 1 << 20,
  compressThreshold: 10240,
});

/**
 * Why a session ended on the client side, with the close reason of PROTOCOL.md §9 where there
 * is one (`bad_server_signature`, `decrypt_failed`, `inflate_too_large`, …).
 */
export class ProtocolError extends Error {
  constructor(reason, detail) {
    super(detail ? `${reason}: ${detail}` : reason);
    this.name = "ProtocolError";
    this.reason = reason;
  }
}

/**
 * Whether `packet` is counted and kept by the server (PROTOCOL.md §13.2): every one but
 * heartbeat replies and reconnect hints, which the edge answers or sends itself (§13.6).
 */
export function isCounted(packet) {
  return !(packet.mod === SYSTEM && (packet.seq === SEQ.HEARTBEAT || packet.seq === SEQ.RECONNECT));
}

/**
 * The wait after failed resume attempt `attempt` (0 for the first; PROTOCOL.md §13.6): 100 ms
 * doubling up to 2 s, drawn between half of it and all of it (jitter; `random` returns [0, 1)).
 */
export function backoff(attempt, random = Math.random) {
  const full = Math.min(2000, 100 * 2 ** attempt);
  return full / 2 + random() * (full / 2);
}

/** Checks a frame's length header (PROTOCOL.md §1); returns the frame. */
export function checkFrame(frame, maxFrame = DEFAULT_LIMITS.maxFrame) {
  if (frame.length < 4) throw new ProtocolError("message_framing", "shorter than a frame header");
  const len = new DataView(frame.buffer, frame.byteOffset, 4).getUint32(0);
  if (len === 0) throw new ProtocolError("empty_frame");
  if (len > maxFrame) throw new ProtocolError("frame_too_large", `${len} > ${maxFrame}`);
  if (frame.length !== 4 + len) throw new ProtocolError("message_framing", "not exactly one frame");
  return frame;
}

async function pump(stream, bytes, cap) {
  const writer = stream.writable.getWriter();
  writer.write(bytes).catch(() => {});
  writer.close().catch(() => {});
  const reader = stream.readable.getReader();
  const chunks = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (cap !== undefined && total > cap) {
      reader.cancel().catch(() => {});
      throw new ProtocolError("inflate_too_large", `over ${cap} bytes`);
    }
    chunks.push(value);
  }
  return crypto.concat(...chunks);
}

/** zlib (RFC 1950) of `data` (PROTOCOL.md §8). */
export function deflate(data) {
  return pump(new CompressionStream("deflate"), data);
}

/** `data` inflated, at most `cap` bytes (PROTOCOL.md §8). */
export async function inflate(data, cap) {
  try {
    return await pump(new DecompressionStream("deflate"), data, cap);
  } catch (e) {
    if (e instanceof ProtocolError) throw e;
    throw new ProtocolError("inflate_corrupt", e.message);
  }
}

/**
 * One client session, over as many connections as its resumes take.
 *
 * `options`: `serverKey` (SPKI PEM or 32 raw bytes), `mode` (`"v2"`, the default; `"legacy"`
 * for go-pantheon v1), `resumable`, `serverId`, `certVersion`, `limits`. One `send` at a time:
 * frames must go out in the order their counters were taken (the driver serializes).
 */
export class ClientSession {
  constructor(options = {}) {
    crypto.ensureWebCrypto();
    this.mode = options.mode ?? "v2";
    if (!["v2", "legacy"].includes(this.mode)) throw new TypeError(`mode: ${this.mode}`);
    if (!options.serverKey) throw new TypeError("serverKey is required");
    if (options.resumable && this.mode !== "v2") throw new TypeError("resume needs mode v2");
    this.serverKey = options.serverKey;
    this.resumable = Boolean(options.resumable);
    this.serverId = options.serverId ?? 0;
    this.certVersion = options.certVersion ?? 0;
    this.limits = { ...DEFAULT_LIMITS, ...(options.limits ?? {}) };
    this.nextIndex = START_INDEX;
    /** The ticket and resume key, once a reply brought them. */
    this.ticket = null;
    this.resumeKey = null;
    this.resumeWindow = 0;
    /** Server packets received, over every connection (PROTOCOL.md §13.2). */
    this.received = 0;
    this.acked = 0;
    /** Packets sent and not yet echoed by a counted server packet, oldest first. */
    this.unacked = [];
    this.state = "idle";
    this.pending = null;
    this.send_ = null;
    this.open_ = null;
  }

  async verifyKey() {
    this.verifyKey_ ??= await crypto.serverVerifyKey(this.serverKey);
    return this.verifyKey_;
  }

  /**
   * The hello of a login with `token` at `now` (unix seconds): the frame to send first.
   * `secret` fixes the ephemeral X25519 secret (tests only).
   */
  async login(token, now, secret) {
    const keys = await crypto.ephemeral(secret);
    const hello = {
      pub: keys.pub,
      token,
      serverId: this.serverId,
      timestamp: now,
      certVersion: this.certVersion,
      version: this.mode === "legacy" ? 0 : 2,
      resumable: this.resumable,
    };
    this.pending = { keys, bound: token, hello, resuming: false };
    this.state = "handshaking";
    return this.helloFrame(hello);
  }

  /** The hello of a resume over a new connection at `now` (PROTOCOL.md §13.3). */
  async resume(now, secret) {
    if (!this.ticket) throw new ProtocolError("resume_unknown", "no ticket");
    const keys = await crypto.ephemeral(secret);
    const proof = await crypto.resumeProof(this.resumeKey, this.ticket, keys.pub, now, this.received);
    const hello = {
      pub: keys.pub,
      timestamp: now,
      certVersion: this.certVersion,
      version: 2,
      resumable: true,
      resumeTicket: this.ticket,
      resumeReceived: this.received,
      resumeProof: proof,
    };
    this.pending = { keys, bound: crypto.toHex(this.ticket), hello, resuming: true };
    this.state = "handshaking";
    return this.helloFrame(hello);
  }

  helloFrame(hello) {
    const packet = proto.encodePacket({ mod: SYSTEM, seq: SEQ.HANDSHAKE, data: proto.encodeCSHandshake(hello) });
    return crypto.concat(crypto.be32(packet.length), packet);
  }

  /**
   * Handles one whole frame from the server. Returns `{ type: "established", startIndex,
   * serverTime, resumed, resend }` for the handshake reply (`resend`: frames to send at once,
   * the packets a resume sends again), then `{ type: "packet", packet }` for each packet, its
   * data inflated.
   */
  async receive(frame) {
    checkFrame(frame, this.limits.maxFrame);
    if (this.state === "open") {
      let bytes;
      try {
        bytes = await this.open_.open(frame);
      } catch (e) {
        this.state = "failed";
        throw e instanceof crypto.DecryptError ? new ProtocolError("decrypt_failed") : e;
      }
      const packet = this.decode(bytes);
      if (packet.compress) {
        packet.data = await inflate(packet.data, this.limits.inflateCap);
        packet.compress = false;
      }
      if (isCounted(packet)) {
        this.received += 1;
        if (packet.index > 0) {
          while (this.unacked.length && this.unacked[0].index <= packet.index) this.unacked.shift();
        }
      }
      return { type: "packet", packet };
    }
    if (this.state !== "handshaking") throw new ProtocolError("not_handshake", `frame while ${this.state}`);
    return this.finish(this.decode(frame.subarray(4)));
  }

  decode(bytes) {
    try {
      return proto.decodePacket(bytes);
    } catch (e) {
      throw new ProtocolError("malformed_packet", e.message);
    }
  }

  async finish(packet) {
    const { keys, bound, resuming } = this.pending;
    this.state = "failed";
    if (packet.mod !== SYSTEM || packet.seq !== SEQ.HANDSHAKE) throw new ProtocolError("not_handshake");
    let reply;
    try {
      reply = proto.decodeSCHandshake(packet.data);
    } catch (e) {
      throw new ProtocolError("malformed_packet", e.message);
    }
    if (reply.pub.length !== 32) throw new ProtocolError("bad_public_key", "server key is not 32 bytes");
    const shared = await crypto.x25519(keys.privateKey, reply.pub);
    if (!shared) throw new ProtocolError("zero_shared_secret");
    const key = await this.verifyKey();
    if (this.mode === "legacy") {
      if (!(await crypto.verify(key, reply.sign, reply.pub))) throw new ProtocolError("bad_server_signature");
      this.send_ = await crypto.LegacyDirection.create(shared);
      this.open_ = await crypto.LegacyDirection.create(shared);
    } else {
      const th = await crypto.transcript(keys.pub, reply.pub, reply.timestamp, bound);
      const bindsReply = reply.resumeTicket.length > 0 || reply.resumed;
      const signed = bindsReply ? await crypto.replyHash(th, reply) : th;
      if (!(await crypto.verify(key, reply.sign, signed))) throw new ProtocolError("bad_server_signature");
      const k = await crypto.sessionKeys(signed, shared);
      this.send_ = await crypto.V2Direction.create(k.c2sKey, k.c2sIv);
      this.open_ = await crypto.V2Direction.create(k.s2cKey, k.s2cIv);
      if (reply.resumeTicket.length > 0) {
        this.ticket = reply.resumeTicket;
        this.resumeKey = await crypto.resumeKey(th, shared);
        this.resumeWindow = reply.resumeWindow;
      } else if (!resuming) {
        this.ticket = null;
      }
    }
    if (resuming && !reply.resumed) throw new ProtocolError("resume_unknown", "the server started a new session");
    this.state = "open";
    this.pending = null;
    const resend = [];
    if (reply.resumed) {
      // What the edge never got is sent again, in order, with its original index (§13.3).
      this.unacked = this.unacked.filter((p) => p.index >= reply.startIndex);
      const first = this.unacked[0]?.index ?? this.nextIndex;
      if (first !== reply.startIndex) {
        throw new ProtocolError(
          "resume_gap",
          `the server expects index ${reply.startIndex}, this client kept from ${first}`,
        );
      }
      for (const p of this.unacked) resend.push(await this.seal(p));
    } else {
      this.nextIndex = reply.startIndex || START_INDEX;
      this.received = 0;
      this.acked = 0;
      this.unacked = [];
    }
    return {
      type: "established",
      startIndex: reply.startIndex,
      serverTime: reply.timestamp,
      resumed: reply.resumed,
      resend,
    };
  }

  /**
   * The frame for `packet` (`{ mod, seq, obj, data }`) with the next index (PROTOCOL.md §5),
   * its data compressed at or over the threshold. Returns `{ index, frame }`.
   */
  async send(packet) {
    if (this.state !== "open") throw new ProtocolError("not_open", `session is ${this.state}`);
    const out = { obj: 0, data: new Uint8Array(0), ...packet, index: this.nextIndex };
    if (!out.compress && out.data.length >= this.limits.compressThreshold) {
      out.data = await deflate(out.data);
      out.compress = true;
    }
    // Too large is refused before it takes an index or a nonce: the session goes on.
    const bytes = this.checkSize(out);
    this.nextIndex = (this.nextIndex + 1) | 0;
    if (this.ticket) {
      if (this.unacked.length === MAX_UNACKED) this.unacked.shift();
      this.unacked.push(out);
    }
    return { index: out.index, frame: await this.send_.seal(bytes) };
  }

  /** `packet`'s bytes, if its frame fits `maxFrame` (PROTOCOL.md §1, §4). */
  checkSize(packet) {
    const bytes = proto.encodePacket(packet);
    const sealed = bytes.length + (this.mode === "legacy" ? 12 + 16 : 16);
    if (sealed > this.limits.maxFrame) {
      throw new ProtocolError("frame_too_large", `${sealed} > ${this.limits.maxFrame} bytes`);
    }
    return bytes;
  }

  async seal(packet) {
    return this.send_.seal(this.checkSize(packet));
  }

  /** Whether the next write should carry an acknowledgement ([`ClientSession.ack`]). */
  ackDue() {
    return this.ticket !== null && this.received - this.acked >= ACK_EVERY;
  }

  /** A `CSResumeAck` for everything received so far (PROTOCOL.md §13.2). */
  async ack() {
    const received = this.received;
    const sent = await this.send({ mod: SYSTEM, seq: SEQ.RESUME_ACK, data: proto.encodeCSResumeAck(received) });
    this.acked = received;
    return sent;
  }

  /** A heartbeat request at `now` (unix seconds). */
  heartbeat(now) {
    return this.send({ mod: SYSTEM, seq: SEQ.HEARTBEAT, data: proto.encodeCSHeartbeat(now) });
  }

  /** `CSBye`: the client leaves on purpose (PROTOCOL.md §13.2). */
  bye() {
    return this.send({ mod: SYSTEM, seq: SEQ.BYE, data: new Uint8Array(0) });
  }
}
