"""Where ``PoolMiddleware(app)`` finds its database when the app code names none.

Servers keep their settings in their own files (a gunicorn config, an Apache
``SetEnv``); :func:`configure` records them there, and ``DATABASE_URL`` is the
twelve-factor fallback. The app module then needs no URL of its own.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Union

from .errors import ConfigurationError
from .pool import Pool, check_options

ENV_VAR = "DATABASE_URL"

# The last configure() call in this process: (url, pool options).
_configured: Optional[Dict[str, Any]] = None


def configure(url: Optional[str] = None, *,
              databases: Optional[Mapping[str, Union[str, Pool]]] = None,
              **pool_options: Any) -> None:
    """Record the database URL and :class:`~wsgipool.Pool` options for ``PoolMiddleware(app)``.

    ``databases`` names more databases, as ``PoolMiddleware(databases=...)`` does.
    Calling it again replaces the settings (a gunicorn reload re-runs its config file).
    The options are checked at once, without connecting, so a typo fails at startup.
    """
    global _configured
    if url is not None and not isinstance(url, str):
        raise TypeError(f"url must be a str or None, not {type(url).__name__}")
    check_options(url or getenv(ENV_VAR) or "sqlite://", pool_options)
    for other in (databases or {}).values():
        if isinstance(other, str):
            check_options(other, pool_options)
    _configured = {"url": url, "options": dict(pool_options),
                   "databases": dict(databases) if databases else None}


def configured_databases(options: Dict[str, Any]) -> tuple:
    """The named databases :func:`configure` recorded (or ``None``), and the pool options
    for them: configure's, overridden by ``options``."""
    if _configured is None:
        return None, options
    return _configured["databases"], {**_configured["options"], **options}


def pool_from_settings(url: Optional[str], options: Dict[str, Any]) -> Pool:
    """Build the pool for a middleware: its own URL, else :func:`configure`'s, else the env."""
    if url is None and _configured is not None:
        url = _configured["url"]
        options = {**_configured["options"], **options}
    if url is None:
        url = getenv(ENV_VAR)
    if url is None:
        raise ConfigurationError(
            "no database URL: pass one to PoolMiddleware(app, url), call "
            "wsgipool.configure(url) (wsgipool.gunicorn.configure in a gunicorn config), "
            f"or set the {ENV_VAR} environment variable"
        )
    return Pool(url, **options)


def getenv(name: str) -> Optional[str]:
    """An environment variable, from ``os.environ`` or else from the C environment.

    ``os.environ`` is a copy made when Python started. A server that embeds Python and
    sets variables afterwards (uWSGI's ``--env`` under the pyuwsgi wheel) changes only
    the process's own environment, which the C library still sees.
    """
    value = os.environ.get(name)
    if value is None and os.name == "posix":
        import ctypes

        libc_getenv = ctypes.CDLL(None).getenv
        libc_getenv.restype = ctypes.c_char_p
        raw = libc_getenv(name.encode())
        value = raw.decode() if raw is not None else None
    return value
