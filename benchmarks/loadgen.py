"""A closed-loop HTTP/1.1 load client in plain Python: ``clients`` keep-alive connections,
each sending its next ``GET`` as soon as the last answer is in.

    python -m benchmarks.loadgen --port 8000 --clients 300 --seconds 5 [--honour-retry-after]

Refused clients (503) retry at once, as many real clients and load balancers do; with
``--honour-retry-after`` they wait the ``Retry-After`` seconds first. One thread, one
``selectors`` loop, raw sockets: no wrk needed, and about 30 µs of client CPU per request.
It prints one JSON object: answers by status within the measured window (after
``--warm`` seconds), latencies of successes and of refusals, requests still unanswered
at the end, and the client's own CPU seconds (to show it was not the bottleneck).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import selectors
import socket
import sys
import time
from typing import Dict, List, Optional

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


class Client:
    __slots__ = ("sock", "sent", "buffer", "waiting")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent = 0.0
        self.buffer = b""
        self.waiting = False  # a request is out


def _parse(buffer: bytes):
    """``(status, retry_after, consumed)`` of the first whole response, or ``None``."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buffer[:end].lower()
    length = 0
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17:stop if stop >= 0 else None])
    if len(buffer) < end + 4 + length:
        return None
    retry_after = 0.0
    at = head.find(b"\r\nretry-after:")
    if at >= 0:
        stop = head.find(b"\r\n", at + 2)
        retry_after = float(head[at + 14:stop if stop >= 0 else None])
    return int(buffer[9:12]), retry_after, end + 4 + length


def run(port: int, clients: int, seconds: float, warm: float,
        honour_retry_after: bool) -> Dict[str, object]:
    selector = selectors.DefaultSelector()
    conns: List[Client] = []
    for _ in range(clients):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        client = Client(sock)
        conns.append(client)
        selector.register(sock, selectors.EVENT_READ, client)
    timers: list = []  # (when, id, client): clients sleeping out a Retry-After
    begin = time.monotonic()
    start, stop = begin + warm, begin + warm + seconds
    ok: List[float] = []
    refused: List[float] = []
    other: Dict[int, int] = {}
    errors = 0
    cpu_before = os.times()

    def send(client: Client, now: float) -> None:
        client.sent = now
        client.waiting = True
        client.buffer = b""
        client.sock.send(REQUEST)

    now = time.monotonic()
    for client in conns:
        send(client, now)
    while True:
        now = time.monotonic()
        if now >= stop:
            break
        while timers and timers[0][0] <= now:
            _, _, client = heapq.heappop(timers)
            send(client, now)
        wait = stop - now
        if timers:
            wait = min(wait, max(0.0, timers[0][0] - now))
        for key, _ in selector.select(wait):
            client = key.data
            try:
                data = client.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            now = time.monotonic()
            if not data:  # the server closed: count it, reconnect, go on
                errors += 1
                selector.unregister(client.sock)
                client.sock.close()
                client.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                client.sock.setblocking(False)
                selector.register(client.sock, selectors.EVENT_READ, client)
                send(client, now)
                continue
            client.buffer += data
            parsed = _parse(client.buffer)
            if parsed is None:
                continue
            status, retry_after, _ = parsed
            client.waiting = False
            if now >= start:
                latency = now - client.sent
                if status == 200:
                    ok.append(latency)
                elif status == 503:
                    refused.append(latency)
                else:
                    other[status] = other.get(status, 0) + 1
            if status == 503 and honour_retry_after and retry_after > 0:
                heapq.heappush(timers, (now + retry_after, id(client), client))
            else:
                send(client, now)
    cpu_after = os.times()
    unanswered = sum(1 for client in conns if client.waiting)
    for client in conns:
        client.sock.close()
    ok.sort()
    refused.sort()
    return {
        "seconds": seconds, "clients": clients, "ok": len(ok), "refused": len(refused),
        "other": other, "errors": errors, "unanswered": unanswered,
        "ok_p50": _pct(ok, 0.50), "ok_p99": _pct(ok, 0.99), "ok_max": ok[-1] if ok else None,
        "refused_p50": _pct(refused, 0.50), "refused_p99": _pct(refused, 0.99),
        "client_cpu": (cpu_after.user + cpu_after.system
                       - cpu_before.user - cpu_before.system),
    }


def _pct(ordered: List[float], fraction: float) -> Optional[float]:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warm", type=float, default=1.0,
                        help="seconds of load before the measured window")
    parser.add_argument("--honour-retry-after", action="store_true")
    args = parser.parse_args(argv)
    json.dump(run(args.port, args.clients, args.seconds, args.warm,
                  args.honour_retry_after), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
