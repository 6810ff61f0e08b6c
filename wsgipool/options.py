"""Pool and middleware options: each checked by name, so ``Pool()``, ``PoolMiddleware()``,
``configure()`` and every settings source reject a bad value the same way, with a message
naming the option."""

from __future__ import annotations

import difflib
import threading
from typing import Any, Callable, Dict, Optional, Tuple, Union

from .drivers import make_driver
from .errors import ConfigurationError


def _whole(option: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{option} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ConfigurationError(f"{option} must be at least {minimum}, not {value}")
    return value


def _waiting_bound(value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("max_waiting must be a whole number of checkouts (0 or more) or "
                        f"None for no bound, not {type(value).__name__}")
    if value < 0:
        raise ConfigurationError("max_waiting must be 0 or more (0: never queue), or None "
                                 f"for no bound, not {value}")
    return value


#: The longest checkout wait: a request that waited an hour for a connection is gone.
MAX_TIMEOUT = 3600.0
#: The longest of the optional limits: any wait on one must stay below what the platform
#: can sleep (threading.TIMEOUT_MAX, else OverflowError); inf and None mean never.
MAX_SECONDS = min(threading.TIMEOUT_MAX, 10 * 365 * 86400.0)


def _seconds(option: str, value: Any, optional: bool = False) -> Optional[float]:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kinds = "a number of seconds or None" if optional else "a number of seconds"
        raise TypeError(f"{option} must be {kinds}, not {type(value).__name__}")
    if not value > 0 or value != value or value == float("inf") and not optional:
        raise ConfigurationError(f"{option} must be a positive number of seconds, not {value}")
    if value == float("inf"):
        return None  # never: the same as None, so nothing waits an infinite time
    most = MAX_SECONDS if optional else MAX_TIMEOUT
    if value > most:
        never = " (or None for never)" if optional else ""
        raise ConfigurationError(
            f"{option} must be at most {most:.0f} seconds{never}, not {value}"
        )
    return float(value)


def _pre_ping(value: Any) -> Union[bool, float]:
    if isinstance(value, bool):
        return value
    if not isinstance(value, (int, float)):
        raise TypeError(
            f"pre_ping must be True, False or a number of seconds, not {type(value).__name__}"
        )
    if not value >= 0:
        raise ConfigurationError(f"pre_ping must be at least 0 seconds, not {value}")
    return float(value) if value > 0 else True


def _reset_mode(value: Any) -> Any:
    if value in ("rollback", "session") or callable(value):
        return value
    raise ConfigurationError(
        f"reset must be 'rollback', 'session' or a callable, not {value!r}"
    )


def _flag(option: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{option} must be True or False, not {value!r}")
    return value


def _callable_or_none(option: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{option} must be a callable or None, not {type(value).__name__}")
    return value


def _name(value: Any) -> Optional[str]:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"name must be a str, not {type(value).__name__}")
    return value


# How each option is checked, by name; the constructor and check_options() share them.
CHECKS: Dict[str, Callable[[Any], Any]] = {
    "max_size": lambda value: _whole("max_size", value, minimum=1),
    "min_size": lambda value: _whole("min_size", value, minimum=0),
    "timeout": lambda value: _seconds("timeout", value),
    "max_waiting": _waiting_bound,
    "max_lifetime": lambda value: _seconds("max_lifetime", value, optional=True),
    "max_idle": lambda value: _seconds("max_idle", value, optional=True),
    "hold_warning": lambda value: _seconds("hold_warning", value, optional=True),
    "pre_ping": _pre_ping,
    "reset": _reset_mode,
    "name": _name,
    "transaction_pooling": lambda value: _flag("transaction_pooling", value),
    "on_connect": lambda value: _callable_or_none("on_connect", value),
    "fail_at_boot": lambda value: _flag("fail_at_boot", value),
}


#: Every Pool option's name (``connect`` is checked by the driver).
POOL_OPTIONS = frozenset(CHECKS) | {"connect"}


def _environ_key(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"environ_key must be a non-empty str, not {value!r}")
    return value


def _retry_after(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"retry_after must be a whole number of seconds, not {value!r}")
    return value


def _pace(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"pace_refusals must be a number of seconds (0: answer at once), "
                        f"not {type(value).__name__}")
    if not 0 <= value <= 10:
        raise ConfigurationError(f"pace_refusals must be between 0 and 10 seconds, not {value}")
    return float(value)


def _stats_path(value: Any) -> Optional[str]:
    if value is not None and (not isinstance(value, str) or not value.startswith("/")):
        raise TypeError(f"stats_path must be a path starting with '/', not {value!r}")
    return value


#: The middleware's own options, with their defaults (``PoolMiddleware``'s signature).
MIDDLEWARE_DEFAULTS: Dict[str, Any] = {
    "environ_key": "db.conn", "retry_after": 1, "server_timing": False,
    "stats_path": None, "transaction": False, "lazy": False, "pace_refusals": 0.08,
}
MIDDLEWARE_CHECKS: Dict[str, Callable[[Any], Any]] = {
    "environ_key": _environ_key,
    "retry_after": _retry_after,
    "server_timing": lambda value: _flag("server_timing", value),
    "stats_path": _stats_path,
    "transaction": lambda value: _flag("transaction", value),
    "lazy": lambda value: _flag("lazy", value),
    "pace_refusals": _pace,
}


def unknown_options(where: str, names: Any, known: Any) -> TypeError:
    """The error for option names nobody knows: each with the closest known name."""
    hints = []
    for name in sorted(names):
        close = difflib.get_close_matches(name, list(known), n=1)
        hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    return TypeError(f"{where} got unknown option(s) {', '.join(hints)}; "
                     f"valid: {', '.join(sorted(known))}")


def check_options(url: Optional[str], options: Dict[str, Any],
                  where: str = "Pool()") -> None:
    """Check a URL and Pool options as ``Pool()`` would, without making a pool."""
    unknown = set(options) - POOL_OPTIONS
    if unknown:
        raise unknown_options(where, unknown, POOL_OPTIONS)
    for option, value in options.items():
        if option in CHECKS:
            CHECKS[option](value)
    make_driver(url, options.get("connect"))


def split_options(options: Dict[str, Any], where: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Middleware options (checked) and Pool options (checked by :func:`check_options`),
    from one mapping of either; an unknown name is a ``TypeError`` naming ``where``."""
    unknown = set(options) - POOL_OPTIONS - set(MIDDLEWARE_CHECKS)
    if unknown:
        raise unknown_options(where, unknown, POOL_OPTIONS | set(MIDDLEWARE_CHECKS))
    middleware = {name: MIDDLEWARE_CHECKS[name](value)
                  for name, value in options.items() if name in MIDDLEWARE_CHECKS}
    pool = {name: value for name, value in options.items() if name not in MIDDLEWARE_CHECKS}
    return middleware, pool




# -- what each option means, for the documentation --------------------------------------

#: Every option's units and meaning, by name: the source of the documentation's one
#: table of options (``docs/_ext/wsgipool_options.py``), whose defaults and places come
#: from the code itself. An option the code accepts with no entry here fails the docs
#: build and ``tests/test_docs.py``: add its line when adding the option.
DESCRIPTIONS: Dict[str, Tuple[str, str]] = {
    "url": ("URL", "The database: ``postgresql://``, ``postgresql+psycopg://``, "
            "``mysql://``, ``mysql+pymysql://`` or ``sqlite:///`` (see *Database URLs*). "
            "Unset: ``PoolMiddleware(app)`` takes ``configure()``'s, else "
            "``DATABASE_URL``; ``Pool()`` reads neither and needs ``connect``."),
    "connect": ("callable", "Returns a new DB-API connection. With a URL it replaces how "
                "that driver connects; without one, any DB-API module can be pooled."),
    "max_size": ("connections", "Most connections open at once in this process. Under "
                 "gunicorn's gthread worker, match it to ``threads``."),
    "min_size": ("connections", "Connections kept open, idle or not: opened in each worker "
                 "at boot (in the background, or from a forked child's first use) and "
                 "reopened when retired. At most ``max_size``."),
    "timeout": ("seconds", "How long a checkout waits for a free connection before "
                "``PoolTimeout`` (the middleware answers 503); also the bound on each round "
                "trip the pool makes itself and, rounded up, on opening a connection. "
                "At most 3600."),
    "max_lifetime": ("seconds or ``None``", "Retire a connection this old (each between "
                     "95 % and 100 % of it, so they do not all reconnect at once). "
                     "``None``: never."),
    "max_idle": ("seconds or ``None``", "Close a connection idle this long (within 110 %), "
                 "down to ``min_size``. ``None``: never."),
    "pre_ping": ("``True``, ``False`` or seconds", "Check a connection is alive before "
                 "handing it out (one round trip): ``True`` always, a number only when it "
                 "was idle at least that long."),
    "reset": ("``\"rollback\"``, ``\"session\"`` or callable", "What a returned connection "
              "goes through besides the rollback of an open transaction: nothing more, a "
              "full session reset (``DISCARD ALL``, ``COM_RESET_CONNECTION``...), or your "
              "callable, which must leave no transaction open. In text: "
              "``module:function``."),
    "hold_warning": ("seconds or ``None``", "Warn once, naming the request, about a "
                     "checkout held longer than this. ``None``: never."),
    "name": ("text", "Label for logs and stats. Unset: the URL, password redacted."),
    "transaction_pooling": ("flag", "The database side pools per transaction (PgBouncer's "
                            "``pool_mode = transaction``): refuses ``reset=\"session\"`` "
                            "and makes psycopg 3 prepare no statements."),
    "on_connect": ("callable", "Given each new connection once, before its first use "
                   "(``SET search_path``, type adapters), and again after each "
                   "``reset=\"session\"``. In text: ``module:function``."),
    "fail_at_boot": ("flag", "When a server starts a worker and the pool cannot connect, "
                     "stop the worker (gunicorn then stops) instead of logging the cause "
                     "and answering 503."),
    "max_waiting": ("checkouts or ``None``", "Most checkouts queued at once; one more "
                    "fails at once with ``PoolTimeout`` (503), counted in ``queue_full``. "
                    "``0``: never queue; ``None``: no bound."),
    "pace_refusals": ("seconds", "A request refused for want of a connection gets its 503 "
                      "no sooner than this after arriving, longer while the worker is "
                      "behind (see *Overload*). ``0``: at once."),
    "environ_key": ("text", "The environ key the request's connection goes in."),
    "retry_after": ("whole seconds", "Sent in ``Retry-After`` with every 503."),
    "server_timing": ("flag", "Add ``Server-Timing: db-wait;dur=<ms>`` to responses."),
    "stats_path": ("path or ``None``", "A path (``/_pool``) where the middleware answers "
                   "its pools' stats as JSON or Prometheus text. Keep it private."),
    "transaction": ("flag", "One transaction per request: committed when the app returned "
                    "without an exception and a status below 400, else rolled back."),
    "lazy": ("flag", "Check the default connection out at its first use, so a request "
             "that never touches the database takes none."),
    "databases": ("mapping of name to URL or ``Pool``", "More databases, each reached "
                  "through ``environ[\"wsgipool.connections\"][name]`` and checked out at "
                  "first use. In an ini file: one ``database.<name> = <url>`` line each."),
    "wrap_app": ("flag", "``wsgipool.gunicorn.configure`` only: wrap the loaded app in "
                 "``PoolMiddleware`` from ``post_worker_init``, so the app code needs no "
                 "change."),
}
