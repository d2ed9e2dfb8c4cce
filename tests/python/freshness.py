#!/usr/bin/env python3
"""How fresh are the frames a stock grpcio client reads? A measurement, with grpcio at its
default settings (4 MiB stream window, credits as the application reads).

    freshness.py HOST:PORT [--contract v1|tutorial] [--fps F] [--duration S]
                           [--pause S] [--viewers N] [--json] [--check-lag N]

Modes:
- default: one viewer calls next() F times a second (0 = as fast as frames come) for S seconds
  and reports delivered fps, frames skipped and frame age (now minus the capture time) overall
  and over the last 10 s.
- --pause S: read at F fps for 3 s, stop reading for S seconds, then read on for 3 s; reports
  the age of the first frames read after the pause.
- --viewers N: N viewers opened at once from this process (grpcio puts them all on one HTTP/2
  connection); reports how long each waited for its first frame or the status that refused it.
  With --expect-served K the exit status is 1 unless exactly K viewers got frames, every other
  one was refused with RESOURCE_EXHAUSTED naming the limit (K) and this host, and no viewer was
  refused for another reason or got its first frame only after a served viewer had finished
  (that is what a viewer queued behind HTTP/2's stream limit would do). No clock is judged.

Frame age: camcast.v1 frames carry capture_time_unix_us and seq. The tutorial API's frames
carry only the JPEG, so a reference camcast.v1 reader on a connection of its own reads every
frame at full rate and records each JPEG's hash with its seq and capture time; a tutorial
frame's age and sequence number come from the reference frame with identical bytes (the hub
hands the same buffer to both). Frames the reference missed are counted as unmatched.

Lag, in frames: the newest seq the reference has seen when the measured viewer reads a frame,
minus that frame's seq. It needs no clock and is what --check-lag N judges: exit status 1
unless the worst lag over the last 10 s (after a pause: of every frame read after it, the
first one included) is at most N and the viewer skipped frames. Without --check-lag the exit status is 0 whatever was measured.
"""
import argparse
import hashlib
import json
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict


def generate_stubs(out_dir):
    proto_dir = pathlib.Path(__file__).resolve().parents[2] / "proto"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}",
         f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
         str(proto_dir / "webcam_streaming.proto"),
         str(proto_dir / "camcast" / "v1" / "camera.proto")],
        check=True,
    )
    sys.path.insert(0, str(out_dir))


def now_us():
    return time.time_ns() // 1000


class Reference:
    """A full-rate camcast.v1 reader on its own connection: JPEG hash -> (seq, capture us)."""

    def __init__(self, grpc, v1, v1_grpc, target):
        # A local subchannel pool gives this channel its own TCP connection, so its credits
        # and pings never ride along with the measured viewer's.
        self.channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        self.stub = v1_grpc.CameraStub(self.channel)
        self.v1 = v1
        self.seen = OrderedDict()
        self.lock = threading.Lock()
        self.newest_seq = 0
        self.stream = None
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        self.stream = self.stub.StreamFrames(self.v1.StreamRequest(viewer_name="freshness-reference"))
        try:
            for f in self.stream:
                key = hashlib.blake2b(f.jpeg, digest_size=16).digest()
                with self.lock:
                    self.seen[key] = (f.seq, f.capture_time_unix_us)
                    self.newest_seq = f.seq
                    while len(self.seen) > 5000:
                        self.seen.popitem(last=False)
        except Exception:  # cancelled at the end
            pass

    def lookup(self, jpeg, wait=0.5):
        key = hashlib.blake2b(jpeg, digest_size=16).digest()
        deadline = time.monotonic() + wait
        while True:
            with self.lock:
                hit = self.seen.get(key)
            if hit or time.monotonic() > deadline:
                return hit
            time.sleep(0.002)  # the reference may get the same frame a moment later

    def close(self):
        if self.stream:
            self.stream.cancel()
        self.channel.close()


class Viewer:
    """One measured viewer: yields (read time us, seq, capture us, skipped) per frame."""

    def __init__(self, mods, channel, contract, reference, name):
        self.lags = []
        grpc, tutorial, tutorial_grpc, v1, v1_grpc = mods
        self.contract, self.reference = contract, reference
        self.unmatched = 0
        if contract == "v1":
            self.stream = v1_grpc.CameraStub(channel).StreamFrames(v1.StreamRequest(viewer_name=name))
        else:
            self.stream = tutorial_grpc.WebcamStreamingStub(channel).StartWebcamStreaming(
                tutorial.ClientName(clientName=name))
        self.last_seq = None

    def read(self):
        f = next(self.stream)
        t = now_us()
        if self.contract == "v1":
            seq, cap, skipped = f.seq, f.capture_time_unix_us, f.skipped
        else:
            hit = self.reference.lookup(f.imageBytes)
            if hit is None:
                self.unmatched += 1
                return t, None, None, None
            seq, cap = hit
            skipped = 0 if self.last_seq is None else max(0, seq - self.last_seq - 1)
        self.last_seq = seq
        self.lags.append((t, self.reference.newest_seq - seq))
        return t, seq, cap, skipped


def summarise(samples, t_end, window_s=10):
    ages = [(t - cap) / 1000 for t, seq, cap, _ in samples if cap is not None]
    last = [(t - cap) / 1000 for t, seq, cap, _ in samples
            if cap is not None and t >= t_end - window_s * 1_000_000]
    skipped = sum(s for *_, s in samples if s)
    span = (samples[-1][0] - samples[0][0]) / 1e6 if len(samples) > 1 else 0
    return {
        "frames": len(samples),
        "fps": round((len(samples) - 1) / span, 2) if span else 0,
        "skipped": skipped,
        "age_ms_mean": round(sum(ages) / len(ages), 1) if ages else None,
        "age_ms_max": round(max(ages), 1) if ages else None,
        f"age_ms_max_last_{window_s}s": round(max(last), 1) if last else None,
        f"age_ms_mean_last_{window_s}s": round(sum(last) / len(last), 1) if last else None,
    }


def paced(viewer, fps, seconds, samples):
    period = 1 / fps if fps else 0
    start = time.monotonic()
    tick = start
    while time.monotonic() - start < seconds:
        samples.append(viewer.read())
        if period:
            tick = max(tick + period, time.monotonic())
            time.sleep(max(0, tick - time.monotonic()))


def run_one(mods, args, target, reference):
    grpc = mods[0]
    channel = grpc.insecure_channel(target)
    viewer = Viewer(mods, channel, args.contract, reference, f"freshness-{args.contract}-{args.fps:g}fps")
    samples = []
    result = {"contract": args.contract, "reader_fps": args.fps}
    if args.pause:
        paced(viewer, args.fps, 3, samples)
        before = len(samples)
        time.sleep(args.pause)
        lags_before = len(viewer.lags)
        paced(viewer, args.fps, 3, samples)
        after = [s for s in samples[before:] if s[2] is not None]
        after_lags = [lag for _, lag in viewer.lags[lags_before:]]
        result["first_lag_after_pause"] = after_lags[0] if after_lags else None
        result["lag_max_after_pause"] = max(after_lags) if after_lags else None
        ages = [round((t - cap) / 1000, 1) for t, _, cap, _ in after]
        result.update({"pause_s": args.pause, "ages_ms_after_pause": ages[:8],
                       "first_age_ms_after_pause": ages[0] if ages else None,
                       "max_age_ms_after_pause": max(ages) if ages else None})
    else:
        paced(viewer, args.fps, args.duration, samples)
        result.update(summarise(samples, samples[-1][0]))
        recent = [lag for t, lag in viewer.lags if t >= samples[-1][0] - 10_000_000]
        result["lag_max_last_10s"] = max(recent) if recent else None
    result["skipped_total"] = sum(s for *_, s in samples if s)
    result["unmatched"] = viewer.unmatched
    viewer.stream.cancel()
    channel.close()
    return result


def run_many(mods, args, target):
    grpc, _, _, v1, v1_grpc = mods
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=10)
    results = [None] * args.viewers
    start = time.monotonic()

    def one(i):
        stub = v1_grpc.CameraStub(channel)
        stream = stub.StreamFrames(v1.StreamRequest(viewer_name=f"many-{i}"))
        try:
            got = 0
            first = None
            for _ in stream:
                got += 1
                if first is None:
                    first = time.monotonic() - start
                if time.monotonic() - start > args.duration:
                    break
            done = round(time.monotonic() - start, 3)
            if first is None:  # the stream ended with OK and no frame
                results[i] = {"ended_s": done}
            else:
                results[i] = {"first_s": round(first, 3), "frames": got, "done_s": done}
        except grpc.RpcError as e:
            results[i] = {"refused_s": round(time.monotonic() - start, 3),
                          "code": e.code().name, "message": e.details()}
        finally:
            stream.cancel()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(args.viewers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    channel.close()
    served = [r for r in results if r and "first_s" in r]
    refused = [r for r in results if r and "code" in r]
    summary = {
        "viewers": args.viewers,
        "served": len(served),
        "refused": len(refused),
        "slowest_first_frame_s": max((r["first_s"] for r in served), default=None),
        "slowest_refusal_s": max((r["refused_s"] for r in refused), default=None),
        "refusals": sorted({f'{r["code"]}: {r["message"]}' for r in refused}),
        "fps_each": round(min(r["frames"] for r in served) / args.duration, 1) if served else None,
    }
    if args.expect_served is not None:
        host = target.rsplit(":", 1)[0].strip("[]")
        summary["admission_failures"] = check_admission(
            len(results), served, refused, args.expect_served, host)
    return summary


def check_admission(viewers, served, refused, expect_served, host):
    """The admission verdict for --viewers with --expect-served: a list of failures."""
    fails = []
    if len(served) != expect_served:
        fails.append(f"{len(served)} viewers served, want {expect_served}")
    want = f"({expect_served} viewers from {host})"
    wrong = sorted({f"{r['code']}: {r['message']!r}" for r in refused
                    if r["code"] != "RESOURCE_EXHAUSTED" or want not in (r["message"] or "")})
    for w in wrong:
        fails.append(f"refused with {w}, want RESOURCE_EXHAUSTED naming {want}")
    other = viewers - len(served) - len(refused)
    if other:
        fails.append(f"{other} viewers ended with neither a frame nor a refusal")
    first_done = min((r["done_s"] for r in served), default=None)
    # A viewer queued behind HTTP/2's stream limit gets its answer only when a stream ends.
    late = [r for r in served if r["first_s"] > first_done]
    late += [r for r in refused if first_done is not None and r["refused_s"] > first_done]
    if late:
        fails.append(f"{len(late)} viewers got their first frame or refusal only after a served "
                     "viewer had finished (queued, not answered at once)")
    return fails


def main():
    p = argparse.ArgumentParser()
    p.add_argument("target")
    # "seed" is the tutorial API's old name.
    p.add_argument("--contract", choices=["v1", "tutorial", "seed"], default="v1")
    p.add_argument("--fps", type=float, default=10)
    p.add_argument("--duration", type=float, default=30)
    p.add_argument("--pause", type=float, default=0)
    p.add_argument("--viewers", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--check-lag", type=int, default=None)
    p.add_argument("--expect-served", type=int, default=None)
    args = p.parse_args()
    if args.contract == "seed":
        args.contract = "tutorial"
    with tempfile.TemporaryDirectory() as tmp:
        generate_stubs(pathlib.Path(tmp))
        import grpc
        import webcam_streaming_pb2 as tutorial
        import webcam_streaming_pb2_grpc as tutorial_grpc
        from camcast.v1 import camera_pb2 as v1
        from camcast.v1 import camera_pb2_grpc as v1_grpc
        mods = (grpc, tutorial, tutorial_grpc, v1, v1_grpc)
        if args.viewers:
            result = run_many(mods, args, args.target)
        else:
            reference = Reference(grpc, v1, v1_grpc, args.target)
            time.sleep(1)  # the reference is reading before the measured viewer starts
            result = run_one(mods, args, args.target, reference)
            reference.close()
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    if args.viewers:
        fails = result.get("admission_failures") or []
        for f in fails:
            print(f"FAIL: {f}")
        return 1 if fails else 0
    if args.check_lag is None:
        return 0
    lag = result.get("lag_max_after_pause" if args.pause else "lag_max_last_10s")
    if lag is None or lag > args.check_lag or result["skipped_total"] == 0:
        print(f"FAIL: lag {lag} frames (at most {args.check_lag}), "
              f"{result['skipped_total']} skipped (want > 0)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
