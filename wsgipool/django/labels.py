"""What the Django backends and middleware share about the request being served.

The middleware puts a :class:`DjangoRequest` in a context variable; the backends name it
as the holder of each connection they check out (hold warnings name the view), and note
on it when no connection could be had, so the middleware can answer 503.
"""

from __future__ import annotations

import contextvars
from typing import Any, Optional

from ..labels import request_line


class DjangoRequest:
    """The request a connection is checked out for; ``str()`` names it in pool logs."""

    __slots__ = ("environ", "view", "unavailable")

    def __init__(self, environ: Any) -> None:
        self.environ = environ
        self.view: Optional[str] = None  # set once Django has resolved the URL
        # The PoolTimeout (or refused connect) a checkout of this request met.
        self.unavailable: Optional[BaseException] = None

    def __str__(self) -> str:
        view = f" (view {self.view})" if self.view else ""
        return f"request {request_line(self.environ)}{view}"

    __repr__ = __str__


#: The request this thread (or task) serves, set by the middleware.
CURRENT: "contextvars.ContextVar[Optional[DjangoRequest]]" = contextvars.ContextVar(
    "wsgipool_django_request", default=None)
