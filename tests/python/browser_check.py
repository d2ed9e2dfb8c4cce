#!/usr/bin/env python3
"""Opens camcast's page in headless Chromium and checks that it shows the live test pattern.

Drives Chromium over the DevTools protocol (websocket-client) and checks:
- the page's <img> plays /stream.mjpg at its natural size (WIDTHxHEIGHT);
- the header shows the resolution fetched from /info.json;
- two screenshots of the image area a second apart differ (the picture moves) and both contain
  the test pattern's colour bars (read from src/source/pattern.rs, converted to RGB).
Saves the last full screenshot to the path given.

With SYNC_DIR, it then checks the page's retry: it creates SYNC_DIR/paused, waits for the caller
to restart the server and create SYNC_DIR/restarted, and requires the picture to move again
without any help.

usage: browser_check.py URL WIDTHxHEIGHT SCREENSHOT.png [SYNC_DIR]
"""

import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket  # websocket-client
from PIL import Image

DEADLINE_S = 30
# A JPEG-compressed, browser-scaled bar colour may be this far from the exact value per channel.
COLOUR_TOLERANCE = 40
# Each saturated bar covers 1/8 of the frame; require at least a fifth of that.
MIN_BAR_FRACTION = 1 / 40
# Screenshots a second apart must differ in at least this share of the image area's pixels.
MIN_CHANGED_FRACTION = 0.05


def bar_colours():
    """The test pattern's BARS (Y, U, V) from src/source/pattern.rs, as RGB (BT.601 limited)."""
    here = os.path.dirname(os.path.abspath(__file__))
    src = open(os.path.join(here, "..", "..", "src", "source", "pattern.rs")).read()
    table = re.search(r"pub const BARS: \[\(u8, u8, u8\); 8\] = \[(.*?)\];", src, re.S)
    bars = [tuple(map(int, t)) for t in re.findall(r"\((\d+), (\d+), (\d+)\)", table.group(1))]
    assert len(bars) == 8, bars

    def rgb(y, u, v):
        c = 1.164 * (y - 16)
        r = c + 1.596 * (v - 128)
        g = c - 0.392 * (u - 128) - 0.813 * (v - 128)
        b = c + 2.017 * (u - 128)
        return tuple(max(0, min(255, round(x))) for x in (r, g, b))

    return [rgb(*b) for b in bars]


class DevTools:
    """A minimal DevTools-protocol session on one page target."""

    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=DEADLINE_S, suppress_origin=True)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def wait_for(what, probe):
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    sys.exit(f"FAIL: timed out waiting for {what}")


def launch(url, profile):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("FAIL: chromium not installed")
    args = [
        chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}",
        "--remote-debugging-port=0", "--window-size=720,720", url,
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = os.path.join(profile, "DevToolsActivePort")
    port = wait_for("Chromium's DevTools port",
                    lambda: os.path.exists(port_file) and open(port_file).readline().strip())

    def page_target():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        return pages[0]["webSocketDebuggerUrl"] if pages else None

    return proc, DevTools(wait_for("a page target", page_target))


def rgb_pixels(image):
    raw = image.tobytes()
    return [raw[i:i + 3] for i in range(0, len(raw), 3)]


def colour_shares(image, colours):
    """Share of the image's pixels near each colour."""
    pixels = rgb_pixels(image)
    shares = []
    for c in colours:
        near = sum(1 for p in pixels if all(abs(p[i] - c[i]) <= COLOUR_TOLERANCE for i in range(3)))
        shares.append(near / len(pixels))
    return shares


def changed_share(a, b):
    pa, pb = rgb_pixels(a), rgb_pixels(b)
    changed = sum(1 for x, y in zip(pa, pb) if max(abs(x[i] - y[i]) for i in range(3)) > 30)
    return changed / len(pa)


def check_live(tab, box, colours, label):
    """Two screenshots a second apart: both show the bars, and the picture moved."""
    shots = []
    for i in range(2):
        if i:
            time.sleep(1)
        full = tab.screenshot()
        area = full.crop(box)
        shares = colour_shares(area, colours)
        print(f"{label} screenshot {i + 1}: bar colour shares "
              + " ".join(f"{c}:{s:.3f}" for c, s in zip(colours, shares)))
        # Bars 1-6 (yellow to blue) are saturated and cannot be mistaken for the white box or
        # the black number plate.
        missing = [c for c, s in zip(colours[1:7], shares[1:7]) if s < MIN_BAR_FRACTION]
        if missing:
            print(f"  test pattern colours missing: {missing}")
            return None
        shots.append((full, area))
    changed = changed_share(shots[0][1], shots[1][1])
    print(f"{label}: pixels changed between the screenshots: {changed:.1%}")
    return shots[1][0] if changed >= MIN_CHANGED_FRACTION else None


def await_restart(tab, box, colours, sync_dir):
    open(os.path.join(sync_dir, "paused"), "w").close()
    print("waiting for the server to be restarted")
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(sync_dir, "restarted")):
        if time.monotonic() > deadline:
            sys.exit("FAIL: the server was not restarted")
        time.sleep(0.1)
    # The page notices on its own (stream error or /info.json poll) and reopens the stream.
    wait_for("the page to show a moving picture again",
             lambda: check_live(tab, box, colours, "after restart"))
    print("the page resumed the stream by itself after the server restarted")


def main():
    url, size, out = sys.argv[1], sys.argv[2], sys.argv[3]
    sync_dir = sys.argv[4] if len(sys.argv) > 4 else None
    width, height = map(int, size.split("x"))
    # On SIGTERM (the CI script cleaning up), still stop Chromium in the `finally` below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    profile = tempfile.mkdtemp(prefix="camcast-chromium-")
    proc, tab = launch(url, profile)
    try:
        natural = wait_for("the stream to show in <img>", lambda: tab.evaluate(
            "(() => { const i = document.getElementById('live');"
            " return i && i.naturalWidth > 0 ? [i.naturalWidth, i.naturalHeight] : null; })()"))
        print(f"<img> natural size {natural[0]}x{natural[1]}")
        assert natural == [width, height], f"expected {width}x{height}, got {natural}"
        mode = wait_for("the resolution from /info.json in the header", lambda: (
            lambda t: t if f"{width}×{height}" in t else None)(
                tab.evaluate("document.getElementById('mode').textContent")))
        name, state = (tab.evaluate(f"document.getElementById('{i}').textContent")
                       for i in ("name", "state"))
        print(f"header: {name} | {mode} | {state}")
        rect = tab.evaluate(
            "(() => { const r = document.getElementById('live').getBoundingClientRect();"
            " return [r.left, r.top, r.right, r.bottom].map(Math.round); })()")
        scale = tab.evaluate("window.devicePixelRatio")
        box = tuple(round(v * scale) for v in rect)
        print(f"image area on screen: {box}")

        colours = bar_colours()
        full = check_live(tab, box, colours, "live")
        assert full is not None, "the page does not show the moving test pattern"
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        full.save(out)
        print(f"saved {out}")
        if sync_dir:
            await_restart(tab, box, colours, sync_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
    print("OK: the browser page plays the live stream")


if __name__ == "__main__":
    main()
