"""PasteDeploy: the middleware as a filter in an ini file.

::

    [filter:db]
    use = egg:wsgipool#pool
    url = postgresql://app@db/app
    max_size = 8
    pre_ping = true
    database.reports = postgresql://reader@replica/app

Values are text in the file; each is converted and checked when the file is loaded, so
a typo fails at startup with the option's name. ``database.<name>`` lines add named
databases (``environ["wsgipool.connections"]["<name>"]``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from .middleware import PoolMiddleware
from .options import MIDDLEWARE_CHECKS, check_options
from .settings import options_from_text
from .urls import redact_url

_DATABASE_PREFIX = "database."


def filter_factory(global_conf: Dict[str, Any], **settings: str) -> Callable[[Any], Any]:
    """PasteDeploy's ``paste.filter_factory`` entry point (``egg:wsgipool#pool``).

    :param global_conf: the ini file's ``[DEFAULT]`` values (not used).
    :param settings: the filter section's keys as text: ``url``, ``database.<name>``
        lines, and any option of :class:`~wsgipool.PoolMiddleware` or
        :class:`~wsgipool.Pool` (see *Configuration*).
    :returns: a function that wraps an app in :class:`~wsgipool.PoolMiddleware`.
    :raises wsgipool.ConfigurationError: an unknown key or a bad value, naming the
        section and the option, when the file is loaded.
    """
    url = settings.pop("url", None) or None
    databases = {key[len(_DATABASE_PREFIX):]: settings.pop(key)
                 for key in list(settings) if key.startswith(_DATABASE_PREFIX)}
    where = "[filter] use = egg:wsgipool#pool" + (f" ({redact_url(url)})" if url else "")
    options = options_from_text(settings, where)
    pool_options = {k: v for k, v in options.items() if k not in MIDDLEWARE_CHECKS}
    for checked in ([url] if url else []) + list(databases.values()):
        check_options(checked, pool_options)  # fail at load time, naming the option

    def make_filter(app: Any) -> PoolMiddleware:
        return PoolMiddleware(app, url, databases=databases or None, **options)

    return make_filter


__all__ = ["filter_factory"]
