"""Database URLs: split them into driver options, and redact them for humans.

A URL carries a password; everything that shows a URL to a person (errors, ``repr()``,
log lines) goes through :func:`redact_url` or :func:`scrub` first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Optional
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import ConfigurationError

#: Query keys whose values are secrets, as libpq, mysqlclient and friends spell them.
SECRET_KEYS = frozenset({"password", "passwd", "pwd", "sslpassword"})
MASK = "***"


@dataclass(frozen=True)
class DatabaseURL:
    """The parts of a database URL, percent-decoded; ``None`` where the URL is silent."""

    scheme: str
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    host: Optional[str] = None
    port: Optional[int] = None
    path: str = ""
    query: Dict[str, str] = field(default_factory=dict, repr=False)
    redacted: str = ""

    def __str__(self) -> str:
        return self.redacted


def parse_url(url: str) -> DatabaseURL:
    """Split ``scheme://user:pass@host:port/path?key=value`` into its decoded parts."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    redacted = redact_url(url)
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise ConfigurationError(
            f"not a database URL (expected scheme://...): {redacted!r}"
        )
    # The authority ends at the first / ? or # (as urllib and libpq read it). The user
    # name and password are split off here, so urllib never sees them: it would refuse a
    # raw [ or ] in a password (libpq takes them), quoting what lies between.
    rest = url[len(scheme) + 3:]
    end = min([i for i in map(rest.find, "/?#") if i != -1] or [len(rest)])
    netloc, after = rest[:end], rest[end:]
    userinfo, at, hostport = netloc.rpartition("@")
    # redact_url masks up to the last @ before the first =: an @ past the authority means
    # a password holding a raw / ? or #. Say so without quoting any of it.
    equals = rest.find("=") if "=" in rest else len(rest)
    if (":" in netloc and not netloc.startswith("[")  # not a bare [IPv6] host
            and rest.rfind("@", 0, equals) >= end):
        raise ConfigurationError(
            f"malformed database URL {redacted!r}: / ? and # in the user name or "
            "password must be percent-encoded (%2F %3F %23)"
        )
    _check_one_host(scheme.lower(), hostport, redacted)
    try:
        parts = urlsplit(f"{scheme}://{hostport}{after}")
    except ValueError as exc:  # urllib's own complaint about the host, e.g. "Invalid IPv6 URL"
        # Without an @ in the authority, an @ further on may end a password that urllib
        # took for the host: then its complaint is not shown.
        detail = f": {exc}" if at or "@" not in rest else ""
        raise ConfigurationError(f"malformed database URL {redacted!r}{detail}") from None
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    host, port = _split_hostport(hostport, redacted, show_port=bool(at))
    try:
        query = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True))
    except ValueError:
        if parts.query:
            raise ConfigurationError(
                f"malformed query string in database URL {redacted!r}"
            ) from None
        query = {}
    return DatabaseURL(
        scheme=scheme.lower(),
        username=username,
        password=password,
        host=host,
        port=port,
        path=unquote(parts.path),
        query=query,
        redacted=redacted,
    )


def _check_one_host(scheme: str, hostport: str, redacted: str) -> None:
    """libpq's ``h1:5432,h2:5433`` would read here as a bad port: name the form that works."""
    if "," not in hostport:
        return
    if scheme.startswith(("mysql", "mariadb")):
        raise ConfigurationError(
            f"several hosts in {redacted!r}: a {scheme} URL names one host"
        )
    if scheme.startswith("postgres") and ":" in hostport:
        raise ConfigurationError(
            f"several hosts with ports in {redacted!r}: give them in the query instead, "
            "as libpq reads them: ?host=h1,h2&port=5432,5433 (one port for all, or one "
            "per host)"
        )


def _split_hostport(hostport: str, redacted: str, show_port: bool = True):
    if hostport.startswith("["):  # [IPv6]:port
        host, bracket, rest = hostport[1:].partition("]")
        if not bracket:
            raise ConfigurationError(f"unclosed '[' in the host of {redacted!r}")
        port_text = rest[1:] if rest.startswith(":") else rest
    else:
        host, _, port_text = hostport.partition(":")
    port = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            # Without a user@ the "port" may be a password cut by a raw ? or #: not shown.
            shown = f", not {port_text!r}," if show_port else ""
            raise ConfigurationError(
                f"port must be a number from 1 to 65535{shown} in {redacted!r}"
            )
        port = int(port_text)
    return unquote(host) or None, port


def redact_url(url: str) -> str:
    """Return ``url`` with its password, and any secret query value, replaced by ``***``.

    The password runs to the last ``@`` before the query's first ``=``, so one typed with
    a raw ``/ ? #`` is still masked; where that cannot be told apart, all but the scheme
    is masked. Secret query values are masked wherever they are.

    >>> redact_url("postgresql://app:s3cret@db/app?sslmode=require")
    'postgresql://app:***@db/app?sslmode=require'

    :param url: any URL; a value that is not a string gives its type's ``repr``.
    :returns: the URL, safe to log.
    """
    if not isinstance(url, str):
        return repr(type(url))
    scheme, sep, rest = url.partition("://")
    if not sep:
        # Not a URL we can take apart: show nothing that could be a secret.
        return MASK if ("@" in url or "=" in url) else url
    first_eq = rest.find("=") if "=" in rest else len(rest)
    at = rest.rfind("@", 0, first_eq)
    if at == -1 and "@" in rest and ":" in rest[:rest.find("@")]:
        return f"{scheme}://{MASK}"  # user:pass with an @ past the first =: ambiguous
    userinfo, rest = (rest[:at], rest[at:]) if at != -1 else ("", rest)
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":" + MASK
    rest, hashmark, _fragment = rest.partition("#")
    hostpath, qmark, query = rest.partition("?")
    if query:
        query = "&".join(_redact_pair(pair) for pair in query.split("&"))
    return (f"{scheme}://{userinfo}{hostpath}{qmark}{query}"
            + (hashmark and "#" + MASK))


def _redact_pair(pair: str) -> str:
    key, eq, _value = pair.partition("=")
    if eq and unquote(key).lower() in SECRET_KEYS:
        return f"{key}={MASK}"
    return pair


# Where a message gives a password: a URL's password field (and secret query values), a
# libpq conninfo's ``password=...`` (quoted or not), a Python repr's ``'password': '...'``.
_KEYS = "|".join(sorted(SECRET_KEYS, key=len, reverse=True))
_QUOTED = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
_POSITIONS = re.compile(
    r"(?P<url>(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://\S+)"
    rf"|(?P<key>(?P<quote>['\"])(?:{_KEYS})(?P=quote)\s*:\s*)(?P<value>{_QUOTED})"
    rf"|(?P<pair>(?<![\w.-])(?:{_KEYS})\s*=\s*)(?:{_QUOTED}|(?:\\.|\S)+)",
    re.IGNORECASE,
)
#: A known secret shorter than this is never searched for in a message (see scrub).
LONG_SECRET = 12
# What may stand either side of a whole token: nothing, a space, a quote, a bracket...
_BEFORE = r"(?<![^\s'\"`(\[{<,;:=])"
_AFTER = r"(?![^\s'\"`)\]}>,;.:@])"


def _mask(match: "re.Match[str]") -> str:
    if match.group("url"):
        return redact_url(match.group("url"))
    if match.group("key"):
        quote = match.group("value")[0]
        return f"{match.group('key')}{quote}{MASK}{quote}"
    return match.group("pair") + MASK


def scrub(text: str, *secrets: Optional[str]) -> str:
    """Mask the passwords in ``text`` (a driver's message) where the message gives one.

    Redaction goes by position: a URL's password field, a conninfo's ``password=``, a
    repr's ``'password':``; whatever else the message says is left as it is, since
    masking a password's text wherever it occurs tells the reader what it is (a password
    equal to the database name showed ``database "***"``) and garbles the rest. As a
    fallback for a driver that quotes a secret elsewhere, each of ``secrets`` at least
    :data:`LONG_SECRET` characters long is masked where it stands as a whole token;
    a shorter one is not searched for (none of the supported drivers quotes it).
    """
    text = _POSITIONS.sub(_mask, text)
    for secret in secrets:
        if secret and len(secret) >= LONG_SECRET:
            text = re.sub(_BEFORE + re.escape(secret) + _AFTER, MASK, text)
    return text
