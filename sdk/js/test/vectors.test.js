// The SDK against the protocol's test vectors (PROTOCOL.md §11), byte for byte: every hello,
// reply, key, ticket, proof and frame of a v2 login, a resumable login and its resume, and the
// legacy frames.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import * as crypto from "../src/crypto.js";
import { ClientSession, ProtocolError } from "../src/protocol.js";

const vectors = JSON.parse(
  readFileSync(new URL("../../../shared/protocol/tests/vectors/handshake.json", import.meta.url), "utf8"),
);
const hex = crypto.fromHex;
const { inputs } = vectors;
const serverKey = hex(inputs.server_public_key);
const text = (s) => new TextEncoder().encode(s);

/** A packet as the vectors write it, as the SDK sends it. */
const packetOf = (p) => ({ mod: p.mod, seq: p.seq, obj: p.obj, data: hex(p.data) });

function assertPacket(got, want) {
  assert.equal(got.mod, want.mod);
  assert.equal(got.seq, want.seq);
  assert.equal(got.obj, want.obj);
  assert.equal(got.index, want.index);
  assert.equal(crypto.toHex(got.data), want.data);
}

/** The SPKI PEM of a raw Ed25519 public key (what `janus keygen` writes beside the key). */
function spkiPem(raw) {
  const der = crypto.concat(hex("302a300506032b6570032100"), raw);
  return `-----BEGIN PUBLIC KEY-----\n${btoa(String.fromCharCode(...der))}\n-----END PUBLIC KEY-----\n`;
}

async function v2Login(options = {}) {
  const v2 = vectors.v2;
  const session = new ClientSession({ serverKey, certVersion: inputs.cert_version, ...options });
  const hello = await session.login(inputs.token, inputs.client_timestamp, hex(v2.client_ephemeral_secret));
  return { session, hello };
}

test("a v2 login reproduces the hello, checks the reply and seals and opens the first frames", async () => {
  const v2 = vectors.v2;
  for (const key of [serverKey, spkiPem(serverKey)]) {
    const { session, hello } = await v2Login({ serverKey: key });
    assert.equal(crypto.toHex(hello), v2.client_hello_frame);
    const established = await session.receive(hex(v2.server_reply_frame));
    assert.deepEqual(established, {
      type: "established",
      startIndex: inputs.start_index,
      serverTime: inputs.server_timestamp,
      resumed: false,
      resend: [],
    });
    assert.equal(session.ticket, null, "no ticket asked for");
    const [c2s, s2c] = v2.frames;
    const sent = await session.send(packetOf(c2s.packet));
    assert.equal(sent.index, 1);
    assert.equal(crypto.toHex(sent.frame), c2s.frame);
    const { packet } = await session.receive(hex(s2c.frame));
    assertPacket(packet, s2c.packet);
    assert.equal(session.received, 1);
  }
});

test("the key schedule gives the vectors' transcript, keys and IVs", async () => {
  const v2 = vectors.v2;
  const client = await crypto.ephemeral(hex(v2.client_ephemeral_secret));
  assert.equal(crypto.toHex(client.pub), v2.client_public);
  const shared = await crypto.x25519(client.privateKey, hex(v2.server_public));
  assert.equal(crypto.toHex(shared), v2.shared_secret);
  const th = await crypto.transcript(client.pub, hex(v2.server_public), inputs.server_timestamp, inputs.token);
  assert.equal(crypto.toHex(th), v2.transcript_hash);
  const keys = await crypto.sessionKeys(th, shared);
  assert.equal(crypto.toHex(keys.c2sKey), v2.c2s.key);
  assert.equal(crypto.toHex(keys.c2sIv), v2.c2s.iv);
  assert.equal(crypto.toHex(keys.s2cKey), v2.s2c.key);
  assert.equal(crypto.toHex(keys.s2cIv), v2.s2c.iv);
});

test("a resumable login gets the ticket and resume key, acknowledges and keeps what is unanswered", async () => {
  const rl = vectors.resumable_login;
  const { session, hello } = await v2Login({ resumable: true });
  assert.equal(crypto.toHex(hello), rl.client_hello_frame);
  await session.receive(hex(rl.server_reply_frame));
  assert.equal(crypto.toHex(session.ticket), rl.ticket);
  assert.equal(crypto.toHex(session.resumeKey), rl.resume_key);
  assert.equal(session.resumeWindow, rl.window_secs);
  const [request, reply, ack, lost] = rl.frames;
  assert.equal(crypto.toHex((await session.send(packetOf(request.packet))).frame), request.frame);
  assertPacket((await session.receive(hex(reply.frame))).packet, reply.packet);
  const acked = await session.ack();
  assert.equal(acked.index, 2, "an acknowledgement takes the next index");
  assert.equal(crypto.toHex(acked.frame), ack.frame);
  assert.equal(crypto.toHex((await session.send(packetOf(lost.packet))).frame), lost.frame);
  assert.deepEqual(
    session.unacked.map((p) => p.index),
    [2, 3],
    "the reply to 1 showed the edge has it; 2 and 3 are kept",
  );
  return session;
});

test("the resume reproduces the proof and hello, replays, sends request 3 again and says bye", async () => {
  const rl = vectors.resumable_login;
  const r = vectors.resume;
  const { session } = await v2Login({ resumable: true });
  await session.receive(hex(rl.server_reply_frame));
  await session.send(packetOf(rl.frames[0].packet));
  await session.receive(hex(rl.frames[1].frame));
  await session.ack();
  await session.send(packetOf(rl.frames[3].packet));
  // The connection is gone; a new one.
  const hello = await session.resume(r.client_timestamp, hex(r.client_ephemeral_secret));
  assert.equal(session.received, r.received);
  assert.equal(crypto.toHex(hello), r.client_hello_frame);
  const established = await session.receive(hex(r.server_reply_frame));
  assert.equal(established.resumed, true);
  assert.equal(established.startIndex, r.start_index);
  assert.equal(crypto.toHex(session.ticket), r.next_ticket);
  assert.equal(crypto.toHex(session.resumeKey), r.next_resume_key);
  const [replayed1, replayed2, resent, bye] = r.frames;
  assert.deepEqual(
    established.resend.map(crypto.toHex),
    [resent.frame],
    "request 3 again, its index kept; the acknowledgement (2) the edge had",
  );
  assertPacket((await session.receive(hex(replayed1.frame))).packet, replayed1.packet);
  assertPacket((await session.receive(hex(replayed2.frame))).packet, replayed2.packet);
  assert.equal(session.received, 3);
  const left = await session.bye();
  assert.equal(left.index, 4);
  assert.equal(crypto.toHex(left.frame), bye.frame);
});

test("legacy: the hello, the reply's signature over the server key, frames under the raw secret", async () => {
  const legacy = vectors.legacy;
  const session = new ClientSession({ serverKey, mode: "legacy", certVersion: inputs.cert_version });
  const hello = await session.login(inputs.token, inputs.client_timestamp, hex(vectors.v2.client_ephemeral_secret));
  assert.equal(crypto.toHex(hello), legacy.client_hello_frame);
  await session.receive(hex(legacy.server_reply_frame));
  const [c2s, s2c] = legacy.frames;
  // Random nonces travel on the wire; the vectors fix them.
  const sealer = await crypto.LegacyDirection.create(hex(legacy.key), () => hex(c2s.nonce));
  const packet = { ...packetOf(c2s.packet), index: c2s.packet.index };
  const { encodePacket } = await import("../src/proto.js");
  assert.equal(crypto.toHex(await sealer.seal(encodePacket(packet))), c2s.frame);
  assertPacket((await session.receive(hex(s2c.frame))).packet, s2c.packet);
});

test("a reply whose signature, key or frames were changed on the path ends the session with its reason", async () => {
  const v2 = vectors.v2;
  const rl = vectors.resumable_login;
  const reasons = [];
  const attempt = async (reply, options) => {
    const { session } = await v2Login(options);
    try {
      await session.receive(reply);
      return session;
    } catch (e) {
      assert.ok(e instanceof ProtocolError, e);
      reasons.push(e.reason);
      return null;
    }
  };
  // A byte of the signature flipped.
  const signed = hex(v2.server_reply_frame);
  const at = crypto.toHex(signed).indexOf(v2.server_signature) / 2;
  signed[at] ^= 1;
  assert.equal(await attempt(signed), null);
  // Another server key.
  assert.equal(await attempt(hex(v2.server_reply_frame), { serverKey: new Uint8Array(32).fill(7) }), null);
  // A ticket stripped from a resumable reply is not the signed reply.
  const { decodePacket, decodeSCHandshake, encodePacket } = await import("../src/proto.js");
  const packet = decodePacket(hex(rl.server_reply_frame).subarray(4));
  const reply = decodeSCHandshake(packet.data);
  const stripped = await reencode(reply, { resumeTicket: new Uint8Array(0), resumeWindow: 0 }, packet);
  assert.equal(await attempt(stripped, { resumable: true }), null);
  // A reply that is not protobuf, and a frame of length 0.
  assert.equal(await attempt(crypto.concat(crypto.be32(2), Uint8Array.of(0xff, 0xff))), null);
  assert.equal(await attempt(crypto.be32(0)), null);
  assert.deepEqual(reasons, [
    "bad_server_signature",
    "bad_server_signature",
    "bad_server_signature",
    "malformed_packet",
    "empty_frame",
  ]);
  // After the handshake: a frame changed on the path.
  const session = await attempt(hex(v2.server_reply_frame));
  const frame = hex(v2.frames[1].frame);
  frame[frame.length - 1] ^= 1;
  await assert.rejects(session.receive(frame), (e) => e.reason === "decrypt_failed");

  async function reencode(fields, changes, packet) {
    // SCHandshake written back with `changes`, in field order (proto3).
    const r = { ...fields, ...changes };
    const parts = [];
    const put = (n, bytes) => bytes.length && parts.push(Uint8Array.of((n << 3) | 2, bytes.length), bytes);
    const varint = (n, v) => {
      if (!v) return;
      const out = [(n << 3) | 0];
      let x = BigInt(v);
      do {
        let b = Number(x & 0x7fn);
        x >>= 7n;
        if (x) b |= 0x80;
        out.push(b);
      } while (x);
      parts.push(Uint8Array.from(out));
    };
    put(1, r.pub);
    put(2, r.sign);
    varint(3, r.timestamp);
    varint(4, r.certVersion);
    varint(5, r.startIndex);
    put(6, r.resumeTicket);
    varint(7, r.resumeWindow);
    varint(8, r.resumed ? 1 : 0);
    const bytes = encodePacket({ ...packet, data: crypto.concat(...parts) });
    return crypto.concat(crypto.be32(bytes.length), bytes);
  }
});

test("compressed data is inflated under the cap; over it, or not zlib, ends the session", async () => {
  const { deflate, inflate } = await import("../src/protocol.js");
  const big = text("janus ".repeat(4000));
  const z = await deflate(big);
  assert.ok(z.length < big.length / 10);
  assert.deepEqual(await inflate(z, big.length), big);
  await assert.rejects(inflate(z, big.length - 1), (e) => e.reason === "inflate_too_large");
  await assert.rejects(inflate(text("not zlib at all"), 1 << 20), (e) => e.reason === "inflate_corrupt");
});

test("heartbeat replies and reconnect hints are not counted; everything else is", async () => {
  const rl = vectors.resumable_login;
  const { session } = await v2Login({ resumable: true });
  await session.receive(hex(rl.server_reply_frame));
  // The server's side of this connection, from the vectors' keys.
  const server = await crypto.V2Direction.create(hex(rl.s2c.key), hex(rl.s2c.iv));
  const { encodePacket } = await import("../src/proto.js");
  const from = async (packet) => session.receive(await server.seal(encodePacket(packet)));
  await from({ mod: 1, seq: 2, index: 1 }); // SCHeartbeat
  await from({ mod: 1, seq: 7, data: text("\n\x04edge") }); // SCReconnect
  assert.equal(session.received, 0);
  await from({ mod: 1, seq: 3, data: new Uint8Array(0) }); // SCServerUnexpectedErr: counted
  await from({ mod: 9, seq: 1, data: text("push") });
  assert.equal(session.received, 2);
});

test("a packet too large for a frame is refused without taking an index or a nonce", async () => {
  const v2 = vectors.v2;
  const { session } = await v2Login({ limits: { maxFrame: 120 } });
  await session.receive(hex(v2.server_reply_frame));
  await assert.rejects(
    session.send({ mod: 3, seq: 7, obj: 10001, data: new Uint8Array(200).fill(1) }),
    (e) => e.reason === "frame_too_large",
  );
  const sent = await session.send(packetOf(v2.frames[0].packet));
  assert.equal(sent.index, 1);
  assert.equal(crypto.toHex(sent.frame), v2.frames[0].frame, "counter 0 still");
});
