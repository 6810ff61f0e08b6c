"""``stats``: this process's pools, per alias, as JSON or Prometheus text.

Usage, in ``urls.py`` (where only operators can reach it)::

    from wsgipool.django.views import stats
    urlpatterns += [path("_pool", stats)]

Prometheus text to ``?format=prometheus`` or a scraper's ``Accept``; JSON otherwise, as
:mod:`wsgipool.exporters` answers for any pool. Series are labelled ``pool="<alias>"``
(or the ``name`` in ``OPTIONS``).
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponse

from ..exporters import as_json, as_prometheus, wants_prometheus
from .pooling import pools


def stats(request: Any) -> HttpResponse:
    """The pools of the process serving the request (under gunicorn, one worker's).

    :param request: the request; ``?format=prometheus`` or an ``Accept`` asking for
        Prometheus text answers that format, anything else JSON.
    """
    found = list(pools().values())
    if wants_prometheus(request.META):
        response = HttpResponse(as_prometheus(found),
                                content_type="text/plain; version=0.0.4; charset=utf-8")
    else:
        response = HttpResponse(json.dumps(as_json(found), indent=2),
                                content_type="application/json")
    response["Cache-Control"] = "no-store"
    return response
