#!/usr/bin/env python3
"""A plaintext HTTP/2 relay that logs the flow-control frames a client sends, for studying what
a real client (stock grpcio, a tonic program) tells the server about its reads.

    h2_tap.py LISTEN_PORT SERVER_HOST:SERVER_PORT [--ping-ms N] [--quiet]

Client to server it logs SETTINGS, WINDOW_UPDATE and PING frames with a time stamp and, per
stream, U = DATA bytes the server sent on that stream minus the credit the client returned.
With --ping-ms N it also slips a PING of its own into the server-to-client direction every N
ms (between frames) and swallows the client's ACKs of them, which shows whether a client
flushes credits it holds when it answers a PING. A research tool, not part of the product.
"""
import socket
import struct
import sys
import threading
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TAP_PING = b"camtap!!"
T0 = time.monotonic()


def now_ms():
    return (time.monotonic() - T0) * 1000


class Conn:
    def __init__(self, client, server, ping_ms, quiet):
        self.client, self.server = client, server
        self.lock = threading.Lock()  # writes to the client (frames and injected pings)
        self.sent = {}
        self.credit = {}
        self.ping_ms, self.quiet = ping_ms, quiet
        self.open = True

    def log(self, msg):
        print(f"{now_ms():10.1f} {msg}", flush=True)

    def u(self, sid):
        return self.sent.get(sid, 0) - self.credit.get(sid, 0)


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def frames(sock):
    while True:
        head = read_exact(sock, 9)
        length = int.from_bytes(head[:3], "big")
        ftype, flags = head[3], head[4]
        sid = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        payload = read_exact(sock, length) if length else b""
        yield head, ftype, flags, sid, payload


def client_to_server(c):
    c.server.sendall(read_exact(c.client, len(PREFACE)))
    for head, ftype, flags, sid, payload in frames(c.client):
        if ftype == 8:  # WINDOW_UPDATE
            inc = int.from_bytes(payload, "big") & 0x7FFFFFFF
            if sid:
                c.credit[sid] = c.credit.get(sid, 0) + inc
                c.log(f"WINDOW_UPDATE stream {sid} +{inc}  U={c.u(sid)}")
            elif not c.quiet:
                c.log(f"WINDOW_UPDATE conn +{inc}")
        elif ftype == 4 and not flags & 1:
            entries = [struct.unpack(">HI", payload[i:i + 6]) for i in range(0, len(payload), 6)]
            c.log(f"SETTINGS {entries}")
        elif ftype == 6:
            if flags & 1 and payload == TAP_PING:
                continue  # our own ping's ACK: the server never sent that ping
            if not c.quiet:
                c.log(f"PING {'ACK' if flags & 1 else ''} {payload.hex()}")
        elif ftype == 1 and not c.quiet:
            c.log(f"HEADERS stream {sid}")
        c.server.sendall(head + payload)


def server_to_client(c):
    for head, ftype, flags, sid, payload in frames(c.server):
        if ftype == 0:
            c.sent[sid] = c.sent.get(sid, 0) + len(payload)
        with c.lock:
            c.client.sendall(head + payload)


def pinger(c):
    ping = (8).to_bytes(3, "big") + bytes([6, 0]) + (0).to_bytes(4, "big") + TAP_PING
    while c.open:
        time.sleep(c.ping_ms / 1000)
        with c.lock:
            try:
                c.client.sendall(ping)
            except OSError:
                return


def serve(listen_port, target, ping_ms, quiet):
    host, port = target.rsplit(":", 1)
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", listen_port))
    lsock.listen()
    while True:
        client, _ = lsock.accept()
        server = socket.create_connection((host, int(port)))
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = Conn(client, server, ping_ms, quiet)
        c.log("connection")

        def run(fn, c=c):
            try:
                fn(c)
            except (EOFError, OSError):
                pass
            c.open = False
            for s in (c.client, c.server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=run, args=(client_to_server,), daemon=True).start()
        threading.Thread(target=run, args=(server_to_client,), daemon=True).start()
        if ping_ms:
            threading.Thread(target=pinger, args=(c,), daemon=True).start()


def main():
    args = sys.argv[1:]
    ping_ms = 0
    if "--ping-ms" in args:
        i = args.index("--ping-ms")
        ping_ms = float(args[i + 1])
        del args[i:i + 2]
    quiet = "--quiet" in args
    args = [a for a in args if a != "--quiet"]
    serve(int(args[0]), args[1], ping_ms, quiet)


if __name__ == "__main__":
    main()
