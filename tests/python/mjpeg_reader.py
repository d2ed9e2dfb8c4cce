#!/usr/bin/env python3
"""A plain MJPEG reader at default settings, reading at its own pace, that reports how old the
frames it reads are.

It is what a simple script, a home-automation integration or a recorder does: `http.client`
(or stdin, for `curl -N ... | mjpeg_reader.py -`) with the kernel's default socket buffers,
one part read every 1/FPS seconds. Age = time of read - the part's X-Timestamp (capture time;
same machine, same clock), so the figures include every buffer between the camera and here.

    mjpeg_reader.py URL|- [--fps 10] [--seconds 30] [--pause-at S --pause-for P] [--tls-ca PEM]
                    [--fast-url URL --max-lag N]

Prints one JSON object: frames read, frames skipped (from X-Sequence), the worst and mean age
over the last `--window` seconds, the age of the first part read after the pause, and the
age of every part read (`trace`). With --fps 0 (reading as a browser does, as fast as parts
come), `drawn_age_ms` is how old each frame is when Chromium would draw it (it draws a part
once the next part's header block is in). Standard library only.

With --fast-url, a second reader reads that URL as fast as it can in a thread, and each part
read is also compared by sequence number with the newest part the fast reader has seen
(`lag`, in frames); with --max-lag, the exit status is 1 if a part read in the last window
(the first one after the pause included) lagged by more than N frames. A check on sequence
numbers, not on time.
"""
import argparse
import http.client
import json
import ssl
import sys
import threading
import time
import urllib.parse


def open_body(url: str, ca: str | None):
    """The response body as a buffered binary file, and the multipart boundary."""
    if url == "-":
        return sys.stdin.buffer, None
    u = urllib.parse.urlsplit(url)
    if u.scheme == "https":
        ctx = ssl.create_default_context(cafile=ca)
        ctx.check_hostname = False
        conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=30)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", u.path + ("?" + u.query if u.query else ""))
    resp = conn.getresponse()
    if resp.status != 200:
        raise SystemExit(f"{url}: HTTP {resp.status}: {resp.read().decode(errors='replace')}")
    ctype = resp.getheader("Content-Type", "")
    marker = "boundary="
    if marker not in ctype:
        raise SystemExit(f"not a multipart stream: {ctype}")
    return resp, ctype.split(marker, 1)[1].strip()


def read_part(body, boundary: str | None):
    """(seq, capture time, jpeg length, when its header block was complete) of the next part,
    or None at the end of the stream."""
    line = body.readline()
    while line in (b"\r\n", b"\n"):
        line = body.readline()
    if not line:
        return None
    if not line.startswith(b"--") or (boundary and line.strip() != b"--" + boundary.encode()):
        raise SystemExit(f"expected a boundary line, got {line[:80]!r}")
    headers = {}
    while True:
        line = body.readline()
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    headers_done = time.time()
    length = int(headers["content-length"])
    jpeg = body.read(length)
    if len(jpeg) != length:
        return None
    if not (jpeg.startswith(b"\xff\xd8") and jpeg.endswith(b"\xff\xd9")):
        raise SystemExit("a part is not a JPEG")
    return int(headers["x-sequence"]), float(headers["x-timestamp"]), length, headers_done


class FastReader(threading.Thread):
    """Reads a stream as fast as it comes, remembering the newest sequence number."""

    def __init__(self, url: str, ca: str | None):
        super().__init__(daemon=True)
        self.body, self.boundary = open_body(url, ca)
        self.newest = 0

    def run(self):
        while (part := read_part(self.body, self.boundary)) is not None:
            self.newest = part[0]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", help="the /stream.mjpg URL, or - to read the stream from stdin")
    p.add_argument("--fps", type=float, default=10.0, help="parts read per second (0: as fast as they come)")
    p.add_argument("--seconds", type=float, default=30.0, help="how long to read")
    p.add_argument("--window", type=float, default=10.0, help="the worst age is taken over the last this many seconds")
    p.add_argument("--fast-for", type=float, default=0.0,
                   help="read as fast as parts come for this many seconds first, then at --fps")
    p.add_argument("--pause-at", type=float, help="stop reading this many seconds in")
    p.add_argument("--pause-for", type=float, default=10.0, help="... for this long")
    p.add_argument("--tls-ca", help="CA certificate to trust for https")
    p.add_argument("--fast-url", help="also read this stream as fast as possible, to compare sequence numbers")
    p.add_argument("--max-lag", type=int, help="fail if a part read lagged the fast reader by more than this many frames")
    a = p.parse_args()

    fast = None
    if a.fast_url:
        fast = FastReader(a.fast_url, a.tls_ca)
        fast.start()
    body, boundary = open_body(a.url, a.tls_ca)
    start = time.monotonic()
    next_read = start
    paused = a.pause_at is None
    trace = []  # (seconds since start, seq, age s)
    first_after_pause = None
    last_seq = None
    skipped = 0
    # Chromium draws a part only once the next part's header block is complete: the age of
    # each frame when a browser reading this fast would draw it.
    drawn = []
    prev_stamp = None
    while True:
        now = time.monotonic()
        if now - start >= a.seconds:
            break
        if not paused and now - start >= a.pause_at:
            time.sleep(a.pause_for)
            paused = True
            first_after_pause = len(trace)
            now = next_read = time.monotonic()
        fps = 0 if now - start < a.fast_for else a.fps
        if fps > 0 and next_read > now:
            time.sleep(next_read - now)
        part = read_part(body, boundary)
        if part is None:
            break
        seq, stamp, _, headers_done = part
        if prev_stamp is not None:
            drawn.append(headers_done - prev_stamp)
        prev_stamp = stamp
        read_at = time.monotonic()
        lag = max(0, fast.newest - seq) if fast else None
        trace.append((round(read_at - start, 3), seq, round(time.time() - stamp, 4), lag))
        if last_seq is not None:
            skipped += max(0, seq - last_seq - 1)
        last_seq = seq
        # A reader that fell behind its schedule reads the next part at once, not in a burst.
        next_read = max(next_read + 1.0 / fps, read_at) if fps > 0 else read_at

    end = trace[-1][0] if trace else 0.0
    recent = [age for t, _, age, _ in trace if t >= end - a.window]
    lags = [lag for t, _, _, lag in trace if t >= end - a.window and lag is not None]
    if first_after_pause is not None and first_after_pause < len(trace) and fast:
        lags.append(trace[first_after_pause][3])
    result = {
        "frames": len(trace),
        "skipped": skipped,
        "seconds": round(end, 2),
        "worst_age_ms": round(max(recent) * 1000, 1) if recent else None,
        "mean_age_ms": round(sum(recent) / len(recent) * 1000, 1) if recent else None,
        "first_after_pause_age_ms": (
            round(trace[first_after_pause][2] * 1000, 1)
            if first_after_pause is not None and first_after_pause < len(trace) else None),
        "worst_lag": max(lags) if lags else None,
        "drawn_age_ms": {q: round(sorted(drawn)[int(f * (len(drawn) - 1))] * 1000, 1)
                         for q, f in (("p50", 0.5), ("p99", 0.99))} if drawn and a.fps == 0 else None,
        "trace": trace,
    }
    print(json.dumps(result))
    if not trace:
        return 1
    if a.max_lag is not None and (not lags or max(lags) > a.max_lag):
        print(f"a part read lagged the newest by {max(lags) if lags else '?'} frames (limit {a.max_lag})",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
