"""How logs name whoever holds a connection: for a WSGI request, its method and path.

The pool keeps an opaque ``holder`` per checkout and only turns it into text when it
logs; :class:`RequestLabel` is what the middleware hands it, so nothing is formatted on
the hot path and the pool never reads a WSGI environ.
"""

from __future__ import annotations

from typing import Any, Dict


# A client's CR, LF (a server decodes %0D%0A in the path) or other control character
# must not start a forged line in a log: each is shown escaped, and so is a backslash.
_ESCAPES = {code: "\\x%02x" % code for code in (*range(0x20), *range(0x7f, 0xa0))}
_ESCAPES.update({ord("\r"): "\\r", ord("\n"): "\\n", ord("\t"): "\\t",
                 ord("\\"): "\\\\", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def request_line(environ: Dict[str, Any]) -> str:
    """``GET /script/path``: how logs name a request, never with its query string, and
    with control characters escaped."""
    line = "%s %s" % (environ.get("REQUEST_METHOD", "?"),
                      environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
    return line.translate(_ESCAPES)


class RequestLabel:
    """A checkout's holder: the request, named by :func:`request_line` when logged."""

    __slots__ = ("_environ",)

    def __init__(self, environ: Dict[str, Any]) -> None:
        self._environ = environ

    def __str__(self) -> str:
        return "request " + request_line(self._environ)

    __repr__ = __str__
