"""Pool options: each checked by name, so ``Pool()``, ``configure()`` and every settings
source reject a bad value the same way, with a message naming the option."""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Optional, Union

from .drivers import make_driver
from .errors import ConfigurationError

def _whole(option: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{option} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ConfigurationError(f"{option} must be at least {minimum}, not {value}")
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
    "max_lifetime": lambda value: _seconds("max_lifetime", value, optional=True),
    "max_idle": lambda value: _seconds("max_idle", value, optional=True),
    "hold_warning": lambda value: _seconds("hold_warning", value, optional=True),
    "pre_ping": _pre_ping,
    "reset": _reset_mode,
    "name": _name,
    "transaction_pooling": lambda value: _flag("transaction_pooling", value),
    "on_connect": lambda value: _callable_or_none("on_connect", value),
}


def check_options(url: Optional[str], options: Dict[str, Any]) -> None:
    """Check a URL and Pool options as ``Pool()`` would, without making a pool."""
    unknown = sorted(set(options) - set(CHECKS) - {"connect"})
    if unknown:
        raise TypeError(f"unknown Pool option(s): {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(set(CHECKS) | {'connect'}))}")
    for option, value in options.items():
        if option in CHECKS:
            CHECKS[option](value)
    make_driver(url, options.get("connect"))


