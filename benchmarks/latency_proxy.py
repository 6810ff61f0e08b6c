"""A TCP proxy that adds latency, and counts the statements a client sends through it.

Most deployments have 0.2-1 ms between the app and its database; on one machine it is
about 0.05 ms. This proxy puts the distance back::

    with LatencyProxy(("127.0.0.1", 5432), delay=0.0005, protocol="postgresql") as proxy:
        url = proxy.url_for("postgresql://postgres@127.0.0.1:5432/test")
        ...                          # every round trip now costs about 1 ms more
        proxy.counts()               # {"statements": ..., "round_trips": ..., ...}

Each chunk read from either side is written to the other ``delay`` seconds after it was
read, whatever else is in flight: a reader and a writer thread per direction, so a reply
that arrives in several pieces is delayed once, not once per piece, and bandwidth is not
throttled. A new connection waits one round trip (``2 × delay``) before it reaches the
server, as a TCP handshake would. ``time.sleep`` overshoots by the kernel's timer slack
and a thread's wake-up (0.05-0.1 ms here): the proxy measures the least overshoot once
and sleeps that much less, so a round trip costs ``2 × delay`` plus about a tenth of a
millisecond. ``python -m benchmarks.latency_proxy`` measures it, direct and through the
proxy.

With ``protocol`` set, the client's side is parsed as it passes, which is exact and
needs nothing from the server:

- ``"postgresql"``: a statement is a simple ``Query`` or an extended-protocol
  ``Execute`` (a prepared statement run again sends no ``Parse``); a round trip is a
  ``Query`` or a ``Sync``. The server must not be asked for TLS (``sslmode=disable``,
  or a server without SSL): encrypted traffic cannot be read, and is then reported as
  ``encrypted``.
- ``"mysql"``: every command packet (sequence number 0) is counted by command; a
  statement is a ``COM_QUERY`` or ``COM_STMT_EXECUTE``; a round trip is any command
  that gets a reply (``COM_QUIT``, ``COM_STMT_CLOSE`` and ``COM_STMT_SEND_LONG_DATA``
  get none), ``COM_PING`` included.

:meth:`counts` also breaks the statements down by their first word (``SELECT``,
``ROLLBACK``, ``BEGIN``, ``(empty)``...), so a report can say what a pool sent.

Sockets are closed and threads joined, with a bound, by :meth:`close`.
"""

from __future__ import annotations

import collections
import queue
import socket
import struct
import threading
import time
from typing import Counter, Dict, List, Optional, Tuple

_CHUNK = 65536
_EOF = None  # queued after the last chunk: shut the other side's writing half

# PostgreSQL request codes sent in place of a startup message.
_PG_PROTOCOL_3 = 196608
_PG_SSL_REQUEST = 80877103
_PG_GSSENC_REQUEST = 80877104
_PG_CANCEL_REQUEST = 80877102

_MYSQL_COMMANDS = {
    0x01: "COM_QUIT", 0x02: "COM_INIT_DB", 0x03: "COM_QUERY", 0x0E: "COM_PING",
    0x11: "COM_CHANGE_USER", 0x16: "COM_STMT_PREPARE", 0x17: "COM_STMT_EXECUTE",
    0x18: "COM_STMT_SEND_LONG_DATA", 0x19: "COM_STMT_CLOSE", 0x1A: "COM_STMT_RESET",
    0x1B: "COM_SET_OPTION", 0x1F: "COM_RESET_CONNECTION",
}
_MYSQL_NO_REPLY = {"COM_QUIT", "COM_STMT_CLOSE", "COM_STMT_SEND_LONG_DATA"}


def first_word(sql: bytes) -> str:
    """``SELECT`` for ``b" select name FROM t"``; ``(empty)`` for an empty statement."""
    words = sql.strip(b" \t\r\n;(").split(None, 1)
    return words[0].decode("ascii", "replace").upper() if words else "(empty)"


class _Counter:
    """What one connection's client sent: counts by message, statements by first word."""

    def __init__(self) -> None:
        self.messages: Counter[str] = collections.Counter()
        self.statements: Counter[str] = collections.Counter()
        self.encrypted = False

    def feed(self, data: bytes) -> None:
        pass

    def server_said(self, data: bytes) -> None:
        pass


class _PostgreSQLCounter(_Counter):
    """Parse the frontend side of the PostgreSQL protocol (version 3)."""

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()
        self._startup = True
        self._awaiting_tls_answer = False
        self._prepared: Dict[bytes, str] = {}  # statement name -> first word
        self._portals: Dict[bytes, str] = {}  # portal name -> first word

    def feed(self, data: bytes) -> None:
        if self.encrypted:
            return
        buffer = self._buffer
        buffer += data
        at = 0
        while True:
            if self._startup:
                if len(buffer) - at < 8:
                    break
                length, code = struct.unpack_from("!ii", buffer, at)
                if len(buffer) - at < length:
                    break
                if code == _PG_PROTOCOL_3:
                    self._startup = False
                    self.messages["startup"] += 1
                elif code in (_PG_SSL_REQUEST, _PG_GSSENC_REQUEST):
                    self.messages["encryption request"] += 1
                    self._awaiting_tls_answer = True
                elif code == _PG_CANCEL_REQUEST:
                    self.messages["cancel"] += 1
                at += length
                continue
            if len(buffer) - at < 5:
                break
            kind = chr(buffer[at])
            (length,) = struct.unpack_from("!i", buffer, at + 1)
            if len(buffer) - at < 1 + length:
                break
            body = bytes(buffer[at + 5:at + 1 + length])
            at += 1 + length
            self.messages[kind] += 1
            if kind == "Q":
                self.statements[first_word(body.split(b"\0", 1)[0])] += 1
            elif kind == "P":  # Parse: name \0 query \0 ...
                name, query = body.split(b"\0", 2)[:2]
                self._prepared[name] = first_word(query)
            elif kind == "B":  # Bind: portal \0 statement \0 ...
                portal, statement = body.split(b"\0", 2)[:2]
                self._portals[portal] = self._prepared.get(statement, "(unknown)")
            elif kind == "E":  # Execute: portal \0 max rows
                portal = body.split(b"\0", 1)[0]
                self.statements[self._portals.get(portal, "(unknown)")] += 1
        del buffer[:at]

    def server_said(self, data: bytes) -> None:
        if self._awaiting_tls_answer and data:
            self._awaiting_tls_answer = False
            if data[:1] in (b"S", b"G"):  # the rest is encrypted: nothing more to read
                self.encrypted = True
                self._buffer.clear()

    @property
    def statement_count(self) -> int:
        return self.messages["Q"] + self.messages["E"]

    @property
    def round_trip_count(self) -> int:
        return self.messages["Q"] + self.messages["S"]


class _MySQLCounter(_Counter):
    """Parse the client side of the MySQL/MariaDB protocol: its command packets."""

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        at = 0
        while len(buffer) - at >= 4:
            length = buffer[at] | buffer[at + 1] << 8 | buffer[at + 2] << 16
            sequence = buffer[at + 3]
            if len(buffer) - at < 4 + length:
                break
            if sequence == 0 and length:  # a new command (replies to the server: seq > 0)
                command = buffer[at + 4]
                name = _MYSQL_COMMANDS.get(command, f"COM_0x{command:02x}")
                self.messages[name] += 1
                if name == "COM_QUERY":
                    self.statements[first_word(bytes(buffer[at + 5:at + 4 + length]))] += 1
                elif name == "COM_STMT_EXECUTE":
                    self.statements["(prepared)"] += 1
            at += 4 + length
        del buffer[:at]

    @property
    def statement_count(self) -> int:
        return self.messages["COM_QUERY"] + self.messages["COM_STMT_EXECUTE"]

    @property
    def round_trip_count(self) -> int:
        return sum(n for name, n in self.messages.items() if name not in _MYSQL_NO_REPLY)


_COUNTERS = {"postgresql": _PostgreSQLCounter, "mysql": _MySQLCounter, None: _Counter}


_overshoot: Dict[float, float] = {}


def sleep_overshoot(delay: float, samples: int = 25) -> float:
    """The least ``time.sleep(delay)`` oversleeps here, in seconds (measured once).

    The least, not the median: a busy machine only adds to it, so waking this much
    early never delivers a chunk before it is due, however loaded the machine was
    when it was measured."""
    if delay not in _overshoot:
        late = []
        for _ in range(samples):
            started = time.monotonic()
            time.sleep(delay)
            late.append(time.monotonic() - started - delay)
        _overshoot[delay] = max(0.0, min(min(late), delay / 5))
    return _overshoot[delay]


class _Pipe:
    """One direction of one connection: a reader queues each chunk, a writer sends it late."""

    def __init__(self, source: socket.socket, sink: socket.socket, delay: float,
                 early: float, seen, name: str) -> None:
        self.source, self.sink, self.delay, self.seen = source, sink, delay, seen
        self.early = early  # wake this much before a chunk is due: sleep oversleeps
        self.sent = 0  # chunks written
        self.late = 0.0  # seconds, summed over them: how far past due each went out
        self.chunks: "queue.SimpleQueue[Optional[Tuple[float, bytes]]]" = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._read, name=f"{name}-read", daemon=True),
                        threading.Thread(target=self._write, name=f"{name}-write", daemon=True)]
        for thread in self.threads:
            thread.start()

    def _read(self) -> None:
        try:
            while True:
                data = self.source.recv(_CHUNK)
                if not data:
                    break
                self.chunks.put((time.monotonic() + self.delay, data))
                self.seen(data)
        except OSError:
            pass
        finally:
            self.chunks.put(_EOF)

    def _write(self) -> None:
        try:
            while True:
                item = self.chunks.get()
                if item is _EOF:
                    break
                due, data = item
                wait = due - time.monotonic() - self.early
                if wait > 0:
                    time.sleep(wait)
                self.late += time.monotonic() - due
                self.sent += 1
                self.sink.sendall(data)
        except OSError:
            pass
        finally:
            try:
                self.sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass


class LatencyProxy:
    """Forward 127.0.0.1:<ephemeral> to ``target``, ``delay`` seconds late each way."""

    def __init__(self, target: Tuple[str, int], *, delay: float = 0.0005,
                 protocol: Optional[str] = None, join_timeout: float = 5.0) -> None:
        if protocol not in _COUNTERS:
            raise ValueError(f"protocol must be 'postgresql', 'mysql' or None, not {protocol!r}")
        if not 0 <= delay < 1:
            raise ValueError(f"delay must be in seconds, 0 <= delay < 1, not {delay!r}")
        self.target, self.delay, self.protocol = target, delay, protocol
        self.join_timeout = join_timeout
        self._early = sleep_overshoot(delay) if delay else 0.0
        self._lock = threading.Lock()
        self._closing = False
        self._counters: List[_Counter] = []
        self._sockets: List[socket.socket] = []
        self._pipes: List[_Pipe] = []
        self.accepted = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.host, self.port = self._listener.getsockname()
        self._thread = threading.Thread(target=self._accept, name=f"latency-proxy:{self.port}",
                                        daemon=True)
        self._thread.start()

    def url_for(self, url: str) -> str:
        """``url`` with its ``host:port`` replaced by this proxy's."""
        scheme, rest = url.split("://", 1)
        authority, sep, tail = rest.partition("/")
        userinfo, at, _ = authority.rpartition("@")
        return f"{scheme}://{userinfo}{at}{self.host}:{self.port}{sep}{tail}"

    def counts(self) -> Dict[str, object]:
        """Totals over every connection so far: ``statements``, ``round_trips``,
        ``connections``, ``by_statement`` (first word -> count), ``messages`` (by kind),
        ``encrypted`` (connections that could not be read), ``chunks`` forwarded and
        ``late`` (seconds past due, summed over them: the proxy's own lag)."""
        with self._lock:
            counters, pipes = list(self._counters), list(self._pipes)
        messages: Counter[str] = collections.Counter()
        statements: Counter[str] = collections.Counter()
        total = trips = encrypted = 0
        for counter in counters:
            messages.update(counter.messages)
            statements.update(counter.statements)
            total += getattr(counter, "statement_count", 0)
            trips += getattr(counter, "round_trip_count", 0)
            encrypted += counter.encrypted
        return {"statements": total, "round_trips": trips, "connections": len(counters),
                "by_statement": dict(statements), "messages": dict(messages),
                "encrypted": encrypted, "chunks": sum(pipe.sent for pipe in pipes),
                "late": sum(pipe.late for pipe in pipes)}

    def close(self) -> None:
        """Close every socket (the server ends the sessions); join threads, bounded."""
        with self._lock:
            self._closing = True
            sockets, pipes = list(self._sockets), list(self._pipes)
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + self.join_timeout
        threads = [self._thread] + [thread for pipe in pipes for thread in pipe.threads]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for sock in sockets:
            sock.close()
        stuck = [thread.name for thread in threads if thread.is_alive()]
        if stuck:
            raise RuntimeError(f"latency proxy threads did not stop in {self.join_timeout} s: "
                               f"{', '.join(stuck[:4])}")

    def __enter__(self) -> "LatencyProxy":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._connect, args=(client,), daemon=True,
                             name=f"latency-proxy:{self.port}-connect").start()

    def _connect(self, client: socket.socket) -> None:
        if self.delay:
            time.sleep(2 * self.delay - self._early)  # the TCP handshake's round trip
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        counter = _COUNTERS[self.protocol]()
        with self._lock:
            if self._closing:
                client.close()
                upstream.close()
                return
            self.accepted += 1
            self._counters.append(counter)
            self._sockets += [client, upstream]
            name = f"latency-proxy:{self.port}-{self.accepted}"
            self._pipes += [_Pipe(client, upstream, self.delay, self._early, counter.feed,
                                  name + "-up"),
                            _Pipe(upstream, client, self.delay, self._early,
                                  counter.server_said, name + "-down")]


# -- measuring it -------------------------------------------------------------------------

def round_trips(connect, n: int = 200) -> List[float]:
    """Seconds of each of ``n`` ``SELECT 1`` round trips on one autocommit connection."""
    conn = connect()
    try:
        conn.autocommit = True
        cursor = conn.cursor()
        cursor.execute("SELECT 1")  # warm: the first may set things up
        cursor.fetchall()
        times = []
        for _ in range(n):
            started = time.perf_counter()
            cursor.execute("SELECT 1")
            cursor.fetchall()
            times.append(time.perf_counter() - started)
        return times
    finally:
        conn.close()


def main() -> None:
    """Print the ``SELECT 1`` round trip direct and through the proxy, both databases."""
    import argparse
    import statistics

    from benchmarks.common import TITLES, connect_args, driver_module

    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency_proxy")
    parser.add_argument("--delay", type=float, default=0.0005, help="seconds, each way")
    parser.add_argument("-n", type=int, default=500, help="round trips measured")
    args = parser.parse_args()
    for kind in ("postgresql", "mysql"):
        module, options = driver_module(kind), connect_args(kind)
        target = (options.get("host", "127.0.0.1"), int(options.get("port") or
                                                        {"postgresql": 5432, "mysql": 3306}[kind]))
        direct = round_trips(lambda: module.connect(**options), args.n)
        with LatencyProxy(target, delay=args.delay, protocol=kind) as proxy:
            through = round_trips(lambda: module.connect(**dict(
                options, host=proxy.host, port=proxy.port)), args.n)
            counted = proxy.counts()
        d, t = (statistics.median(x) * 1e3 for x in (direct, through))
        print(f"{TITLES[kind]}: SELECT 1 round trip, median of {args.n}: direct {d:.3f} ms, "
              f"through the proxy {t:.3f} ms (+{t - d:.3f} ms; delay {args.delay * 1e3:g} ms "
              f"each way); statements counted {counted['statements']}")


if __name__ == "__main__":
    main()
