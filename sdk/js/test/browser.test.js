// The SDK in real Chromium against a real standalone gateway: browser.py drives the demo page
// with Playwright for Python (Debian's chromium, headless). A missing browser or Playwright
// fails here with the command that installs it.

import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { janusBin, startStandalone } from "./standalone.js";

test("the demo page in headless Chromium logs in, chats, resumes and shows close reasons", async () => {
  assert.ok(existsSync("/usr/bin/chromium"), "no /usr/bin/chromium: apt-get install chromium");
  const playwright = spawnSync("python3", ["-c", "import playwright.sync_api"]);
  assert.equal(playwright.status, 0, "no Playwright for Python: python3 -m pip install playwright");
  const gateway = await startStandalone();
  try {
    const screenshot = process.env.JANUS_SCREENSHOT ?? join(tmpdir(), "janus-demo.png");
    const out = execFileSync(
      "python3",
      [new URL("browser.py", import.meta.url).pathname, gateway.demoUrl, gateway.broker, janusBin(), screenshot],
      { encoding: "utf8", timeout: 120000 },
    );
    // browser.py exits non-zero (execFileSync throws) on any check that fails; its last line
    // is the figures.
    const chromium = JSON.parse(out.trim().split("\n").pop());
    for (const figure of ["handshake_ms_median", "echo_ms_median", "echo_ms_p99"]) {
      assert.ok(Number.isFinite(chromium[figure]) && chromium[figure] > 0, `${figure}: ${out}`);
    }
    const png = readFileSync(screenshot);
    assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47], "the screenshot is a PNG");
    console.log(`screenshot of the demo page: ${screenshot}`);
    // The Rust client on this machine in the same run, the same way: one session, one request
    // at a time, 64-byte payloads (browser.py's), over WebSocket. The difference: the load
    // generator starts a split gateway of its own (separate processes), not this standalone.
    const rust = rustClient();
    console.log(
      `figures: headless Chromium: handshake median ${chromium.handshake_ms_median} ms, echo ` +
        `median ${chromium.echo_ms_median} ms (p99 ${chromium.echo_ms_p99} ms); Rust client: ` +
        `handshake ${(1000 / rust.handshake.handshakes_per_sec).toFixed(1)} ms (1 / handshakes per ` +
        `second, one at a time), echo p50 ${rust.echo.p50_ms} ms (p99 ${rust.echo.p99_ms} ms)`,
    );
  } finally {
    gateway.stop();
  }
});

function rustClient() {
  const json = join(mkdtempSync(join(tmpdir(), "janus-bench-")), "bench.json");
  const bench = (...args) => execFileSync(janusBin(), ["bench", ...args, "--json", json], { timeout: 120000 });
  bench("handshake", "--transport", "ws", "--concurrency", "1", "--secs", "3");
  bench("echo", "--transport", "ws", "--sessions", "1", "--inflight", "1", "--payload", "64", "--warmup-secs", "1", "--secs", "3");
  const lines = readFileSync(json, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  return Object.fromEntries(lines.map((l) => [l.scenario, l]));
}
