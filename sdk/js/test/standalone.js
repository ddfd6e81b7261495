// Real gateways for the SDK's tests, from the binary named by JANUS_BIN (scripts/test.sh builds
// it), on free loopback ports with their own keys in a temporary directory: `janus standalone`,
// and the split deployment (game, broker, two edges) as separate processes.

import { execFileSync, spawn } from "node:child_process";
import { createSocket } from "node:dgram";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export function janusBin() {
  const bin = process.env.JANUS_BIN;
  if (!bin) {
    throw new Error(
      "JANUS_BIN is not set: build the gateway (cargo build -p janus-cli) and run with " +
        "JANUS_BIN=$CARGO_TARGET_DIR/debug/janus (scripts/test.sh does)",
    );
  }
  return bin;
}

function freeTcp() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function freeUdp() {
  return new Promise((resolve) => {
    const socket = createSocket("udp4");
    socket.bind(0, "127.0.0.1", () => {
      const { port } = socket.address();
      socket.close(() => resolve(port));
    });
  });
}

async function healthy(port) {
  try {
    return (await fetch(`http://127.0.0.1:${port}/health`)).ok;
  } catch {
    return false;
  }
}

function spawnRole(bin, dir, args, env) {
  const child = spawn(bin, args, {
    cwd: dir,
    env: { ...process.env, RUST_LOG: "warn", ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  child.stderrText = "";
  child.stderr.on("data", (d) => {
    child.stderrText += d;
  });
  return child;
}

async function waitHealthy(child, port, what) {
  const started = Date.now();
  while (!(await healthy(port))) {
    if (child.exitCode !== null) throw new Error(`${what} exited early (${child.exitCode}): ${child.stderrText}`);
    if (Date.now() - started > 30000) throw new Error(`${what} never became healthy: ${child.stderrText}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * The split deployment on loopback, as separate processes: the demo game, one broker (memory
 * routes and bus), and two edges with the same keys. `edgeExtra` is TOML for both edges.
 */
export async function startSplit(edgeExtra = "") {
  const bin = janusBin();
  const dir = mkdtempSync(join(tmpdir(), "janus-sdk-split-"));
  execFileSync(bin, ["keygen", "--dir", "keys"], { cwd: dir });
  const tcp = () => freeTcp();
  const [game, broker, brokerAdmin] = [await tcp(), await tcp(), await tcp()];
  const children = [];
  const write = (name, text) => {
    writeFileSync(join(dir, name), text);
    return join(dir, name);
  };
  const gameConfig = write("game.toml", `listen = "127.0.0.1:${game}"\npush = "127.0.0.1:${broker}"\n`);
  children.push(spawnRole(bin, dir, ["game-demo", "--config", gameConfig]));
  const brokerConfig = write(
    "broker.toml",
    `listen = "127.0.0.1:${broker}"\nadmin_listen = "127.0.0.1:${brokerAdmin}"\n` +
      ["roma.player.service", "roma.room.service"]
        .map((name) => `[[discovery.instances]]\nname = "${name}"\nendpoint = "127.0.0.1:${game}"\n`)
        .join(""),
  );
  const brokerProcess = spawnRole(bin, dir, ["broker", "--config", brokerConfig]);
  children.push(brokerProcess);
  await waitHealthy(brokerProcess, brokerAdmin, "broker");
  const edges = [];
  for (const name of ["a", "b"]) {
    const [admin, edgeTcp, ws] = [await tcp(), await tcp(), await tcp()];
    const config = write(
      `edge-${name}.toml`,
      `id = "edge-${name}"\nadmin_listen = "127.0.0.1:${admin}"\n${edgeExtra}\n` +
        `[tcp]\nlisten = "127.0.0.1:${edgeTcp}"\n[websocket]\nlisten = "127.0.0.1:${ws}"\n` +
        `[kcp]\nenabled = false\n[quic]\nenabled = false\n` +
        `[keys]\nsigning_key_file = "keys/server.pem"\ntoken_key_file = "keys/token.hex"\n` +
        `[brokers]\nendpoints = ["127.0.0.1:${broker}"]\n`,
    );
    const child = spawnRole(bin, dir, ["edge", "--config", config]);
    children.push(child);
    await waitHealthy(child, admin, `edge ${name}`);
    edges.push({ url: `ws://127.0.0.1:${ws}/ws`, process: child });
  }
  return {
    edges,
    serverKey: readFileSync(join(dir, "keys", "server.pub.pem"), "utf8"),
    token(uid) {
      return execFileSync(bin, ["token", "--uid", String(uid), "--token-key-file", "keys/token.hex"], {
        cwd: dir,
        encoding: "utf8",
      }).trim();
    },
    push(uid, text) {
      execFileSync(bin, ["push", "--broker", `127.0.0.1:${broker}`, "--uid", String(uid), "--text", text], { cwd: dir });
    },
    stop() {
      for (const child of children) child.kill("SIGKILL");
    },
  };
}

/** Starts a standalone gateway; `extra` is TOML appended to its `[edge]` section. */
export async function startStandalone(extra = "") {
  const bin = janusBin();
  const dir = mkdtempSync(join(tmpdir(), "janus-sdk-"));
  const [game, admin, tcp, ws, broker, brokerAdmin, demo] = await Promise.all(Array.from({ length: 7 }, freeTcp));
  const [kcp, quic] = [await freeUdp(), await freeUdp()];
  const config = join(dir, "standalone.toml");
  writeFileSync(
    config,
    `game_listen = "127.0.0.1:${game}"
demo_listen = "127.0.0.1:${demo}"
[edge]
admin_listen = "127.0.0.1:${admin}"
${extra}
[edge.tcp]
listen = "127.0.0.1:${tcp}"
[edge.websocket]
listen = "127.0.0.1:${ws}"
[edge.kcp]
listen = "127.0.0.1:${kcp}"
[edge.quic]
listen = "127.0.0.1:${quic}"
[broker]
listen = "127.0.0.1:${broker}"
admin_listen = "127.0.0.1:${brokerAdmin}"
`,
  );
  const child = spawnRole(bin, dir, [], { JANUS_STANDALONE_CONFIG: config });
  await waitHealthy(child, admin, "standalone");
  return {
    dir,
    url: `ws://127.0.0.1:${ws}/ws`,
    /** The browser demo (the SDK and its demo page). */
    demoUrl: `http://127.0.0.1:${demo}/`,
    broker: `127.0.0.1:${broker}`,
    adminPort: admin,
    serverKey: readFileSync(join(dir, ".janus", "server.pub.pem"), "utf8"),
    /** A token for `uid` from the standalone's dev token key. */
    token(uid, sid = 1) {
      return execFileSync(bin, ["token", "--uid", String(uid), "--sid", String(sid)], { cwd: dir, encoding: "utf8" }).trim();
    },
    /** `janus push` of `text` to `uid` through the broker (module 9, seq 1). */
    push(uid, text) {
      execFileSync(bin, ["push", "--broker", `127.0.0.1:${broker}`, "--uid", String(uid), "--text", text], { cwd: dir });
    },
    async metrics() {
      return (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
    },
    stop() {
      child.kill("SIGKILL");
    },
  };
}
