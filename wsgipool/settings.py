"""Where ``PoolMiddleware(app)`` finds its database when the app code names none.

Servers keep their settings in their own files (a gunicorn config, an Apache
``SetEnv``); :func:`wsgipool.configure` records them there, and ``DATABASE_URL`` is the
twelve-factor fallback. The app module then needs no URL of its own.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from typing import Any, Dict, Mapping, Optional, Union

from .cooperative import PSYCOPG2_SWITCH
from .errors import ConfigurationError
from .options import CHECKS, MIDDLEWARE_CHECKS, check_options, split_options
from .pool import Pool

log = logging.getLogger(__name__)

ENV_VAR = "DATABASE_URL"

# The last configure() call in this process: (url, pool options).
_configured: Optional[Dict[str, Any]] = None


def configure(url: Optional[str] = None, *,
              databases: Optional[Mapping[str, Union[str, Pool]]] = None,
              **options: Any) -> None:
    """Record the database URL and every option for ``PoolMiddleware(app)``: the
    :class:`~wsgipool.Pool` options and the middleware's own (``transaction``, ``lazy``,
    ``stats_path``...).

    ::

        # settings, imported before the app module
        import wsgipool
        wsgipool.configure("postgresql://app@db/app", max_size=8, lazy=True)

        # the app module: no URL of its own
        app = wsgipool.PoolMiddleware(app)

    Calling it again replaces the settings (a gunicorn reload re-runs its config file).
    The options are checked at once, without connecting, so a typo fails at startup.
    A keyword given to ``PoolMiddleware`` itself wins over these.

    :param url: the database URL; default ``None``: ``DATABASE_URL`` from the
        environment when the middleware is made.
    :param databases: more databases by name, as ``PoolMiddleware(databases=...)``
        takes them: ``{"reports": url_or_pool}``. Default ``None``.
    :param options: any :class:`~wsgipool.Pool` option and any option of
        :class:`~wsgipool.PoolMiddleware` (see *Configuration* for the table).
    :raises TypeError: ``url`` is not a string, or an option is unknown (the message
        names the closest) or of the wrong type.
    :raises wsgipool.ConfigurationError: a bad URL or option value.
    :raises wsgipool.DriverNotInstalled: the URL's driver is not installed.
    """
    global _configured
    if url is not None and not isinstance(url, str):
        raise TypeError(f"url must be a str or None, not {type(url).__name__}")
    middleware, pool_options = split_options(options, "configure()")
    check_options(url or getenv(ENV_VAR) or "sqlite://", pool_options, "configure()")
    for other in (databases or {}).values():
        if isinstance(other, str):
            check_options(other, pool_options, "configure()")
    _configured = {"url": url, "options": dict(pool_options), "middleware": middleware,
                   "databases": dict(databases) if databases else None}


def middleware_settings() -> Dict[str, Any]:
    """The middleware options for ``PoolMiddleware(app)`` without a URL: the
    environment's ``WSGIPOOL_*`` (or a mod_python ``PythonOption``), then
    :func:`configure`'s over them."""
    found = _middleware_options(server_setting, "the environment")
    if _configured is not None:
        found.update(_configured["middleware"])
    return found


def configured_databases(options: Dict[str, Any]) -> tuple:
    """The named databases :func:`configure` recorded (or ``None``), and the pool options
    for them: configure's, overridden by ``options``."""
    if _configured is None:
        return None, options
    return _configured["databases"], {**_configured["options"], **options}


def middleware_options_from_environ(environ: Mapping[str, Any]) -> Dict[str, Any]:
    """Middleware options from the first request's environ (Apache's ``SetEnv``)."""
    return _middleware_options(environ.get, "the request environ (SetEnv)")


def _middleware_options(lookup: Any, where: str) -> Dict[str, Any]:
    """The middleware's ``WSGIPOOL_*`` options found by ``lookup``, each checked while
    its variable and ``where`` can still be named."""
    found = options_from_settings(lookup, where, MIDDLEWARE_CHECKS)
    for option, value in found.items():
        try:
            MIDDLEWARE_CHECKS[option](value)
        except (TypeError, ValueError) as exc:  # ValueError: ConfigurationError's range
            raise ConfigurationError(f"WSGIPOOL_{option.upper()} in {where}: {exc}") from None
    return found


def pool_from_settings(url: Optional[str], options: Dict[str, Any]) -> Optional[Pool]:
    """Build the pool for a middleware: its own URL, else :func:`configure`'s, else the
    process's settings (``DATABASE_URL`` and ``WSGIPOOL_*``, from the environment or a
    mod_python server-level ``PythonOption``).

    ``None`` means: wait for the first request. Only inside Apache, where ``SetEnv``
    reaches each request's environ but not the process's environment.
    """
    if url is None and _configured is not None:
        url = _configured["url"]
        options = {**_configured["options"], **options}
    if url is None:
        url = server_setting(ENV_VAR)
        if url is not None:
            warn_unknown_settings(os.environ, "the environment")
            options = {**options_from_settings(server_setting, "the environment"), **options}
    if url is None:
        if in_apache():
            return None
        raise ConfigurationError(
            "no database URL: pass one to PoolMiddleware(app, url), call "
            "wsgipool.configure(url) (wsgipool.gunicorn.configure in a gunicorn config), "
            f"or set the {ENV_VAR} environment variable"
        )
    return Pool(url, **options)


def pool_from_environ(environ: Mapping[str, Any], options: Dict[str, Any]) -> Pool:
    """The pool a middleware waited for: from the first request's environ (Apache's
    ``SetEnv DATABASE_URL`` and ``SetEnv WSGIPOOL_MAX_SIZE``...)."""
    url = environ.get(ENV_VAR)
    if not isinstance(url, str) or not url:
        raise ConfigurationError(
            f"no database URL: under Apache, set it with SetEnv {ENV_VAR} <url> (mod_wsgi "
            "and mod_python put it in each request's environ), a server-level "
            f"PythonOption {ENV_VAR} <url> (mod_python), or pass it to PoolMiddleware"
        )
    warn_unknown_settings(environ, "the request environ (SetEnv)")
    found = options_from_settings(environ.get, "the request environ (SetEnv)")
    return Pool(url, **{**found, **options})


# Pool options a server's settings may carry, by name: WSGIPOOL_MAX_SIZE=8 ...
_POOL_TEXT_OPTIONS = ("max_size", "min_size", "timeout", "max_waiting", "max_lifetime",
                      "max_idle", "pre_ping", "reset", "on_connect", "hold_warning", "name",
                      "transaction_pooling", "fail_at_boot")
# Variables read elsewhere (wsgipool.cooperative), and the test suite's own, which
# name no option on purpose.
_NOT_OPTIONS = ("WSGIPOOL_TEST_", "WSGIPOOL_REQUIRE_SERVERS", PSYCOPG2_SWITCH)
_warned: set = set()


def warn_unknown_settings(names: Any, where: str) -> None:
    """Warn once about each ``WSGIPOOL_*`` name that is no option, naming the closest."""
    known = {"WSGIPOOL_" + option.upper()
             for option in (*_POOL_TEXT_OPTIONS, *MIDDLEWARE_CHECKS)}
    for name in list(names):
        if (not isinstance(name, str) or not name.startswith("WSGIPOOL_") or name in known
                or name.startswith(_NOT_OPTIONS) or name in _warned):
            continue
        _warned.add(name)
        close = difflib.get_close_matches(name, sorted(known), n=1)
        log.warning("%s in %s names no wsgipool option and is ignored%s", name, where,
                    f"; did you mean {close[0]}?" if close else "")


def options_from_settings(lookup: Any, where: str,
                          options: Any = _POOL_TEXT_OPTIONS) -> Dict[str, Any]:
    """``WSGIPOOL_<OPTION>`` values found by ``lookup(name)``, as typed options (by
    default the Pool's)."""
    found = {}
    for option in options:
        name = "WSGIPOOL_" + option.upper()
        text = lookup(name)
        if isinstance(text, str):
            try:
                found[option] = TEXT_OPTIONS[option](text)
                if option in CHECKS:  # its range too, while the variable can be named
                    CHECKS[option](found[option])
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"{name}={text!r} in {where}: {exc}") from None
    return found


def server_setting(name: str) -> Optional[str]:
    """A process-wide setting: the environment, else a mod_python ``PythonOption`` given
    at server level (readable when the app is imported, unlike ``SetEnv``).

    :param name: the setting (``DATABASE_URL``, ``WSGIPOOL_MAX_SIZE``...).
    :returns: its text, or ``None`` where it is not set.
    """
    value = getenv(name)
    if value is None and "_apache" in sys.modules:  # inside mod_python
        try:
            from mod_python import apache  # type: ignore[import-not-found]

            value = apache.main_server.get_options().get(name)
        except Exception:  # an older mod_python, or no main_server yet
            value = None
    return value


def in_apache() -> bool:
    """Whether this process is an Apache child running mod_wsgi or mod_python."""
    return "mod_wsgi" in sys.modules or "_apache" in sys.modules


def getenv(name: str) -> Optional[str]:
    """An environment variable, from ``os.environ`` or else from the C environment
    (``None`` when neither has it).

    :param name: the variable's name.

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


# -- options written as text (PasteDeploy ini files, server config files) ------------

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE or lowered in _FALSE:
        return lowered in _TRUE
    raise ValueError("must be true or false")


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("must be a whole number") from None


def _optional_int(text: str) -> Optional[int]:
    if text.strip().lower() in ("none", "unbounded", ""):
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("must be a whole number, or none for no bound") from None


def _float(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError("must be a number of seconds") from None


def _optional_seconds(text: str) -> Optional[float]:
    return None if text.strip().lower() in ("none", "never", "") else _float(text)


def _bool_or_seconds(text: str) -> Union[bool, float]:
    try:
        return _bool(text)
    except ValueError:
        try:
            return float(text.strip())
        except ValueError:
            raise ValueError("must be true, false or a number of seconds") from None


def _reset(text: str) -> Any:
    text = text.strip()
    if ":" not in text:
        return text  # "rollback" or "session"; Pool checks
    import importlib

    module, _, attribute = text.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"names no callable ({exc})") from None


def _text(text: str) -> str:
    return text.strip()


# How each option's text becomes its value; Pool and PoolMiddleware then check it.
TEXT_OPTIONS: Dict[str, Any] = {
    "max_size": _int, "min_size": _int, "timeout": _float, "max_waiting": _optional_int,
    "max_lifetime": _optional_seconds,
    "max_idle": _optional_seconds, "hold_warning": _optional_seconds,
    "pre_ping": _bool_or_seconds, "reset": _reset, "on_connect": _reset, "name": _text,
    "transaction_pooling": _bool, "fail_at_boot": _bool,
    "environ_key": _text, "retry_after": _int, "server_timing": _bool,
    "stats_path": _text, "transaction": _bool, "lazy": _bool, "pace_refusals": _float,
}


def options_from_text(settings: Mapping[str, str], where: str) -> Dict[str, Any]:
    """Turn ``{"max_size": "8", "pre_ping": "true"}`` into typed options, naming
    ``where`` (the config section) and the option in every error.

    :param settings: option names and their values as text (``"none"`` for no limit,
        ``true``/``false`` for flags, ``module:function`` for a callable).
    :param where: what to call the source in an error (``"[filter:db]"``).
    :returns: the options with Python values, for ``PoolMiddleware`` or ``Pool``.
    :raises wsgipool.ConfigurationError: an unknown name (with the known ones) or a
        value that does not convert.
    """
    options: Dict[str, Any] = {}
    for key, text in settings.items():
        convert = TEXT_OPTIONS.get(key)
        if convert is None:
            known = ", ".join(["url", "database.<name>", *sorted(TEXT_OPTIONS)])
            raise ConfigurationError(f"unknown option {key!r} in {where}; known: {known}")
        try:
            options[key] = convert(text)
        except ValueError as exc:
            raise ConfigurationError(f"{key} = {text!r} in {where}: {exc}") from None
    return options
