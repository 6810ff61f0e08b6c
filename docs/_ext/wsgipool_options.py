"""The Configuration page's one table of options, built from the code at each docs build.

``.. wsgipool-options::`` renders a row per option that any entry point accepts:
``Pool()``, ``PoolMiddleware()``, ``wsgipool.configure()``,
``wsgipool.gunicorn.configure()``, the ``WSGIPOOL_*`` settings (environment, Apache
``SetEnv``, mod_python ``PythonOption``) and a PasteDeploy ``[filter]``. Names,
defaults and places are read from the signatures and the option tables in
:mod:`wsgipool.options` and :mod:`wsgipool.settings`; only the units and meaning come
from ``wsgipool.options.DESCRIPTIONS``. An option with no description there stops the
build with its name, so a new option cannot reach the docs half documented.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List

# Where an option can be set, in the table's order.
PLACES = ("Pool()", "PoolMiddleware()", "configure()", "gunicorn", "WSGIPOOL_*", "ini")


class MissingDescription(Exception):
    """An option the code accepts has no entry in ``wsgipool.options.DESCRIPTIONS``."""


def _keywords(function: Any) -> Dict[str, Any]:
    """A callable's named keyword parameters and their defaults (``**kwargs`` left out)."""
    return {name: parameter.default
            for name, parameter in inspect.signature(function).parameters.items()
            if parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)}


def option_places() -> Dict[str, List[str]]:
    """Every option name the code accepts, with the places that accept it, in order."""
    import wsgipool.gunicorn
    from wsgipool import Pool, PoolMiddleware, configure, options, settings

    pool = {"url", *_keywords(Pool)} | options.POOL_OPTIONS
    middleware = ({"url"} | (set(_keywords(PoolMiddleware)) - {"app", "url_or_pool"})
                  | pool | set(options.MIDDLEWARE_CHECKS))
    # configure() passes **options through split_options(): the pool's and middleware's.
    configured = set(_keywords(configure)) | options.POOL_OPTIONS | set(options.MIDDLEWARE_CHECKS)
    gunicorn = configured | set(_keywords(wsgipool.gunicorn.configure))
    as_text = {"url"} | set(settings._POOL_TEXT_OPTIONS) | set(options.MIDDLEWARE_CHECKS)
    ini = {"url", "databases"} | set(settings.TEXT_OPTIONS)
    places = {"Pool()": pool, "PoolMiddleware()": middleware, "configure()": configured,
              "gunicorn": gunicorn, "WSGIPOOL_*": as_text, "ini": ini}
    # The order readers expect: the URL, the pool's options in the order Pool() takes
    # them, then the middleware's, then the rest.
    order = ["url", *_keywords(Pool), *options.MIDDLEWARE_CHECKS,
             *_keywords(PoolMiddleware), *_keywords(wsgipool.gunicorn.configure)]
    names = [name for name in dict.fromkeys(order) if name not in ("app", "url_or_pool")]
    everything = set().union(*places.values())
    names += sorted(everything - set(names))
    return {name: [place for place in PLACES if name in places[place]]
            for name in names if name in everything}


def _default(name: str) -> str:
    import wsgipool.gunicorn
    from wsgipool import Pool, PoolMiddleware

    for function in (Pool, PoolMiddleware, wsgipool.gunicorn.configure):
        keywords = _keywords(function)
        if name in keywords:
            value = keywords[name]
            if name == "url" and value is None:
                return "``DATABASE_URL``"
            if name == "name" and value is None:
                return "the URL"
            return f"``{value!r}``"
    return "none"


# How each place reads in the table's "where" column.
_LABELS = {"Pool()": "``Pool()``", "PoolMiddleware()": "``PoolMiddleware()``",
           "configure()": "``configure()``", "gunicorn": "gunicorn",
           "WSGIPOOL_*": "text settings", "ini": "ini files"}


def _where(name: str, places: List[str]) -> str:
    """The places, short: "everywhere", "everywhere but ...", or the list; then how the
    option is spelt where its name differs (environment variables, ini keys)."""
    from wsgipool import settings

    missing = [place for place in PLACES if place not in places]
    if not missing:
        text = "everywhere"
    elif len(places) == 1:
        text = _LABELS[places[0]] + " only"
    elif len(missing) <= 2:
        text = "everywhere but " + " and ".join(_LABELS[place] for place in missing)
    else:
        text = ", ".join(_LABELS[place] for place in places)
    spelt = []
    if "WSGIPOOL_*" in places:
        spelt.append(f"``{settings.ENV_VAR if name == 'url' else 'WSGIPOOL_' + name.upper()}``")
    if "ini" in places and name == "databases":
        spelt.append("ini ``database.<name>``")
    return text + ("; " + ", ".join(spelt) if spelt else "")


def option_rows() -> List[Dict[str, str]]:
    """One row per option: name, units, default, meaning, where (reStructuredText), and
    ``places``, the list of :data:`PLACES` that accept it.

    :raises MissingDescription: an accepted option has no description, or a
        description names no option the code accepts.
    """
    from wsgipool.options import DESCRIPTIONS

    places = option_places()
    missing = sorted(set(places) - set(DESCRIPTIONS))
    stale = sorted(set(DESCRIPTIONS) - set(places))
    if missing or stale:
        raise MissingDescription(
            "wsgipool.options.DESCRIPTIONS is out of step with the code: "
            + "; ".join(filter(None, [
                missing and "no description for " + ", ".join(missing),
                stale and "a description for no option: " + ", ".join(stale)])))
    rows = []
    for name, where in places.items():
        units, meaning = DESCRIPTIONS[name]
        rows.append({"name": f"``{name}``", "units": units, "default": _default(name),
                     "meaning": meaning, "where": _where(name, where), "places": where})
    return rows


def table_rst() -> List[str]:
    """The table as reStructuredText lines (a ``list-table`` of three columns, narrow
    enough for the page: the units and default sit under the option's name)."""
    lines = [".. list-table::", "   :header-rows: 1", "   :widths: 28 47 25",
             "   :class: wsgipool-options", "",
             "   * - option: units; default", "     - meaning", "     - where it can be set"]
    for row in option_rows():
        lines += [f"   * - {row['name']}", "",
                  f"       {row['units']}; default {row['default']}",
                  f"     - {row['meaning']}", f"     - {row['where']}"]
    return lines


def setup(app: Any) -> Dict[str, Any]:
    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx.util.docutils import SphinxDirective

    class OptionsTable(SphinxDirective):
        has_content = False

        def run(self) -> List[Any]:
            try:
                lines = table_rst()
            except MissingDescription as exc:
                # An error on the page's line: sphinx-build -W (make docs, CI) fails on it.
                raise self.error(f"{exc}; add its line to DESCRIPTIONS in "
                                 "wsgipool/options.py") from None
            container = nodes.container()
            self.state.nested_parse(StringList(lines, source="wsgipool.options"),
                                    self.content_offset, container)
            return container.children

    app.add_directive("wsgipool-options", OptionsTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
