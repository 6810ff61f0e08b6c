"""Database URLs: split them into driver options, and redact them for humans.

A URL carries a password; everything that shows a URL to a person (errors, ``repr()``,
log lines) goes through :func:`redact_url` or :func:`scrub` first.
"""

from __future__ import annotations

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
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # urllib's own complaint, e.g. "Invalid IPv6 URL"
        raise ConfigurationError(f"malformed database URL {redacted!r}: {exc}") from None
    userinfo, at, hostport = parts.netloc.rpartition("@")
    after_host = url[len(scheme) + 3 + len(parts.netloc):]
    if (not at and not parts.netloc.startswith("[")
            and "@" in after_host.split("?", 1)[0].split("#", 1)[0]):
        # "user:pa/ss@host": the / (or ? or #) ended the host part inside the password.
        # Say so without quoting any of it: the text after ":" is the password.
        _, colon, after = parts.netloc.partition(":")
        if colon and not after.isdigit():
            raise ConfigurationError(
                f"malformed database URL {redacted!r}: / ? and # in the user name or "
                "password must be percent-encoded (%2F %3F %23)"
            )
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


def scrub(text: str, *secrets: Optional[str]) -> str:
    """Replace every occurrence of each secret in ``text`` (a driver's message) by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text
