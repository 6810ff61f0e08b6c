"""A TCP proxy that can stall: the network failure no real server produces on demand.

A stalled network (a cable pulled, a frozen host, a dropped route) leaves every socket open
and the kernel still accepting bytes, but nothing ever comes back. This proxy does that on
command::

    with StallProxy(("127.0.0.1", 5432)) as proxy:
        url = proxy.url_for("postgresql://postgres@127.0.0.1:5432/test")
        ...                  # traffic flows
        proxy.stall()        # every socket stays open, bytes are read, nothing is forwarded
        proxy.resume()       # what was held is delivered, in order, as after a long delay

While stalled, new connections are accepted (and connected upstream) but get nothing
either, as a frozen host would. ``blackhole=True`` (or :meth:`set_blackhole`) makes new
connections never reach the server at all, even after :meth:`resume`.

One selector thread does everything; :meth:`close` stops it, closes every socket (so the
server ends the sessions) and joins the thread with a bound.
"""

from __future__ import annotations

import selectors
import socket
import threading
from typing import Dict, List, Optional, Tuple

_CHUNK = 65536
_HOLD_MAX = 16 * 1024 * 1024  # bytes held per direction before reading pauses


class _Side:
    """One socket of a proxied pair, with the bytes held for it."""

    __slots__ = ("sock", "pending", "eof", "peer")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = bytearray()  # bytes read from the peer, not yet written here
        self.eof = False  # this socket said end-of-file (or failed)
        self.peer: Optional["_Side"] = None


class StallProxy:
    """Forward 127.0.0.1:<ephemeral> to ``target``; :meth:`stall` and :meth:`resume` it."""

    def __init__(self, target: Tuple[str, int], *, blackhole: bool = False,
                 join_timeout: float = 5.0) -> None:
        self.target = target
        self.join_timeout = join_timeout
        self._blackhole = blackhole
        self._stalled = False
        self._closing = False
        self._lock = threading.Lock()
        self.accepted = 0  # connections accepted so far
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.setblocking(False)
        self.host, self.port = self._listener.getsockname()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sides: Dict[socket.socket, _Side] = {}
        self._held: List[socket.socket] = []  # black-holed: accepted, never forwarded
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name=f"stall-proxy:{self.port}",
                                        daemon=True)
        self._thread.start()

    # -- control ------------------------------------------------------------------

    def url_for(self, url: str) -> str:
        """``url`` with its ``host:port`` replaced by this proxy's."""
        scheme, rest = url.split("://", 1)
        authority, sep, tail = rest.partition("/")
        userinfo, at, _ = authority.rpartition("@")
        return f"{scheme}://{userinfo}{at}{self.host}:{self.port}{sep}{tail}"

    def stall(self) -> None:
        """From now on forward nothing, either way; keep reading (so the kernel ACKs)."""
        self._command(stalled=True)

    def resume(self) -> None:
        """Forward again, starting with everything held while stalled."""
        self._command(stalled=False)

    def set_blackhole(self, on: bool = True) -> None:
        """New connections are accepted and read but never reach the server."""
        self._command(blackhole=on)

    @property
    def stalled(self) -> bool:
        return self._stalled

    def open_connections(self) -> int:
        """Client connections the proxy still holds (forwarded or black-holed)."""
        with self._lock:
            return len(self._held) + len(self._sides) // 2

    def close(self) -> None:
        """Stop the thread, close every socket; bounded by ``join_timeout``."""
        self._command(closing=True)
        self._thread.join(self.join_timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"stall proxy thread did not stop in {self.join_timeout} s")

    def __enter__(self) -> "StallProxy":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _command(self, **changes: bool) -> None:
        with self._lock:
            if "stalled" in changes:
                self._stalled = changes["stalled"]
            if "blackhole" in changes:
                self._blackhole = changes["blackhole"]
            if changes.get("closing"):
                self._closing = True
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending, or the proxy is closed

    # -- the selector thread ------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closing:
                for key, _ in self._selector.select(timeout=1.0):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except BlockingIOError:
                            pass
                    elif key.data == "held":
                        self._drain_held(key.fileobj)
                    else:
                        self._serve(key.data)
                self._update_interest()
        finally:
            self._close_all()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            client.setblocking(False)
            with self._lock:
                self.accepted += 1
                blackhole = self._blackhole
            if blackhole:
                with self._lock:
                    self._held.append(client)
                self._selector.register(client, selectors.EVENT_READ, "held")
                continue
            try:  # loopback: a blocking connect is immediate, or refused at once
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.setblocking(False)
            a, b = _Side(client), _Side(upstream)
            a.peer, b.peer = b, a
            with self._lock:
                self._sides[client] = a
                self._sides[upstream] = b
            self._selector.register(client, selectors.EVENT_READ, a)
            self._selector.register(upstream, selectors.EVENT_READ, b)

    def _drain_held(self, sock: socket.socket) -> None:
        """A black-holed connection: read and drop; forget it once the client leaves."""
        try:
            data = sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._selector.unregister(sock)
            with self._lock:
                self._held.remove(sock)
            sock.close()

    def _serve(self, side: _Side) -> None:
        """Read what ``side`` sent (held for its peer) and write what is held for it."""
        if side.sock.fileno() == -1:
            return  # dropped earlier in this round
        peer = side.peer
        if not side.eof and len(peer.pending) < _HOLD_MAX:
            try:
                data = side.sock.recv(_CHUNK)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data is not None:
                if data:
                    peer.pending += data
                else:
                    side.eof = True
        if not self._stalled:
            self._flush(side)
            self._flush(peer)

    def _flush(self, side: _Side) -> None:
        if side.pending and side.sock.fileno() != -1:
            try:
                sent = side.sock.send(side.pending)
                del side.pending[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                side.pending.clear()
                side.eof = side.peer.eof = True
        peer = side.peer
        if peer.eof and not side.pending and side.sock.fileno() != -1:
            # The peer is done and everything it sent is delivered: pass the EOF on.
            try:
                side.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            if side.eof and not peer.pending:
                self._drop_pair(side)

    def _update_interest(self) -> None:
        """Read from every live socket; ask to write only where bytes wait and may go."""
        stalled = self._stalled
        for sock, side in list(self._sides.items()):
            if sock.fileno() == -1:
                continue
            if not stalled:
                self._flush(side)
                if sock.fileno() == -1:
                    continue
            events = 0
            if not side.eof and len(side.peer.pending) < _HOLD_MAX:
                events |= selectors.EVENT_READ
            if side.pending and not stalled:
                events |= selectors.EVENT_WRITE
            registered = self._selector.get_map().get(sock)
            if events and registered is None:
                self._selector.register(sock, events, side)
            elif events and registered.events != events:
                self._selector.modify(sock, events, side)
            elif not events and registered is not None:
                self._selector.unregister(sock)

    def _drop_pair(self, side: _Side) -> None:
        with self._lock:
            for one in (side, side.peer):
                self._sides.pop(one.sock, None)
        for one in (side, side.peer):
            if one.sock.fileno() != -1:
                if one.sock in self._selector.get_map():
                    self._selector.unregister(one.sock)
                one.sock.close()

    def _close_all(self) -> None:
        with self._lock:
            socks = list(self._sides) + self._held
            self._sides.clear()
            self._held.clear()
        for sock in socks:
            try:
                sock.close()
            except OSError:
                pass
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
