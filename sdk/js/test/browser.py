"""The SDK in real Chromium (Debian's chromium, headless, driven by Playwright for Python): the
standalone's demo page logs in, echoes, receives a push, chats in a room with a second player,
survives its WebSocket being killed while pushes flow (every push once and in order), and shows
the close reason of a login elsewhere. Run by browser.test.js, which starts the gateway:

    python3 browser.py DEMO_URL BROKER JANUS_BIN SCREENSHOT

Prints one JSON line of figures (handshake and echo round-trip times) last.
"""

import json
import statistics
import subprocess
import sys

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
# The echo payload of the figures: the Rust client's (`janus bench echo`'s default).
PAYLOAD = 64


def check(condition, what):
    """Fails the run, saying what did not hold (unlike `assert`, never compiled away by -O)."""
    if not condition:
        raise SystemExit(f"browser check failed: {what}")


def main(demo_url, broker, janus, screenshot):
    def push(uid, text):
        subprocess.run(
            [janus, "push", "--broker", broker, "--uid", str(uid), "--text", text],
            check=True,
            capture_output=True,
        )

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        alice = browser.new_page()
        bob = browser.new_page()
        errors = []
        for page in (alice, bob):
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(demo_url)
        alice.evaluate("demo.connect(501)")
        bob.evaluate("demo.connect(502)")
        for page in (alice, bob):
            page.wait_for_function("demo.state === 'open'")

        # Echo, and the round-trip meter the page runs (an echo a second).
        echoed = alice.evaluate(
            "demo.session.request(2, 1, new TextEncoder().encode('hi')).then(p => new TextDecoder().decode(p.data))"
        )
        check(echoed == "hi", f"echo answered {echoed!r}")
        # A push through the broker.
        push(501, "hello alice")
        alice.wait_for_function("demo.pushes.includes('hello alice')")
        # A room: bob's message reaches alice as a push.
        alice.evaluate("demo.join(7)")
        bob.evaluate("demo.join(7)")
        bob.evaluate("demo.say('hi from bob', 7)")
        alice.wait_for_function("demo.chat.includes('502: hi from bob')")

        # The WebSocket is killed while numbered pushes flow: the session resumes by itself and
        # every push arrives once, in order.
        for n in range(10):
            push(501, f"n/{n}")
            if n == 4:
                alice.evaluate("demo.session.ws.close()")
        alice.wait_for_function("demo.pushes.filter(p => p.startsWith('n/')).length >= 10")
        alice.wait_for_function("demo.state === 'open'")
        numbered = alice.evaluate("demo.pushes.filter(p => p.startsWith('n/'))")
        check(numbered == [f"n/{n}" for n in range(10)], f"numbered pushes once and in order: {numbered}")
        log = alice.evaluate("demo.log")
        check(any("resumed" in line for line in log), f"the page logged a resume: {log}")
        alice.wait_for_function("demo.rtts.length >= 3")
        alice.screenshot(path=screenshot, full_page=True)

        # Player 501 logs in elsewhere: the page shows why the session ended.
        bob.evaluate("demo.session.close()")
        bob.wait_for_function("demo.state === 'closed'")
        reason = bob.evaluate("demo.closeReason")
        check(reason == "client_closed", f"close reason {reason!r}")
        bob.evaluate("demo.connect(501)")
        bob.wait_for_function("demo.state === 'open'")
        alice.wait_for_function("demo.state === 'closed'")
        reason = alice.evaluate("demo.closeReason")
        check("ConflictingLogin" in reason, f"close reason {reason!r}")
        check(not errors, f"page errors: {errors}")

        # Figures: fresh logins' handshakes, and echo round trips, in this browser.
        handshakes = []
        for uid in range(600, 620):
            page = browser.new_page()
            page.goto(demo_url)
            page.evaluate(f"demo.connect({uid})")
            page.wait_for_function("demo.state === 'open'")
            handshakes.append(page.evaluate("demo.handshakeMs"))
            if uid == 600:
                rtts = page.evaluate(
                    """async (payload) => {
                        const out = [];
                        for (let i = 0; i < 80; i++) {
                            const t = performance.now();
                            await demo.session.request(2, 1, new Uint8Array(payload));
                            out.push(performance.now() - t);
                        }
                        return out;
                    }""",
                    PAYLOAD,
                )
            page.evaluate("demo.session.close()")
            page.close()
        browser.close()
    rtts.sort()
    print(json.dumps({
        "chromium": "headless",
        "handshake_ms_median": round(statistics.median(handshakes), 2),
        "echo_ms_median": round(statistics.median(rtts), 3),
        "echo_ms_p99": round(rtts[int(len(rtts) * 0.99) - 1], 3),
    }))


if __name__ == "__main__":
    main(*sys.argv[1:5])
