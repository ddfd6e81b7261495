// The SDK against a real `janus standalone` over WebSocket: login, echo, pushes, rooms, request
// errors, close reasons, and a resume after the connection is killed (every reply and push once).
// Node 20 needs --experimental-websocket (scripts/test.sh passes it).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { connect, RequestError } from "../src/janus.js";
import { events, sleep, str, text, until } from "./helpers.js";
import { startSplit, startStandalone } from "./standalone.js";

/** Demo game (broker/demo/src/lib.rs): module 2 echoes; seq 100 also pushes `pushed`; module 6 rooms. */
const ECHO = 2;
const ECHO_AND_PUSH = 100;
const ROOM = 6;
const [JOIN, SAY, SAID] = [1, 3, 4];

let gateway;
before(async () => {
  if (typeof WebSocket === "undefined") throw new Error("no WebSocket: run node with --experimental-websocket");
  gateway = await startStandalone();
});
after(() => gateway?.stop());

function login(uid, options = {}) {
  return connect({ url: gateway.url, token: gateway.token(uid), serverKey: gateway.serverKey, ...options });
}

test("a login echoes, gets the game's push and closes with client_closed", async () => {
  const session = await login(101);
  const reply = await session.request(ECHO, 1, text("hello janus"));
  assert.equal(str(reply.data), "hello janus");
  assert.equal(reply.mod, ECHO);
  assert.ok(reply.index > 0);
  const pushed = events(session, "push", 1);
  const echoed = await session.request(ECHO, ECHO_AND_PUSH, text("and push"));
  assert.equal(str(echoed.data), "and push");
  const [push] = await pushed;
  assert.equal(str(push.data), "pushed");
  assert.equal(push.index, 0);
  // Big data goes out and comes back compressed (errors.test.js looks at the frames).
  const big = "x".repeat(12000);
  assert.equal(str((await session.request(ECHO, 1, text(big))).data), big);
  const closed = events(session, "close", 1);
  await session.close();
  assert.deepEqual(await closed, [{ reason: "client_closed" }]);
  await assert.rejects(session.request(ECHO, 1, text("late")), /closed/);
});

test("a push through the broker and a room message from another player arrive as push events", async () => {
  const alice = await login(102);
  const bob = await login(103);
  const fromBroker = events(alice, "push", 1);
  gateway.push(102, "from the broker");
  const [brokerPush] = await fromBroker;
  assert.equal(str(brokerPush.data), "from the broker");
  assert.equal(str((await alice.request(ROOM, JOIN, new Uint8Array(0), { obj: 7 })).data), "ok");
  assert.equal(str((await bob.request(ROOM, JOIN, new Uint8Array(0), { obj: 7 })).data), "ok");
  const said = events(alice, "push", 1);
  await bob.request(ROOM, SAY, text("hi alice"), { obj: 7 });
  const [message] = await said;
  assert.equal(message.mod, ROOM);
  assert.equal(message.seq, SAID);
  assert.equal(str(message.data), "103: hi alice");
  await alice.close();
  await bob.close();
});

test("a request the gateway refuses is rejected with its reason and the session goes on", async () => {
  const session = await login(104);
  await assert.rejects(session.request(ECHO, 1, text("not mine"), { obj: 999 }), (e) => {
    assert.ok(e instanceof RequestError, e);
    assert.deepEqual([e.mod, e.seq, e.reason], [ECHO, 1, "obj 999 is not yours"]);
    return true;
  });
  assert.equal(str((await session.request(ECHO, 1, text("still here"))).data), "still here");
  await session.close();
});

test("a login elsewhere ends the first session with the logout code", async () => {
  const first = await login(105);
  const closed = events(first, "close", 1);
  const second = await login(105);
  const [detail] = await closed;
  // A kick is told by its logout code alone (PROTOCOL.md §9): no SCServerUnexpectedErr first.
  assert.deepEqual(detail, { reason: "logged_out", logout: "ConflictingLogin" });
  assert.equal(str((await second.request(ECHO, 1, text("mine now"))).data), "mine now");
  await second.close();
});

test("a bad server key or a bad token fails the login with a reason", async () => {
  const other = (await import("../src/crypto.js")).fromHex("d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737");
  await assert.rejects(
    connect({ url: gateway.url, token: gateway.token(106), serverKey: other }),
    (e) => e.reason === "bad_server_signature",
  );
  await assert.rejects(
    connect({ url: gateway.url, token: "not a token", serverKey: gateway.serverKey }),
    (e) => e.reason === "login_refused",
  );
});

test("a resumable session survives its WebSocket being killed: every reply and push once", async () => {
  const session = await login(107, { resumable: true });
  assert.ok(session.protocol.ticket, "a ticket");
  const pushes = [];
  session.addEventListener("push", (e) => pushes.push(str(e.detail.data)));
  const resumed = events(session, "resumed", 1);
  const replies = [];
  for (let n = 0; n < 40; n++) {
    replies.push(session.request(ECHO, ECHO_AND_PUSH, text(`r${n}`)));
    if (n === 20) session.ws.close(); // the connection dies with requests in flight
  }
  const got = await Promise.all(replies);
  assert.deepEqual(
    got.map((p) => str(p.data)),
    Array.from({ length: 40 }, (_, n) => `r${n}`),
  );
  await resumed;
  // Pushes sent while it was away arrive after the resume, once.
  gateway.push(107, "after");
  await until(() => pushes.length >= 41, "41 pushes");
  await sleep(200); // and nothing more comes
  assert.equal(pushes.filter((p) => p === "pushed").length, 40, "one push per request");
  assert.deepEqual(pushes.slice(-1), ["after"]);
  assert.equal(session.protocol.received, 81, "40 replies, 40 pushes and one more: none twice");
  await session.close();
});

test("legacy v1 logs in where the edge allows it, and is refused where it does not", async () => {
  await assert.rejects(login(108, { mode: "legacy" }), (e) => e.reason === "login_refused");
  const legacyGateway = await startStandalone("handshake.allow_legacy = true");
  try {
    const session = await connect({
      url: legacyGateway.url,
      token: legacyGateway.token(108),
      serverKey: legacyGateway.serverKey,
      mode: "legacy",
    });
    assert.equal(str((await session.request(ECHO, 1, text("v1"))).data), "v1");
    await session.close();
  } finally {
    legacyGateway.stop();
  }
});

test("on the edge's reconnect hint a session resumes at the next edge of its list, nothing lost", async () => {
  const cluster = await startSplit("drain_spread_secs = 0");
  try {
    const [a, b] = cluster.edges;
    const session = await connect({
      urls: [a.url, b.url],
      token: cluster.token(110),
      serverKey: cluster.serverKey,
      resumable: true,
    });
    const pushes = [];
    session.addEventListener("push", (e) => pushes.push(str(e.detail.data)));
    const reconnecting = events(session, "reconnecting", 1);
    const resumed = events(session, "resumed", 1);
    cluster.push(110, "before");
    await until(() => pushes.length >= 1, "the first push");
    a.process.kill("SIGTERM"); // edge a drains: the hint, then the resume at b
    const [hint] = await reconnecting;
    assert.equal(hint.cause, "reconnect_hint");
    assert.equal(hint.reason, "edge draining");
    assert.equal(hint.url, b.url);
    const [at] = await resumed;
    assert.equal(at.url, b.url);
    cluster.push(110, "after");
    assert.equal(str((await session.request(ECHO, 1, text("at b"))).data), "at b");
    await until(() => pushes.length >= 2, "the push after the resume");
    assert.deepEqual(pushes, ["before", "after"]);
    await session.close();
  } finally {
    cluster.stop();
  }
});
