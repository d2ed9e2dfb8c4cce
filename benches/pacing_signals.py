#!/usr/bin/env python3
"""What each TCP signal is worth for pacing an MJPEG stream: a small MJPEG server (standard
library only) whose rule for sending the next frame is chosen on the command line, read by
tests/python/mjpeg_reader.py (http.client, kernel-default buffers) at its own pace.

The evidence behind src/http/pacing.rs (see docs/benchmarks-fanout.md). Rules:

  push      write the newest frame whenever the previous one has been handed to the kernel,
            kernel-default send buffer (µStreamer's rule: its write callback fires when the
            output buffer has drained into the socket)
  push128k  the same with SO_SNDBUF 128 KiB (camcast before pacing)
  lowat     TCP_NOTSENT_LOWAT 1: the socket is writable only once nothing is unsent
  acked     the next frame only once every byte sent is acknowledged (tcpi_unacked and
            tcpi_notsent_bytes 0): the peer's kernel has it, read or not
  window    acked, and the peer's advertised window (tcpi_snd_wnd) back within half a frame
            of the largest seen, with a 1 s valve: "the reader consumed the previous frame"
  probe     camcast's rule: once acked, send an empty line at a time; two ACKs within
            min RTT + 20 ms in a row (a Linux receiver ACKs a small segment at once only when
            its reader drained the queue) mean the reader is waiting

    pacing_signals.py [--rules push,acked,...] [--fps 10] [--seconds 20] [--jpeg FILE]
                      [--host 127.0.0.1] [--reader-prefix "ip netns exec NS"]

Prints one line per rule: the reader's worst and mean frame age over its last 10 s, frames
read per second, and what the server saw of the peer's window. The frames are one JPEG sent
again and again (its size is what matters), stamped with the time of their "capture" at 30 fps.
"""
import argparse
import json
import os
import shlex
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
READER = os.path.join(HERE, "..", "tests", "python", "mjpeg_reader.py")
TCP_NOTSENT_LOWAT = 25


def tcp_info(s):
    """(unacked segments, unsent bytes, peer window, min rtt s) from TCP_INFO."""
    b = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    unacked = struct.unpack_from("I", b, 24)[0]
    min_rtt = struct.unpack_from("I", b, 148)[0] / 1e6
    notsent = struct.unpack_from("I", b, 144)[0]
    snd_wnd = struct.unpack_from("I", b, 228)[0]
    return unacked, notsent, snd_wnd, min_rtt


class Camera:
    """The newest frame's sequence number and capture time, 30 a second."""

    def __init__(self):
        self.cond = threading.Condition()
        self.seq, self.stamp = 0, 0.0
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        t0 = time.monotonic()
        while True:
            time.sleep(max(0.0, t0 + (self.seq + 1) / 30 - time.monotonic()))
            with self.cond:
                self.seq, self.stamp = self.seq + 1, time.time()
                self.cond.notify_all()

    def newer_than(self, seq):
        with self.cond:
            self.cond.wait_for(lambda: self.seq > seq)
            return self.seq, self.stamp


def wait_acked(c, window_poll=0.001):
    while True:
        info = tcp_info(c)
        if info[0] == 0 and info[1] == 0:
            return info
        time.sleep(window_poll)


def serve(c, rule, camera, jpeg, stats):
    req = b""
    while b"\r\n\r\n" not in req:
        chunk = c.recv(4096)
        if not chunk:
            return
        req += chunk
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if rule == "push128k":
        c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 128 * 1024)
    if rule == "lowat":
        c.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, 1)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n"
              b"Connection: close\r\n\r\n")
    seq, max_wnd, streak = 0, 0, 0
    try:
        while True:
            if seq and rule in ("acked", "window", "probe"):
                _, _, wnd, min_rtt = wait_acked(c)
                max_wnd = max(max_wnd, wnd)
                stats["windows"].add(wnd)
                if rule == "window":
                    t0 = time.monotonic()
                    while wnd + len(jpeg) // 2 < max_wnd and time.monotonic() - t0 < 1.0:
                        time.sleep(0.002)
                        _, _, wnd, _ = tcp_info(c)
                        stats["windows"].add(wnd)
                elif rule == "probe":
                    streak = 0
                    while streak < 2:
                        c.sendall(b"\r\n")
                        sent = time.monotonic()
                        _, _, wnd, min_rtt = wait_acked(c)
                        stats["windows"].add(wnd)
                        streak = streak + 1 if time.monotonic() - sent <= min_rtt + 0.020 else 0
            seq, stamp = camera.newer_than(seq)
            head = (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n"
                    b"X-Sequence: %d\r\nX-Timestamp: %.6f\r\n\r\n" % (len(jpeg), seq, stamp))
            c.sendall(head + jpeg + b"\r\n")
    except OSError:
        pass
    finally:
        c.close()


def run_rule(rule, args, jpeg):
    camera = Camera()
    stats = {"windows": set()}
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def accept():
        while True:
            c, _ = listener.accept()
            threading.Thread(target=serve, args=(c, rule, camera, jpeg, stats), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    cmd = shlex.split(args.reader_prefix) + [
        sys.executable, READER, f"http://{args.host}:{port}/stream.mjpg",
        "--fps", str(args.fps), "--seconds", str(args.seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    d = json.loads(out)
    reads = d["trace"]
    span = reads[-1][0] - reads[0][0]
    windows = sorted(stats["windows"])
    seen = f"{windows[0]}–{windows[-1]}" if windows else "not read"
    print(f"{rule:>9}: worst age {d['worst_age_ms']:7.0f} ms, mean {d['mean_age_ms']:7.0f} ms "
          f"(last 10 s), {(len(reads) - 1) / span:4.1f} frames read/s, peer window seen {seen}")
    listener.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rules", default="push,push128k,lowat,acked,window,probe")
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--jpeg", help="frame to send (default: 18 KB, the 640x480 test pattern's size)")
    p.add_argument("--host", default="127.0.0.1", help="address the reader dials")
    p.add_argument("--reader-prefix", default="", help='e.g. "ip netns exec peer" for a veth peer')
    args = p.parse_args()
    if args.jpeg:
        jpeg = open(args.jpeg, "rb").read()
    else:
        # Size is what matters here: a valid JPEG padded with a comment segment to 18 KB.
        pad = 18_000
        jpeg = b"\xff\xd8" + b"\xff\xfe" + struct.pack(">H", pad + 2) + b"\0" * pad + b"\xff\xd9"
    print(f"{len(jpeg)} B frames at 30 fps, reader at {args.fps} fps for {args.seconds} s, "
          f"{socket.gethostname()}, {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    for rule in args.rules.split(","):
        run_rule(rule, args, jpeg)


if __name__ == "__main__":
    main()
