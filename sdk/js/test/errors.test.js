// The SDK's error paths against a real `janus standalone`: what the server sends is held,
// dropped, rewritten or joined by injected messages (helpers.js's tapped WebSocket), so every
// way a session or a request can fail is reached with the real server on the other end. Each
// failure must end the session (or the request) with its stable reason (PROTOCOL.md §9), never
// hang and never end it silently. Also: heartbeats keep a session past the edge's idle timeout,
// outgoing data is compressed, and the resume backoff's bounds.

import assert from "node:assert/strict";
import { createServer } from "node:net";
import { after, before, test } from "node:test";

import { be32, concat } from "../src/crypto.js";
import { connect, RequestError } from "../src/janus.js";
import { decodePacket, encodePacket } from "../src/proto.js";
import { backoff } from "../src/protocol.js";
import { events, str, tapped, text, until } from "./helpers.js";
import { startStandalone } from "./standalone.js";

/** Demo game (broker/demo/src/lib.rs): module 2 echoes. */
const ECHO = 2;

let gateway;
before(async () => {
  if (typeof WebSocket === "undefined") throw new Error("no WebSocket: run node with --experimental-websocket");
  gateway = await startStandalone();
});
after(() => gateway?.stop());

let nextUid = 2000;
function login(options = {}, on = gateway) {
  return connect({ url: on.url, token: on.token(nextUid++), serverKey: on.serverKey, ...options });
}

/** A frame: the length header and `body`. */
const frame = (body) => concat(be32(body.length), body).buffer;

test("the resume backoff starts at 50-100 ms, doubles, stays within 1-2 s and is jittered", () => {
  assert.deepEqual([backoff(0, () => 0), backoff(0, () => 0.999999)].map(Math.round), [50, 100]);
  assert.deepEqual([1, 2, 3].map((n) => backoff(n, () => 0)), [100, 200, 400]);
  assert.deepEqual([5, 9, 40].map((n) => backoff(n, () => 0)), [1000, 1000, 1000]);
  assert.ok(backoff(40, () => 0.999999) <= 2000);
  const draws = Array.from({ length: 200 }, () => backoff(3));
  assert.ok(draws.every((w) => w >= 400 && w < 800), "within half of 800 ms and all of it");
  assert.ok(new Set(draws).size > 100, "drawn, not fixed");
});

test("a request without a reply in time fails with timeout; its late reply is dropped", async () => {
  const held = [];
  const WebSocket = tapped({ inbound: (data, n) => (n === 1 ? (held.push(data), "drop") : undefined) });
  const session = await login({ WebSocket });
  await assert.rejects(
    session.request(ECHO, 1, text("slow"), { timeoutMs: 300 }),
    (e) => e instanceof RequestError && e.reason === "timeout" && e.mod === ECHO,
  );
  assert.equal(held.length, 1, "the reply was held back");
  WebSocket.last.inject(held[0]); // it arrives after all: nobody waits for it any more
  assert.equal(str((await session.request(ECHO, 1, text("next"))).data), "next");
  await session.close();
});

test("a handshake reply that never comes fails the login with handshake_timeout", async () => {
  const WebSocket = tapped({ inbound: (_, n) => (n === 0 ? "drop" : undefined) });
  await assert.rejects(login({ WebSocket, handshakeTimeoutMs: 300 }), (e) => e.reason === "handshake_timeout");
});

test("a handshake reply that is not one fails the login with its reason", async () => {
  /** Rewrites the reply's `SCHandshake` (pub is field 1, written first: 0x0a 0x20 + 32 bytes). */
  const handshake = (rewrite) => (data, n) => {
    if (n !== 0) return undefined;
    const packet = decodePacket(new Uint8Array(data).subarray(4));
    assert.deepEqual([...packet.data.subarray(0, 2)], [0x0a, 0x20]);
    return frame(encodePacket({ ...packet, data: rewrite(packet.data) }));
  };
  const cases = [
    ["not_handshake", () => frame(encodePacket({ mod: ECHO, seq: 1, data: text("hi") }))],
    ["malformed_packet", () => frame(new Uint8Array([0xff, 0xff, 0xff]))],
    ["message_framing", () => new Uint8Array([0, 0]).buffer],
    ["bad_public_key", handshake((d) => concat(new Uint8Array([0x0a, 31]), d.subarray(2, 33), d.subarray(34)))],
    ["zero_shared_secret", handshake((d) => concat(d.subarray(0, 2), new Uint8Array(32), d.subarray(34)))],
    // sign is field 2, right after pub: 0x12 0x40 and 64 bytes.
    ["bad_server_signature", handshake((d) => concat(d.subarray(0, 36), new Uint8Array([d[36] ^ 1]), d.subarray(37)))],
  ];
  for (const [reason, rewrite] of cases) {
    const WebSocket = tapped({ inbound: (data, n) => (n === 0 ? rewrite(data, n) : undefined) });
    await assert.rejects(login({ WebSocket }), (e) => {
      assert.equal(e.reason, reason, `${reason}: ${e}`);
      return true;
    });
  }
});

test("a bad message from the server ends an open session with its reason, and requests fail", async () => {
  const cases = [
    ["text_message", "a text message"],
    ["message_framing", new Uint8Array([0, 0]).buffer],
    ["empty_frame", be32(0).buffer],
    ["frame_too_large", frame(new Uint8Array(20000))],
    ["message_framing", concat(be32(10), new Uint8Array(3)).buffer],
    ["decrypt_failed", frame(new Uint8Array(40))],
  ];
  for (const [reason, message] of cases) {
    // The request's reply is held back, so the request is still waiting when the message comes.
    let sent = 0;
    const WebSocket = tapped({ inbound: (_, n) => (n === 1 ? "drop" : undefined), outbound: () => sent++ });
    const session = await login({ WebSocket });
    const closed = events(session, "close", 1);
    const before = sent;
    const waiting = session.request(ECHO, 1, text("in flight"), { timeoutMs: 5000 });
    await until(() => sent > before, "the request sent");
    WebSocket.last.inject(message);
    const [detail] = await closed;
    assert.equal(detail.reason, reason, JSON.stringify(detail));
    await assert.rejects(waiting, (e) => e instanceof RequestError && e.reason === reason);
    await assert.rejects(session.request(ECHO, 1, text("after")), /closed/);
    assert.equal(session.state, "closed");
  }
});

test("data inflating past the cap ends the session with inflate_too_large", async () => {
  // The server compresses replies of 10240 bytes and more (PROTOCOL.md §8).
  const session = await login({ limits: { inflateCap: 4096 } });
  const closed = events(session, "close", 1);
  await assert.rejects(
    session.request(ECHO, 1, text("z".repeat(12000))),
    (e) => e instanceof RequestError && e.reason === "inflate_too_large",
  );
  assert.equal((await closed)[0].reason, "inflate_too_large");
});

test("large outgoing data is compressed, and the reply inflated", async () => {
  const sizes = [];
  const WebSocket = tapped({ outbound: (data) => sizes.push(data.byteLength) });
  const session = await login({ WebSocket });
  const big = "x".repeat(12000);
  sizes.length = 0;
  assert.equal(str((await session.request(ECHO, 1, text(big))).data), big);
  assert.equal(sizes.length, 1);
  assert.ok(sizes[0] < 500, `12000 bytes went out in a frame of ${sizes[0]}`);
  await session.close();
});

test("an error for a packet that expected no reply is an error event; the session goes on", async () => {
  const session = await login();
  const errors = events(session, "error", 1);
  await session.send(ECHO, 1, text("not mine"), { obj: 999 });
  const [error] = await errors;
  assert.deepEqual(error, { mod: ECHO, seq: 1, msg: "obj 999 is not yours" });
  assert.equal(str((await session.request(ECHO, 1, text("still"))).data), "still");
  await session.close();
});

test("a lost connection ends a session that does not reconnect with connection_lost", async () => {
  const session = await login({ resumable: true, reconnect: false });
  assert.ok(session.protocol.ticket, "a ticket: it could have resumed");
  const closed = events(session, "close", 1);
  session.ws.close();
  const [detail] = await closed;
  assert.equal(detail.reason, "connection_lost");
});

test("a resume the edge refuses ends the session with resume_refused at once", async () => {
  const session = await login({ resumable: true });
  const closed = events(session, "close", 1);
  const tries = [];
  session.addEventListener("reconnecting", (e) => tries.push(e.detail));
  session.protocol.ticket = new Uint8Array(session.protocol.ticket.length); // a ticket no edge issued
  session.ws.close();
  const [detail] = await closed;
  assert.equal(detail.reason, "resume_refused", JSON.stringify(detail));
  assert.equal(tries.length, 1, "a refusal is not retried");
});

test("a resume that finds no edge within the window ends with resume_expired after backoff", async () => {
  const dead = await new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(`ws://127.0.0.1:${port}/ws`));
    });
  });
  const session = await login({ resumable: true });
  const closed = events(session, "close", 1);
  const tries = [];
  session.addEventListener("reconnecting", (e) => tries.push({ ...e.detail, at: Date.now() }));
  session.urls = [dead];
  session.protocol.resumeWindow = 1;
  session.ws.close();
  const [detail] = await closed;
  assert.equal(detail.reason, "resume_expired", JSON.stringify(detail));
  assert.ok(tries.length >= 3, `${tries.length} tries in a one-second window`);
  assert.deepEqual(
    tries.map((t) => t.attempt),
    tries.map((_, n) => n),
  );
  for (let n = 1; n < tries.length; n++) {
    assert.ok(tries[n].at - tries[n - 1].at >= backoff(n - 1, () => 0) - 5, "each try waits its backoff at least");
  }
});

test("heartbeats keep a session past the edge's idle timeout; without them it ends idle_timeout", async () => {
  const strict = await startStandalone("session.idle_timeout_secs = 1");
  try {
    const beats = [];
    const WebSocket = tapped({ outbound: () => beats.push(Date.now()) });
    const beating = await login({ WebSocket, heartbeatMs: 250 }, strict);
    beats.length = 0;
    const quiet = await login({ heartbeatMs: 60000 }, strict);
    const [detail] = await events(quiet, "close", 1);
    assert.equal(detail.reason, "idle_timeout", JSON.stringify(detail));
    await until(() => beats.length >= 8, "eight heartbeats");
    assert.equal(beating.state, "open");
    assert.equal(str((await beating.request(ECHO, 1, text("awake"))).data), "awake");
    await beating.close();
  } finally {
    strict.stop();
  }
});
