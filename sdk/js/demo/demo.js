// The demo page's script: logs in with a development token from the standalone gateway, then
// shows room chat, a live round-trip meter (an echo every second), the push feed and the
// session's state. `window.demo` exposes the same to scripts (the Chromium test drives it).

import { connect } from "/sdk/janus.js";

const $ = (id) => document.getElementById(id);
const text = (s) => new TextEncoder().encode(s);
const str = (b) => new TextDecoder().decode(b);
const ECHO = 2;
const ROOM = 6;
const [JOIN, SAY, SAID] = [1, 3, 4];

const demo = {
  session: null,
  state: "not connected",
  closeReason: null,
  rtts: [],
  pushes: [],
  chat: [],
  log: [],
  connect: login,
  join,
  say,
};
window.demo = demo;

function line(list, message) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()}  ${message}`;
  list.prepend(li);
}

function log(message) {
  demo.log.push(message);
  line($("log"), message);
}

function setState(state, detail = "") {
  demo.state = state;
  $("state").textContent = detail ? `${state} (${detail})` : state;
  $("state").className = state;
  const open = state === "open" || state === "resuming";
  for (const id of ["kill", "close", "join", "say", "send"]) $(id).disabled = !open;
  $("connect").disabled = open;
}

async function login(uid = Number($("uid").value)) {
  $("uid").value = String(uid);
  const config = await (await fetch("/config.json")).json();
  const token = await (await fetch(`/token?uid=${uid}`)).text();
  const url = `ws://${location.hostname}:${config.wsPort}${config.wsPath}`;
  setState("connecting");
  const started = performance.now();
  const session = await connect({ url, token, serverKey: config.serverKey, resumable: true });
  demo.handshakeMs = performance.now() - started;
  demo.session = session;
  demo.closeReason = null;
  log(`logged in as player ${uid} at ${url} in ${demo.handshakeMs.toFixed(1)} ms`);
  setState("open");
  session.addEventListener("push", (e) => {
    const p = e.detail;
    if (p.mod === ROOM && p.seq === SAID) {
      demo.chat.push(str(p.data));
      line($("chat"), str(p.data));
    } else {
      demo.pushes.push(str(p.data));
      line($("pushes"), `mod ${p.mod} seq ${p.seq}: ${str(p.data)}`);
    }
  });
  session.addEventListener("reconnecting", (e) => {
    setState("resuming", `attempt ${e.detail.attempt + 1}`);
    log(`resuming (${e.detail.cause})`);
  });
  session.addEventListener("resumed", () => {
    setState("open");
    log("resumed: nothing lost");
  });
  session.addEventListener("close", (e) => {
    const { reason, logout } = e.detail;
    demo.closeReason = logout ? `${reason}, logged out: ${logout}` : reason;
    setState("closed", demo.closeReason);
    log(`closed: ${demo.closeReason}`);
  });
  meter(session);
  return session;
}

async function meter(session) {
  while (demo.session === session && session.state !== "closed") {
    if (session.state === "open") {
      const started = performance.now();
      try {
        await session.request(ECHO, 1, text("ping"));
        const rtt = performance.now() - started;
        demo.rtts.push(rtt);
        const last = demo.rtts.slice(-20);
        const avg = last.reduce((a, b) => a + b, 0) / last.length;
        $("rtt").textContent = `${rtt.toFixed(1)} ms (average of the last ${last.length}: ${avg.toFixed(1)} ms)`;
      } catch (e) {
        $("rtt").textContent = `echo failed: ${e.message}`;
      }
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function join(room = Number($("room").value)) {
  await demo.session.request(ROOM, JOIN, new Uint8Array(0), { obj: room });
  log(`joined room ${room}`);
}

async function say(message = $("say").value, room = Number($("room").value)) {
  await demo.session.request(ROOM, SAY, text(message), { obj: room });
  line($("chat"), `me: ${message}`);
  $("say").value = "";
}

$("uid").value = String(1 + Math.floor(Math.random() * 100000));
$("connect").onclick = () => login().catch((e) => setState("closed", e.reason ?? e.message));
$("join").onclick = () => join().catch((e) => log(`join failed: ${e.message}`));
$("send").onclick = () => say().catch((e) => log(`say failed: ${e.message}`));
$("say").onkeydown = (e) => e.key === "Enter" && $("send").onclick();
$("kill").onclick = () => demo.session?.ws?.close();
$("close").onclick = () => demo.session?.close();
