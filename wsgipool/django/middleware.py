"""``PoolTimeoutMiddleware``: a 503 with ``Retry-After`` when no connection can be had.

Usage, first in ``settings.MIDDLEWARE``::

    MIDDLEWARE = ["wsgipool.django.middleware.PoolTimeoutMiddleware", ...]

A request whose checkout timed out (or whose connect was refused, or met a closed pool)
gets ``503 Service Unavailable`` with ``Retry-After`` (``WSGIPOOL_RETRY_AFTER`` seconds,
default 1) instead of a 500, wherever in Django the checkout happened: a view, another
middleware, a template. It also names the request and its view as the holder of the
connections it checks out, so the pool's hold warnings say which view held one too long.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse

from ..labels import request_line
from .labels import CURRENT, DjangoRequest

log = logging.getLogger(__name__)


class PoolTimeoutMiddleware:
    """Turn a request's failed checkout into a 503, and name its view in pool logs.

    :param get_response: the next middleware or view, as Django passes it.
    :raises ImproperlyConfigured: ``settings.WSGIPOOL_RETRY_AFTER`` is not a whole
        number of seconds (0 or more).
    """

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        retry_after = getattr(settings, "WSGIPOOL_RETRY_AFTER", 1)
        if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
            raise ImproperlyConfigured(
                f"WSGIPOOL_RETRY_AFTER must be a whole number of seconds, not {retry_after!r}")
        self.retry_after = retry_after

    def __call__(self, request: Any) -> Any:
        state = DjangoRequest(request.META)
        token = CURRENT.set(state)
        try:
            response = self.get_response(request)
        finally:
            CURRENT.reset(token)
        if state.unavailable is not None and response.status_code >= 500:
            log.warning("answered 503 to %s: %s", request_line(request.META), state.unavailable)
            response = HttpResponse(
                "503 Service Unavailable: no database connection could be had.\n",
                status=503, content_type="text/plain")
            response["Retry-After"] = str(self.retry_after)
        return response

    def process_view(self, request: Any, view_func: Any, view_args: Any,
                     view_kwargs: Any) -> None:
        """Name the view as the holder of the connections this request checks out.

        :param request: the request.
        :param view_func: the view Django chose.
        :param view_args: its positional arguments.
        :param view_kwargs: its keyword arguments.
        """
        state = CURRENT.get()
        if state is not None:
            state.view = f"{getattr(view_func, '__module__', '?')}." \
                f"{getattr(view_func, '__qualname__', type(view_func).__name__)}"
