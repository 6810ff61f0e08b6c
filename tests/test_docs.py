"""The documentation stays true: every code block in README.rst and docs/ is run by a test
or says why not, the Configuration page's table of options matches what the code
accepts, place by place, and the README renders on a package index.

No server, no connection: everything here runs on SQLite or before any connect.
"""

import ast
import glob
import logging
import os
import re
import sys
import warnings
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest

import wsgipool
import wsgipool.gunicorn
from readme import ROOT, pages, snippet
from wsgipool import ConfigurationError, Pool, PoolMiddleware, options, settings

sys.path.insert(0, os.path.join(ROOT, "docs", "_ext"))
import wsgipool_options  # noqa: E402  (the docs' Sphinx extension, importable alone)

# -- every code block is tested, or marked ------------------------------------------------

_BLOCK = re.compile(r"^(?P<indent> *)\.\. (?:code-block|code|sourcecode)::", re.MULTILINE)
_MARK = re.compile(r"^ *\.\. (?:snippet: (?P<name>\S+)|not-tested: (?P<reason>\S.*))$")
# A paragraph ending in "::" starts a literal block no marker can precede.
_LITERAL = re.compile(r"^(?! *\.\. )(?=.*\S)(?P<line>.*::)\s*$", re.MULTILINE)


def _test_sources() -> str:
    """Every test file's text except the snippet finder's, to look snippet names up in."""
    texts = []
    for path in glob.glob(os.path.join(ROOT, "tests", "**", "*.py"), recursive=True):
        if os.path.basename(path) != "readme.py":
            with open(path, encoding="utf-8") as file:
                texts.append(file.read())
    return "\n".join(texts)


def _blocks():
    """(page, line number, snippet name or None, not-tested reason or None) per block."""
    for page in pages():
        with open(page, encoding="utf-8") as file:
            text = file.read()
        lines = text.splitlines()
        for match in _BLOCK.finditer(text):
            number = text.count("\n", 0, match.start())  # 0-based line of the block
            previous = number - 1
            while previous >= 0 and not lines[previous].strip():
                previous -= 1
            mark = _MARK.match(lines[previous]) if previous >= 0 else None
            name = mark and mark.group("name")
            reason = mark and mark.group("reason")
            yield os.path.relpath(page, ROOT), number + 1, name, reason


def test_every_code_block_is_run_by_a_test_or_says_why_not():
    tests = _test_sources()
    problems, names = [], []
    for page, line, name, reason in _blocks():
        where = f"{page}:{line}"
        if name is None and reason is None:
            problems.append(f"{where}: a code block with neither '.. snippet: NAME' nor "
                            "'.. not-tested: <reason>' before it")
        elif name is not None:
            names.append(name)
            if not re.search(r"""["']""" + re.escape(name) + r"""["']""", tests):
                problems.append(f"{where}: snippet {name!r} is used by no test in tests/")
            elif not snippet(name).strip():
                problems.append(f"{where}: snippet {name!r} is empty as tests/readme.py "
                                "reads it")
    marked = []
    for page in pages():
        with open(page, encoding="utf-8") as file:
            marked += re.findall(r"^ *\.\. snippet: (\S+)$", file.read(), re.MULTILINE)
    dangling = sorted(set(marked) - set(names))
    if dangling:
        problems.append(f"'.. snippet:' markers with no code block after them: {dangling}")
    duplicates = sorted({name for name in marked if marked.count(name) > 1})
    if duplicates:
        problems.append(f"snippet names used twice: {duplicates}")
    assert not problems, "\n".join(problems)
    assert len(names) >= 10  # the scan found the pages' snippets at all


def test_no_literal_block_escapes_the_markers():
    """``::`` literal blocks cannot carry a marker: pages use ``.. code-block::``."""
    found = []
    for page in pages():
        with open(page, encoding="utf-8") as file:
            for match in _LITERAL.finditer(file.read()):
                found.append(f"{os.path.relpath(page, ROOT)}: {match.group('line').strip()}")
    assert not found, found


def test_an_unmarked_block_and_an_unused_snippet_are_caught(tmp_path, monkeypatch):
    """The scan itself can fail: a page with both faults yields both complaints."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (tmp_path / "README.rst").write_text(
        "Title\n=====\n\n.. code-block:: python\n\n   print(1)\n\n"
        ".. snippet: no-test-uses-this-name\n\n.. code-block:: python\n\n   print(2)\n")
    import readme

    monkeypatch.setattr(readme, "ROOT", str(tmp_path))
    monkeypatch.setattr(readme, "README", str(tmp_path / "README.rst"))
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    with pytest.raises(AssertionError) as failure:
        test_every_code_block_is_run_by_a_test_or_says_why_not()
    message = str(failure.value)
    assert "README.rst:4: a code block with neither" in message
    assert "snippet 'no-test-uses-this-name' is used by no test" in message


# -- the snippets the docs pages added, run as written ----------------------------------


def _get(app, path="/"):
    """One request through ``app`` (checked by wsgiref's validator): status and body."""
    environ = {"PATH_INFO": path, "QUERY_STRING": "", "SCRIPT_NAME": ""}
    setup_testing_defaults(environ)
    seen = []
    body = validator(app)(environ, lambda status, headers, exc_info=None: seen.append(status))
    try:
        data = b"".join(body)
    finally:
        body.close()
    return seen[0], data


def test_quickstart_plain_wsgi_counts_with_one_connection(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(snippet("quickstart-wsgi"), namespace)
    app = namespace["app"]
    try:
        assert _get(app) == ("200 OK", b"1 hits\n")
        assert _get(app) == ("200 OK", b"2 hits\n")  # the first request's insert was kept
        stats = app.pool.stats()
    finally:
        app.pool.close()
    assert (stats["connects"], stats["checkouts"], stats["in_use"]) == (1, 2, 0)
    assert (tmp_path / "counter.db").exists()


def test_quickstart_flask_serves_through_the_pool(tmp_path, monkeypatch):
    pytest.importorskip("flask")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "flask_counter"}
    exec(snippet("quickstart-flask"), namespace)
    app = namespace["app"]
    try:
        response = app.test_client().get("/")
        assert (response.status_code, response.data) == (200, b"hello from the database")
        response.close()  # as a server would: the connection goes back here
        stats = app.wsgi_app.pool.stats()
    finally:
        app.wsgi_app.pool.close()
    assert (stats["checkouts"], stats["returns"]) == (1, 1)


def test_quickstart_pyramid_request_db(tmp_path, monkeypatch):
    with warnings.catch_warnings():  # WebOb imports cgi, deprecated: not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        pytest.importorskip("pyramid.config")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(snippet("quickstart-pyramid"), namespace)
    app = namespace["app"]
    try:
        assert _get(app) == ("200 OK", b"hello from the database")
        stats = app.pool.stats()
    finally:
        app.pool.close()
    assert (stats["checkouts"], stats["returns"], stats["connects"]) == (1, 1, 1)


def test_pool_direct_commits_what_it_commits(tmp_path, monkeypatch):
    """The direct-use snippet, on SQLite: its committed UPDATE is kept."""
    import sqlite3

    database = tmp_path / "counters.db"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE counters (n INTEGER)")
        conn.execute("INSERT INTO counters VALUES (0)")
    code = snippet("pool-direct").replace("mysql://app@db/app", f"sqlite:///{database}")
    namespace = {}
    exec(code, namespace)
    assert namespace["pool"].stats()["returns"] == 1
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT n FROM counters").fetchone() == (1,)


@pytest.fixture
def fresh_settings(monkeypatch):
    """configure() and gunicorn.configure() record process-wide settings: undo them."""
    monkeypatch.setattr(settings, "_configured", None)
    monkeypatch.setattr(wsgipool.gunicorn, "_wrap_app", False)


@pytest.mark.parametrize("name, wrap", [
    pytest.param("gunicorn-conf", False, id="readme"),
    pytest.param("gunicorn-conf-wrap", True, id="servers-page"),
])
def test_gunicorn_config_snippets_record_their_settings(fresh_settings, name, wrap):
    namespace = {}
    exec(snippet(name), namespace)
    recorded = settings._configured
    assert recorded["url"] == "postgresql://app@db/app"
    assert recorded["options"]["max_size"] == namespace["threads"] == 8
    assert wsgipool.gunicorn._wrap_app is wrap
    for hook in ("on_exit", "post_fork", "post_worker_init", "worker_exit"):
        assert namespace[hook] is getattr(wsgipool.gunicorn, hook)


def test_access_log_format_is_the_one_test_stats_runs():
    """The Operations page's access log format is the one tests/test_stats.py serves."""
    namespace = {}
    exec(snippet("access-log-format"), namespace)
    with open(os.path.join(ROOT, "tests", "test_stats.py"), encoding="utf-8") as file:
        tree = ast.parse(file.read())
    served = [ast.literal_eval(node.value) for node in tree.body
              if isinstance(node, ast.Assign)
              and getattr(node.targets[0], "id", None) == "ACCESS_LOG_FORMAT"]
    assert served == [namespace["access_log_format"]]


def test_prometheus_snippet_registers_a_collector_that_reports_pools(tmp_path):
    prometheus_client = pytest.importorskip("prometheus_client")
    from wsgipool.prometheus import PoolCollector

    pool = Pool(f"sqlite:///{tmp_path / 'p.db'}", name="docs-prometheus")
    namespace = {}
    exec(snippet("prometheus-collector"), namespace)
    registry = namespace["REGISTRY"]
    collectors = [c for c in registry._collector_to_names if isinstance(c, PoolCollector)]
    try:
        with pool.connection():
            pass
        assert registry.get_sample_value(
            "wsgipool_checkouts_total", {"pool": "docs-prometheus"}) == 1
    finally:
        for collector in collectors:
            registry.unregister(collector)
        pool.close()
    assert registry is prometheus_client.REGISTRY and len(collectors) == 1


# -- the table of options ----------------------------------------------------------------


def _named(function, leave_out=()):
    import inspect

    return {name for name, parameter in inspect.signature(function).parameters.items()
            if parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
            and name not in leave_out}


def test_the_table_lists_every_option_the_code_accepts_and_nothing_else():
    accepted = ({"url"} | _named(Pool) | options.POOL_OPTIONS | set(options.MIDDLEWARE_CHECKS)
                | _named(PoolMiddleware, ("app", "url_or_pool"))
                | _named(wsgipool.configure) | _named(wsgipool.gunicorn.configure)
                | set(settings.TEXT_OPTIONS))
    rows = wsgipool_options.option_rows()
    listed = [row["name"].strip("`") for row in rows]
    assert sorted(listed) == sorted(accepted)
    assert len(listed) == len(set(listed))
    assert set(options.DESCRIPTIONS) == accepted
    for row in rows:
        assert row["units"] and row["meaning"] and row["default"], row


def test_a_missing_description_stops_the_build(monkeypatch):
    descriptions = dict(options.DESCRIPTIONS)
    del descriptions["max_idle"]
    descriptions["max_retired"] = ("seconds", "an option the code does not have")
    monkeypatch.setattr(options, "DESCRIPTIONS", descriptions)
    with pytest.raises(wsgipool_options.MissingDescription) as failure:
        wsgipool_options.table_rst()
    assert re.search(r"no description for (.*, )?max_idle\b", str(failure.value))
    assert "a description for no option: max_retired" in str(failure.value)


def _app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b""]


# A valid value of each option for the places that take Python values; the default
# (from the signatures) for the rest.
_VALUES = {"url": "sqlite://", "databases": {"other": "sqlite://"}, "max_size": 3}
# The same as text, for the environment and ini files; else the default, written out.
_TEXTS = {"url": "sqlite://", "databases": "sqlite://", "reset": "rollback",
          "on_connect": "builtins:repr", "name": "docs", "stats_path": "/_pool",
          "max_lifetime": "none", "hold_warning": "never", "pre_ping": "30"}


def _defaults():
    import inspect

    found = {}
    for function in (wsgipool.gunicorn.configure, PoolMiddleware, Pool):
        for name, parameter in inspect.signature(function).parameters.items():
            if parameter.default is not inspect.Parameter.empty:
                found[name] = parameter.default
    return found


def _text(name, default):
    if name in _TEXTS:
        return _TEXTS[name]
    if isinstance(default, bool):
        return "true" if default else "false"
    return "none" if default is None else str(default)


def _set_in(place, name, value, text, monkeypatch):
    """Set one option in one place, as a user would; raise if the place refuses it."""
    made = []
    try:
        if place == "Pool()":
            made.append(Pool(value) if name == "url" else Pool("sqlite://", **{name: value}))
        elif place == "PoolMiddleware()":
            if name == "url":
                made.append(PoolMiddleware(_app, value))
            else:
                made.append(PoolMiddleware(_app, "sqlite://", **{name: value}))
        elif place in ("configure()", "gunicorn"):
            configure = (wsgipool.configure if place == "configure()"
                         else wsgipool.gunicorn.configure)
            if name == "url":
                configure(value)
            else:
                configure("sqlite://", **{name: value})
        elif place == "WSGIPOOL_*":
            variable = settings.ENV_VAR if name == "url" else "WSGIPOOL_" + name.upper()
            monkeypatch.setenv(settings.ENV_VAR, "sqlite://")
            monkeypatch.setenv(variable, text)
            made.append(PoolMiddleware(_app))
        elif place == "ini":
            from wsgipool.paste import filter_factory

            key = "database.other" if name == "databases" else name
            made.append(filter_factory({}, **{"url": "sqlite://", key: text})(_app))
    finally:
        for thing in made:
            for pool in getattr(thing, "pools", {"": thing}).values():
                pool.close()


def test_each_option_is_accepted_exactly_where_the_table_says(fresh_settings, monkeypatch,
                                                              caplog):
    """Every row, in every place: set where listed, refused (or, for a server setting,
    warned about as naming no option) where not."""
    defaults = _defaults()
    wrong = []
    for row in wsgipool_options.option_rows():
        name = row["name"].strip("`")
        value = _VALUES.get(name, defaults.get(name))
        text = _text(name, defaults.get(name))
        for place in wsgipool_options.PLACES:
            listed = place in row["places"]
            caplog.clear()
            settings._warned.clear()
            with monkeypatch.context() as patch:
                for variable in [v for v in os.environ if v.startswith("WSGIPOOL_")]:
                    patch.delenv(variable)
                try:
                    with caplog.at_level(logging.WARNING, logger="wsgipool.settings"):
                        _set_in(place, name, value, text, patch)
                except (TypeError, ConfigurationError) as exc:
                    if listed:
                        wrong.append(f"{name} in {place}: listed, but refused: {exc}")
                    continue
                finally:
                    settings._configured = None
            ignored = any("names no wsgipool option" in r.getMessage() for r in caplog.records)
            if listed and ignored:
                wrong.append(f"{name} in {place}: listed, but ignored with a warning")
            elif not listed and not ignored:
                wrong.append(f"{name} in {place}: accepted, but the table does not say so")
    assert not wrong, "\n".join(wrong)


# -- the README on a package index ---------------------------------------------------------


def test_readme_renders_without_a_warning():
    """setup.cfg's long_description: docutils at warning level, as package indexes are."""
    docutils_core = pytest.importorskip("docutils.core")
    with open(os.path.join(ROOT, "README.rst"), encoding="utf-8") as file:
        tree = docutils_core.publish_doctree(
            file.read(),
            settings_overrides={"halt_level": 2, "report_level": 2, "warning_stream": False})
    assert "hello from the database" in tree.astext()


def test_docstring_examples_that_print_run_as_written():
    """The API reference's ``>>>`` examples (doctest), run against the code."""
    import doctest

    import wsgipool.urls

    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(verbose=False)
    examples = 0
    for test in finder.find(wsgipool.urls.redact_url, "redact_url",
                            globs={"redact_url": wsgipool.urls.redact_url}):
        examples += len(test.examples)
        runner.run(test)
    assert examples >= 1 and runner.summarize(verbose=False).failed == 0


# -- the API reference reads well on its own ------------------------------------------------

# The public modules beyond wsgipool.__all__, and the names the API reference shows.
PUBLIC = {
    "wsgipool.gunicorn": ["configure", "post_fork", "post_worker_init", "worker_exit", "on_exit"],
    "wsgipool.embedded": ["running_in", "processes_and_threads", "budget_line"],
    "wsgipool.paste": ["filter_factory"],
    "wsgipool.webob": ["db", "databases", "Request"],
    "wsgipool.prometheus": ["PoolCollector", "MultiProcessMirror", "start_multiprocess_mirror",
                            "sync_now", "child_exit"],
    "wsgipool.exporters": ["StatsApp", "as_json", "as_prometheus", "pool_label",
                           "wants_prometheus"],
    "wsgipool.settings": ["getenv", "server_setting", "options_from_text"],
    "wsgipool.flask": ["Pool", "get_db", "BufferedClient"],
    "wsgipool.django": ["open_pools", "pools", "stats", "close_pool"],
    "wsgipool.django.middleware": ["PoolTimeoutMiddleware"],
    "wsgipool.django.views": ["stats"],
}


def _public_callables():
    import importlib
    import inspect

    modules = {"wsgipool": [n for n in wsgipool.__all__ if not n.startswith("__")], **PUBLIC}
    for module_name, names in modules.items():
        if module_name == "wsgipool.webob":
            with warnings.catch_warnings():  # WebOb imports cgi, deprecated
                warnings.simplefilter("ignore", DeprecationWarning)
                pytest.importorskip("webob")
        if module_name == "wsgipool.prometheus":
            pytest.importorskip("prometheus_client")
        module = importlib.import_module(module_name)
        for name in names:
            obj = getattr(module, name)
            yield f"{module_name}.{name}", obj
            if inspect.isclass(obj) and not issubclass(obj, BaseException):
                for attribute, member in vars(obj).items():
                    if not attribute.startswith("_") and inspect.isfunction(member):
                        yield f"{module_name}.{name}.{attribute}", member
    for attribute in ("open", "check_at_boot"):  # Pool's, from its housekeeping mixin
        yield f"wsgipool.Pool.{attribute}", getattr(Pool, attribute)


def test_every_public_callable_documents_each_parameter():
    import inspect

    undocumented = []
    for name, obj in _public_callables():
        doc = inspect.getdoc(obj) or ""
        if not doc:
            undocumented.append(f"{name}: no docstring")
            continue
        if inspect.isclass(obj) and (issubclass(obj, BaseException)
                                     or "__init__" not in vars(obj)):
            continue  # its parameters are its base class's
        for parameter in inspect.signature(obj).parameters:
            if parameter != "self" and f":param {parameter}:" not in doc \
                    and f"``{parameter}``" not in doc:
                undocumented.append(f"{name}: parameter {parameter!r}")
    assert not undocumented, "\n".join(undocumented)


@pytest.mark.parametrize("obj", [Pool, PoolMiddleware, wsgipool.configure, wsgipool.connection,
                                 Pool.connection, Pool.checkout],
                         ids=lambda obj: obj.__qualname__)
def test_main_entry_points_show_an_example_and_what_they_raise(obj):
    import inspect

    doc = inspect.getdoc(obj)
    assert "::" in doc or ">>>" in doc, "no example"
    assert ":raises " in doc, "does not say what it raises"
