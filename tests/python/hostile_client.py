#!/usr/bin/env python3
"""A hostile client against a running camcast: every value the server takes from the network,
at its extremes, then the server's invariants and a fresh stock viewer.

    hostile_client.py GRPC_ADDR HTTP_ADDR SERVER_PID [TOKEN]

What the server reads from the network (enumerated from src/grpc and src/http):
- gRPC: ClientName.clientName (tutorial API); StreamRequest.viewer_name and .max_fps,
  PullRequest.viewer_name and .max_fps (a request per frame), SnapshotRequest.viewer_name,
  GetInfoRequest (camcast.v1); the message bytes themselves;
  the `authorization` metadata.
- HTTP: the method, path and version; the query parameters `fps`, `name` and `token`; the
  headers `authorization` and `user-agent` (hyper parses the rest: Host, Content-Length,
  Transfer-Encoding, Expect, Range); the connection itself (idle, pipelined, cut).

Each probe must get a defined answer (an HTTP status other than 500, or a gRPC status other
than UNKNOWN, or the server closing the connection) and never hang. Afterwards, with nobody
watching: the viewer count is back to 0, capture has stopped after the linger, the process's
descriptors are back to their baseline, the panic count is 0, and a new stock grpcio viewer
and a new HTTP reader are served. With TOKEN given, the server has tokens on and the probes
also try the token's forms. Exits 1 with a list of what failed.
"""
import os
import pathlib
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

GRPC, HTTP, PID = sys.argv[1], sys.argv[2], int(sys.argv[3])
TOKEN = sys.argv[4] if len(sys.argv) > 4 else None
NAME_LIMIT = 64  # max_name_len's default
failures = []
checks = 0


def check(ok, what):
    global checks
    checks += 1
    if not ok:
        failures.append(what)
        print(f"FAIL {what}", flush=True)


def host_port(addr):
    host, port = addr.rsplit(":", 1)
    return host.strip("[]"), int(port)


# ---------------------------------------------------------------- gRPC

def stubs():
    out = pathlib.Path(tempfile.mkdtemp())
    proto = pathlib.Path(__file__).resolve().parents[2] / "proto"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto}", f"--python_out={out}",
         f"--grpc_python_out={out}", str(proto / "webcam_streaming.proto"),
         str(proto / "camcast/v1/camera.proto")],
        check=True)
    sys.path.insert(0, str(out))


stubs()
import grpc  # noqa: E402
import webcam_streaming_pb2 as seed_pb  # noqa: E402
import webcam_streaming_pb2_grpc as seed_grpc  # noqa: E402
from camcast.v1 import camera_pb2 as v1  # noqa: E402
from camcast.v1 import camera_pb2_grpc as v1_grpc  # noqa: E402

METADATA = [("authorization", f"Bearer {TOKEN}")] if TOKEN else []
# What a probe may end in besides OK. UNKNOWN would mean a handler failed without saying why;
# INTERNAL is what tonic answers for a message that does not decode.
# NOT_FOUND: a request naming a camera the server does not have.
DEFINED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
           grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAUTHENTICATED,
           grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED, grpc.StatusCode.NOT_FOUND}

channel = grpc.insecure_channel(GRPC)  # stock settings: grpcio's 4 MiB window
camera = v1_grpc.CameraStub(channel)
seed = seed_grpc.WebcamStreamingStub(channel)


def first_of(call):
    """The first message of a streaming call and the call's final status (OK if it streamed)."""
    try:
        msg = next(iter(call))
        call.cancel()
        return msg, grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return None, e.code(), e.details() or ""


# A refused request: its fields were wrong, or the message was over the request size limit.
REFUSED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
           grpc.StatusCode.OUT_OF_RANGE}


def answered(code, expect):
    return code in REFUSED if expect == grpc.StatusCode.INVALID_ARGUMENT else code == expect


def grpc_stream(what, call, expect):
    msg, code, details = first_of(call)
    check(answered(code, expect), f"{what}: got {code.name} ({details!r}), expected {expect.name}")
    if expect == grpc.StatusCode.OK:
        jpeg = getattr(msg, "jpeg", None) or getattr(msg, "imageBytes", b"")
        check(jpeg.startswith(b"\xff\xd8"), f"{what}: the frame is not a JPEG")


NAMES = {
    # label: (name, accepted)
    "empty": ("", True),
    "blank": ("   ", True),
    "ASCII at the limit": ("a" * NAME_LIMIT, True),
    "ASCII over the limit": ("a" * (NAME_LIMIT + 1), False),
    "2-byte UTF-8 at the limit": ("é" * (NAME_LIMIT // 2), True),
    "2-byte UTF-8 one over": ("é" * (NAME_LIMIT // 2) + "x", False),
    "4-byte UTF-8 at the limit": ("😀" * (NAME_LIMIT // 4), True),
    "4-byte UTF-8 over": ("😀" * (NAME_LIMIT // 4 + 1), False),
    "control characters": ("\x00\x07\n\r\x1b[2J\x7f", True),
    "bidi override": ("\u202eevil\u202c", True),
    "1 MiB": ("x" * (1 << 20), False),
}
# Camera names a request can carry (camcast.v1's `camera` field, /cam/NAME/ on HTTP), none of
# them a camera's: each must get NOT_FOUND / 404 naming the cameras (the empty name is the
# default camera's and is probed with the real names).
UNKNOWN_CAMERAS = {
    "unknown": "nope", "upper case of a real one": None, "64 ASCII": "a" * 64,
    "1 KiB": "a" * 1024, "multi-byte": "é" * 40, "control characters": "\x00\x07\n\x1b[2J",
    "path traversal": "../front", "bidi override": "\u202efront", "space": " ",
}
# max_fps is a float32 on the wire: 0 or 0.01..1000 are accepted.
RATES = {
    "0": (0.0, True), "-0": (-0.0, True), "smallest subnormal": (1e-45, False),
    "smallest normal": (1.1754944e-38, False), "just under the floor": (0.0099, False),
    "the floor": (0.01, True), "1": (1.0, True), "the ceiling": (1000.0, True),
    "just over the ceiling": (1000.1, False), "largest float": (3.4028235e38, False),
    "inf": (float("inf"), False), "-inf": (float("-inf"), False), "NaN": (float("nan"), False),
    "-1": (-1.0, False),
}


def grpc_probes():
    bad = grpc.StatusCode.INVALID_ARGUMENT
    ok = grpc.StatusCode.OK
    for label, (name, accepted) in NAMES.items():
        # A 1 MiB name is refused by the request size limit before the name check.
        expect = ok if accepted else bad
        grpc_stream(f"tutorial clientName {label}",
                    seed.StartWebcamStreaming(seed_pb.ClientName(clientName=name),
                                              metadata=METADATA, timeout=20), expect)
        grpc_stream(f"v1 viewer_name {label}",
                    camera.StreamFrames(v1.StreamRequest(viewer_name=name),
                                        metadata=METADATA, timeout=20), expect)
        grpc_stream(f"v1 PullFrames viewer_name {label}",
                    camera.PullFrames(iter([v1.PullRequest(viewer_name=name)]),
                                      metadata=METADATA, timeout=20), expect)
        try:
            camera.Snapshot(v1.SnapshotRequest(viewer_name=name), metadata=METADATA, timeout=20)
            code = ok
        except grpc.RpcError as e:
            code = e.code()
        check(answered(code, expect), f"v1 Snapshot viewer_name {label}: got {code.name}")
    for label, (fps, accepted) in RATES.items():
        grpc_stream(f"v1 max_fps {label}",
                    camera.StreamFrames(v1.StreamRequest(viewer_name="hostile", max_fps=fps),
                                        metadata=METADATA, timeout=20),
                    ok if accepted else bad)
        grpc_stream(f"v1 PullFrames max_fps {label}",
                    camera.PullFrames(iter([v1.PullRequest(viewer_name="hostile", max_fps=fps)]),
                                      metadata=METADATA, timeout=20),
                    ok if accepted else bad)
    if TOKEN:
        unauth = grpc.StatusCode.UNAUTHENTICATED
        for label, md in {"no metadata": [], "Bearer alone": [("authorization", "Bearer")],
                          "wrong token": [("authorization", "Bearer " + "x" * len(TOKEN))],
                          "token without scheme": [("authorization", TOKEN)],
                          "8 KiB": [("authorization", "Bearer " + "t" * 8192)]}.items():
            grpc_stream(f"tutorial API, {label}", seed.StartWebcamStreaming(
                seed_pb.ClientName(clientName="x"), metadata=md, timeout=20), unauth)
            grpc_stream(f"v1 StreamFrames, {label}", camera.StreamFrames(
                v1.StreamRequest(), metadata=md, timeout=20), unauth)
    camera_probes()
    raw_messages()
    vanishing_streams()


def camera_names():
    """The server's cameras, the default first (GetInfo's list)."""
    return [c.name for c in info().cameras]


def unknown_cameras():
    names = camera_names()
    return {label: name if name is not None else names[0].upper()
            for label, name in UNKNOWN_CAMERAS.items()}


def camera_calls(name):
    """Every camcast.v1 method, asked for camera `name`: (label, call that raises or returns)."""
    return [
        ("StreamFrames", lambda: first_of(camera.StreamFrames(
            v1.StreamRequest(viewer_name="hostile", camera=name), metadata=METADATA, timeout=20))),
        ("PullFrames", lambda: first_of(camera.PullFrames(
            iter([v1.PullRequest(viewer_name="hostile", camera=name)]), metadata=METADATA,
            timeout=20))),
        ("Snapshot", lambda: camera.Snapshot(
            v1.SnapshotRequest(viewer_name="hostile", camera=name), metadata=METADATA, timeout=20)),
        ("GetInfo", lambda: camera.GetInfo(
            v1.GetInfoRequest(camera=name), metadata=METADATA, timeout=10)),
    ]


def code_of(call):
    try:
        result = call()
    except grpc.RpcError as e:
        return e.code(), e.details()
    if isinstance(result, tuple):  # first_of: (message, code, details)
        return result[1], result[2]
    return grpc.StatusCode.OK, ""


def camera_probes():
    names = camera_names()
    check(len(names) >= 2, f"the hostile run serves several cameras (GetInfo lists {names})")
    for name in [""] + names:
        for method, call in camera_calls(name):
            code, details = code_of(call)
            check(code == grpc.StatusCode.OK, f"v1 {method} camera {name!r}: got {code.name} ({details!r})")
    for label, name in unknown_cameras().items():
        for method, call in camera_calls(name):
            code, details = code_of(call)
            # 1 KiB fits the request limit; NOT_FOUND's message names every camera.
            check(code == grpc.StatusCode.NOT_FOUND and all(n in details for n in names),
                  f"v1 {method} camera {label}: got {code.name} ({details[:120]!r})")


def raw_messages():
    """Bytes that are not the message they claim to be, on every method."""
    garbage = {
        "a lone 0xff": b"\xff",
        "truncated varint": b"\x15\x80",
        "length far past the end": b"\x0a\xff\xff\xff\xff\x0f",
        "wrong wire type for a string": b"\x0d\x00\x00\x00\x00",
        "invalid UTF-8 in a string": b"\x0a\x02\xff\xfe",
        "unknown field numbers": b"\xf8\xff\xff\xff\x0f\x01" * 50,
        "field number 0": b"\x02\x00",
    }
    ident = lambda b: b  # noqa: E731
    methods = {
        "/WebcamStreaming/StartWebcamStreaming": channel.unary_stream,
        "/camcast.v1.Camera/StreamFrames": channel.unary_stream,
        "/camcast.v1.Camera/PullFrames": channel.unary_stream,
        "/camcast.v1.Camera/Snapshot": channel.unary_unary,
        "/camcast.v1.Camera/GetInfo": channel.unary_unary,
        "/camcast.v1.Camera/NoSuchMethod": channel.unary_unary,
    }
    for path, kind in methods.items():
        call = kind(path, request_serializer=ident, response_deserializer=ident)
        for label, payload in garbage.items():
            try:
                result = call(payload, metadata=METADATA, timeout=20)
                if kind == channel.unary_stream:
                    next(iter(result))
                    result.cancel()
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                code = e.code()
            # Unknown fields are legal protobuf; so is an empty GetInfo.
            allowed = DEFINED | {grpc.StatusCode.OK, grpc.StatusCode.UNIMPLEMENTED}
            check(code in allowed, f"{path} with {label}: got {code.name}")


def vanishing_streams():
    """Bursts of streams cancelled at once, after one frame, and left to a short deadline."""
    calls = [camera.StreamFrames(v1.StreamRequest(viewer_name=f"burst{i}"), metadata=METADATA)
             for i in range(40)]
    for c in calls:
        c.cancel()
    for i in range(20):
        call = seed.StartWebcamStreaming(seed_pb.ClientName(clientName=f"one{i}"),
                                         metadata=METADATA)
        first_of(call)
    for i in range(20):
        try:
            for _ in camera.StreamFrames(v1.StreamRequest(viewer_name=f"deadline{i}"),
                                         metadata=METADATA, timeout=0.05):
                pass
        except grpc.RpcError:
            pass
    # Pull streams that flood requests (a request is a frame asked for), then vanish.
    for i in range(10):
        requests = iter([v1.PullRequest(viewer_name=f"flood{i}")] * 5000)
        call = camera.PullFrames(requests, metadata=METADATA)
        try:
            for n, _ in enumerate(call):
                if n == 20:
                    break
        except grpc.RpcError as e:
            # The server may close a connection that floods it (GOAWAY ENHANCE_YOUR_CALM):
            # grpcio reports UNAVAILABLE. A defined answer; the invariants judge the rest.
            check(e.code() in DEFINED | {grpc.StatusCode.UNAVAILABLE},
                  f"PullFrames request flood: {e.code().name} ({e.details()})")
        call.cancel()
    # A channel that vanishes with its streams open.
    lost = grpc.insecure_channel(GRPC)
    streams = [v1_grpc.CameraStub(lost).StreamFrames(v1.StreamRequest(viewer_name="lost"),
                                                     metadata=METADATA) for _ in range(10)]
    for s in streams[:3]:
        first_of(s)
    lost.close()


# ---------------------------------------------------------------- HTTP

def connect(addr, source="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(20)
    s.connect(host_port(addr))
    return s


def exchange(raw, read_limit=1 << 16):
    """Sends raw bytes on a new connection; returns what came back (until close, the limit or a
    quiet second once something arrived) and whether the server closed the connection."""
    s = connect(HTTP)
    try:
        s.sendall(raw)
    except OSError:
        return b"", True
    got, closed = b"", False
    deadline = time.monotonic() + 20
    while len(got) < read_limit and time.monotonic() < deadline:
        s.settimeout(0.3 if got else max(0.1, deadline - time.monotonic()))
        try:
            chunk = s.recv(read_limit - len(got))
        except socket.timeout:
            if got:
                break
            continue
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        got += chunk
    s.close()
    return got, closed


def status_of(reply):
    if not reply.startswith(b"HTTP/1."):
        return None
    return int(reply.split(b" ", 2)[1])


def request(target, method="GET", headers=(), body=b"", version="HTTP/1.1"):
    auth = [("Authorization", f"Bearer {TOKEN}")] if TOKEN else []
    lines = [f"{method} {target} {version}".encode(), b"Host: camcast"]
    for k, v in list(headers) + auth:
        lines.append(k.encode() + b": " + (v if isinstance(v, bytes) else v.encode()))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def http_probe(what, raw, expect=None):
    """expect: a set of acceptable statuses; None = any defined answer (not 500) or a close."""
    t0 = time.monotonic()
    reply, closed = exchange(raw)
    code = status_of(reply)
    took = time.monotonic() - t0
    if took > 3:
        print(f"note: HTTP {what} took {took:.1f} s (status {code}, closed {closed})", flush=True)
    if code is None:
        check(closed, f"HTTP {what}: no status and the connection was left open ({reply[:60]!r})")
        return None, reply
    check(code != 500, f"HTTP {what}: 500")
    if expect is not None:
        check(code in expect, f"HTTP {what}: status {code}, expected one of {sorted(expect)}")
    return code, reply


def q(value):
    return urllib.parse.quote(value, safe="")


def http_probes():
    stream_ok = {200}
    fps = {"1e-30": 400, "-1": 400, "NaN": 400, "nan": 400, "inf": 400, "-inf": 400,
           "1e309": 400, "": 400, "abc": 400, "0x10": 400, "0.0099": 400, "1e-320": 400,
           "0.01": 200, "1000": 200, "1000.1": 400, "0": 200, "-0": 200, "%00": 400,
           "5&fps=6": None}
    for value, status in fps.items():
        http_probe(f"/stream.mjpg?fps={value}", request(f"/stream.mjpg?fps={value}"),
                   None if status is None else {status})
    names = {"ASCII at the limit": (q("a" * NAME_LIMIT), 200),
             "ASCII over": (q("a" * (NAME_LIMIT + 1)), 400),
             "2-byte at the limit": (q("é" * (NAME_LIMIT // 2)), 200),
             "2-byte over": (q("é" * (NAME_LIMIT // 2) + "x"), 400),
             # Form decoding is lossy (WHATWG): invalid UTF-8 becomes U+FFFD, as in browsers.
             "invalid UTF-8": ("%FF%FE", 200), "control characters": ("%00%07%1B%0A", 200),
             "empty": ("", 200), "8 KiB": ("x" * 8192, 400)}
    for label, (value, status) in names.items():
        for path in ("/stream.mjpg", "/snapshot.jpg"):
            http_probe(f"{path}?name= {label}", request(f"{path}?name={value}"), {status})
    for name in camera_names():
        for path in ("/", "stream.mjpg", "snapshot.jpg", "info.json", "healthz"):
            target = f"/cam/{q(name)}/{path.lstrip('/')}"
            http_probe(f"GET {target}", request(target), {200})
    for label, name in unknown_cameras().items():
        for path in ("", "stream.mjpg", "snapshot.jpg", "info.json", "healthz"):
            http_probe(f"/cam/<{label}>/{path}", request(f"/cam/{q(name)}/{path}"), {404})
    for raw in ("/cam//stream.mjpg", "/cam/%FF%FE/stream.mjpg", "/cam/%00/snapshot.jpg",
                "/cam/" + "a" * 20000 + "/stream.mjpg", "/cam/front/../door/stream.mjpg",
                "/cam/front/stream.mjpg/extra"):
        # Not a camera's name, or not UTF-8 (400), or longer than hyper takes (414/431).
        http_probe(f"path {raw[:40]!r}", request(raw), {400, 404, 414, 431})
    for path in ("/", "/info.json", "/healthz", "/metrics"):
        http_probe(f"{path} with junk query", request(path + "?fps=nan&name=%FF&token=%00&x"),
                   {200, 400, 503})
    # Paths.
    for path in ("//stream.mjpg", "/stream.mjpg/", "/../../etc/passwd", "/%2e%2e/etc/passwd",
                 "/snapshot.jpg%00", "/" + "a" * 20000, "/%", "*", "http://x/stream.mjpg",
                 "/cam/../stream.mjpg", "/\x01"):
        http_probe(f"path {path[:40]!r}", request(path))
    # Methods.
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "CONNECT", "TRACE", "PATCH", "GARBAGE",
                   "get"):
        http_probe(f"{method} /stream.mjpg", request("/stream.mjpg", method=method))
    http_probe("HEAD /snapshot.jpg", request("/snapshot.jpg", method="HEAD"), {200})
    http_probe("HEAD /stream.mjpg", request("/stream.mjpg", method="HEAD"), {200})
    http_probe("POST with a body", request("/snapshot.jpg", method="POST",
               headers=[("Content-Length", "5")], body=b"hello"))
    # Versions and other protocols on the HTTP port.
    http_probe("HTTP/1.0", request("/snapshot.jpg", version="HTTP/1.0"), {200})
    http_probe("HTTP/9.9", request("/snapshot.jpg", version="HTTP/9.9"))
    http_probe("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00" * 30)
    http_probe("TLS ClientHello", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + os.urandom(64))
    http_probe("binary noise", os.urandom(4096))
    # Headers.
    many = [(f"X-H{i}", "v") for i in range(100)]
    http_probe("100 headers", request("/snapshot.jpg", headers=many))
    http_probe("1000 headers", request("/snapshot.jpg", headers=[(f"X-H{i}", "v")
                                                                 for i in range(1000)]))
    http_probe("a 20 KiB header", request("/snapshot.jpg", headers=[("X-Big", "v" * 20480)]))
    http_probe("Expect: 100-continue", request("/snapshot.jpg", headers=[("Expect", "100-continue")]),
               {200, 417})
    http_probe("POST, Expect: 100-continue, no body", request(
        "/snapshot.jpg", method="POST", headers=[("Expect", "100-continue"),
                                                 ("Content-Length", "10")]))
    http_probe("Range on the snapshot", request("/snapshot.jpg", headers=[("Range", "bytes=0-10")]),
               {200, 206})
    http_probe("Range on the stream", request("/stream.mjpg", headers=[("Range", "bytes=-1")]),
               {200, 206, 416})
    http_probe("Content-Length -1", request("/snapshot.jpg", headers=[("Content-Length", "-1")]))
    http_probe("Content-Length 2^70", request("/snapshot.jpg",
               headers=[("Content-Length", str(2 ** 70))]))
    http_probe("two Content-Lengths", request("/snapshot.jpg", method="POST", headers=[
        ("Content-Length", "3"), ("Content-Length", "4")], body=b"abcd"))
    http_probe("bad chunked body", request("/snapshot.jpg", method="POST", headers=[
        ("Transfer-Encoding", "chunked")], body=b"zz\r\nhello\r\n0\r\n\r\n"))
    http_probe("no Host", b"GET /snapshot.jpg HTTP/1.1\r\n\r\n")
    # RFC 9110 field values hold no control characters: hyper answers 400 before camcast sees them.
    for label, (ua, status) in {"empty": (b"", 200), "control bytes": (b"\x01\x02x", 400),
                                "non-UTF-8": (b"\xff\xfe", 200), "8 KiB": (b"U" * 8192, 200),
                                "multi-byte": ("Ä" * 40 + " x", 200)}.items():
        http_probe(f"User-Agent {label}", request("/stream.mjpg", headers=[("User-Agent", ua)]),
                   {status})
    for label, auth in {"empty": b"", "Bearer alone": b"Bearer", "two spaces": b"Bearer  x",
                        "lower-case scheme": b"bearer x", "Basic": b"Basic YTpi",
                        "non-UTF-8": b"Bearer \xff\xfe", "8 KiB": b"Bearer " + b"t" * 8192}.items():
        # Without tokens the header is ignored; with them each of these is wrong.
        lines = [b"GET /snapshot.jpg HTTP/1.1", b"Host: camcast", b"Authorization: " + auth]
        http_probe(f"Authorization {label}", b"\r\n".join(lines) + b"\r\n\r\n",
                   {401} if TOKEN else {200})
    if TOKEN:
        http_probe("?token= right", request("/snapshot.jpg?token=" + q(TOKEN)), {200})
        for label, value in {"empty": "", "wrong": "x" * 32, "NUL": "%00",
                             "invalid UTF-8": "%FF", "twice": q(TOKEN) + "&token=x"}.items():
            raw = f"GET /snapshot.jpg?token={value} HTTP/1.1\r\nHost: c\r\n\r\n".encode()
            http_probe(f"?token= {label}", raw, {401, 200} if label == "twice" else {401})
    pipelined()
    cut_connections()


def pipelined():
    one = request("/snapshot.jpg")
    reply, _ = exchange(one * 3, read_limit=1 << 22)
    check(reply.count(b"HTTP/1.1 200") == 3,
          f"3 pipelined snapshots: {reply.count(b'HTTP/1.1 200')} answers")
    reply, _ = exchange(request("/stream.mjpg") + one, read_limit=1 << 16)
    check(status_of(reply) == 200, "a stream with a request pipelined behind it")


def cut_connections():
    """Half requests, and streams cut mid-part with a reset."""
    for raw in (b"GET /stream.mj", b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n",
                b"POST /snapshot.jpg HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc"):
        s = connect(HTTP)
        s.sendall(raw)
        s.close()
    for i in range(50):
        s = connect(HTTP)
        s.sendall(request(f"/stream.mjpg?name=cut{i}"))
        s.recv(3000 if i % 2 else 200)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


# ---------------------------------------------------------------- idle connections

def idle_flood_while_a_viewer_watches():
    """More idle connections than the per-address cap, on both ports, from 127.0.0.2. Meanwhile
    a viewer from 127.0.0.1 must be served, and the server must close every idle one."""
    idle = []
    for addr in (GRPC, HTTP):
        for _ in range(40):
            try:
                idle.append(connect(addr, source="127.0.0.2"))
            except OSError:
                pass
    got = 0
    for _ in seed.StartWebcamStreaming(seed_pb.ClientName(clientName="during-flood"),
                                       metadata=METADATA, timeout=30):
        got += 1
        if got == 10:
            break
    check(got == 10, f"a viewer during an idle flood got {got} of 10 frames")
    open_after = 0
    for s in idle:
        s.settimeout(60)  # the handshake timeout (10 s by default) must close them first
        try:
            while s.recv(4096):
                pass
        except socket.timeout:
            open_after += 1
        except OSError:
            pass
        s.close()
    check(open_after == 0, f"{open_after} idle connections were never closed by the server")


# ---------------------------------------------------------------- invariants

def info():
    return camera.GetInfo(v1.GetInfoRequest(), metadata=METADATA, timeout=10)


def fds():
    return len(os.listdir(f"/proc/{PID}/fd"))


def settle(what, probe, limit=40):
    """Waits up to `limit` s for `probe` to return a true value; the last value either way."""
    deadline = time.monotonic() + limit
    value = probe()
    while not value and time.monotonic() < deadline:
        time.sleep(0.25)
        value = probe()
    return value


def idle_state():
    """Idle on every camera: no viewer, no capture."""
    r = info()
    busy = [c.name for c in r.cameras if c.viewers or c.capturing]
    return (not busy and not r.viewers and not r.capturing), r


def baseline():
    # Warm up every lazily-made resource once (capture thread, HTTP and gRPC connections).
    first_of(seed.StartWebcamStreaming(seed_pb.ClientName(clientName="warm-up"),
                                       metadata=METADATA))
    exchange(request("/snapshot.jpg"), read_limit=1 << 22)
    for name in camera_names():
        camera.Snapshot(v1.SnapshotRequest(viewer_name="warm-up", camera=name),
                        metadata=METADATA, timeout=20)
    settle("idle", lambda: idle_state()[0])
    return fds()


def invariants(base):
    ok = settle("idle", lambda: idle_state()[0])
    r = info()
    check(ok, f"not idle afterwards: {len(r.viewers)} viewers "
              f"({[v.name for v in r.viewers][:5]}), capturing={r.capturing}; every camera: "
              f"{[(c.name, len(c.viewers), c.capturing) for c in r.cameras]}")
    now = settle("fds", lambda: fds() <= base and fds())
    check(now and now <= base, f"descriptors: {fds()} now, {base} before")
    check(r.counters.panics == 0, f"{r.counters.panics} panics")
    got = 0
    fresh = grpc.insecure_channel(GRPC)
    for msg in seed_grpc.WebcamStreamingStub(fresh).StartWebcamStreaming(
            seed_pb.ClientName(clientName="after"), metadata=METADATA, timeout=30):
        got += msg.imageBytes.startswith(b"\xff\xd8")
        if got == 10:
            break
    fresh.close()
    check(got == 10, f"a new stock viewer afterwards got {got} of 10 JPEGs")
    reply, _ = exchange(request("/stream.mjpg"), read_limit=1 << 16)
    check(status_of(reply) == 200 and b"\xff\xd8" in reply, "a new HTTP reader afterwards")


def main():
    base = baseline()
    print(f"baseline: {base} descriptors", flush=True)
    stages = [("gRPC", grpc_probes), ("HTTP", http_probes),
              ("idle flood", idle_flood_while_a_viewer_watches)]
    for name, stage in stages:
        t0 = time.monotonic()
        stage()
        print(f"{name} probes done ({time.monotonic() - t0:.0f} s)", flush=True)
    # Both at once: gRPC probes while HTTP streams are cut around them.
    threads = [threading.Thread(target=cut_connections), threading.Thread(target=vanishing_streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    invariants(base)
    print(f"{checks} checks, {len(failures)} failed", flush=True)
    for f in failures:
        print(f"  - {f}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
