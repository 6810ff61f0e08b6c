"""PasteDeploy, WebOb and Pyramid, and the README's snippets for them, run for real."""

import json
from wsgiref.validate import validator

import pytest

import wsgipool
from wsgipool import ConfigurationError

from readme import snippet
from test_middleware import Response, environ_for

paste_deploy = pytest.importorskip("paste.deploy", reason="pip install PasteDeploy")
webob = pytest.importorskip("webob", reason="pip install WebOb")
import webob.dec  # noqa: E402  (after the skip: WebOb may be missing)
import wsgipool.webob  # noqa: E402

README_URLS = ("postgresql://app@db/app", "postgresql://reader@replica/app")


def readme_code(name, url, other_url):
    """A README snippet with its placeholder URLs pointed at the test's databases."""
    return snippet(name).replace(README_URLS[0], url).replace(README_URLS[1], other_url)


def test_readme_paste_ini_loads_and_serves(postgresql, any_mariadb, tmp_path):
    ini = readme_code("paste-ini", postgresql.url, any_mariadb.url)
    ini = ini.replace("use = egg:myapp", "use = call:paste_app:make_app")
    path = tmp_path / "app.ini"
    path.write_text(ini)
    app = paste_deploy.loadapp(f"config:{path}")
    assert isinstance(app, wsgipool.PoolMiddleware)
    assert app.lazy is True and app.pool.max_size == 8 and app.pool.pre_ping == 30.0
    assert app.pools["reports"].max_size == 8
    response = Response(validator(app))
    assert json.loads(response.body) == {"one": 1, "databases": ["default", "reports"]}
    assert app.pool.stats()["checkouts"] == 1
    assert app.pools["reports"].stats()["connects"] == 0  # named: never asked
    for pool in app.pools.values():
        pool.close()


@pytest.mark.parametrize("line, message", [
    ("max_size = ten", r"max_size = 'ten' in \[filter\] use = egg:wsgipool#pool.*whole"),
    ("pre_ping = sometimes", "pre_ping = 'sometimes'.*true, false or a number"),
    ("max_sise = 8", "unknown option 'max_sise'.*known: url, database.<name>"),
    ("reset = nowhere_module:reset", "reset = 'nowhere_module:reset'.*names no callable"),
    ("max_size = 0", "max_size must be at least 1"),
    ("lazy = maybe", "lazy = 'maybe'.*must be true or false"),
])
def test_bad_ini_values_are_named_when_the_file_is_loaded(sqlite, tmp_path, line, message):
    path = tmp_path / "bad.ini"
    path.write_text(
        "[pipeline:main]\npipeline = db app\n\n"
        f"[filter:db]\nuse = egg:wsgipool#pool\nurl = sqlite:///{tmp_path}/x.db\n"
        f"{line}\n\n"
        "[app:app]\nuse = call:paste_app:make_app\n")
    with pytest.raises((ConfigurationError, TypeError), match=message):
        paste_deploy.loadapp(f"config:{path}")


def test_ini_error_never_shows_the_password(tmp_path):
    path = tmp_path / "secret.ini"
    path.write_text("[filter:db]\nuse = egg:wsgipool#pool\n"
                    "url = postgresql://app:s3cret@db/app\nmax_size = many\n\n"
                    "[pipeline:main]\npipeline = db app\n\n"
                    "[app:app]\nuse = call:paste_app:make_app\n")
    with pytest.raises(ConfigurationError) as caught:
        paste_deploy.loadapp(f"config:{path}")
    assert "s3cret" not in str(caught.value) and "max_size" in str(caught.value)


def test_readme_webob_request_db(db):
    namespace = {}
    exec(snippet("webob"), namespace)
    app = wsgipool.PoolMiddleware(namespace["hello"], db.url, max_size=2)
    for _ in range(3):
        response = webob.Request.blank("/").get_response(app)
        assert (response.status_int, response.text) == (200, "hello")
    stats = app.pool.stats()
    assert (stats["checkouts"], stats["connects"], stats["in_use"]) == (3, 1, 0)
    app.pool.close()


def test_webob_request_db_is_the_real_connection_and_reaches_named_ones(sqlite, tmp_path):
    seen = {}

    @webob.dec.wsgify(RequestClass=wsgipool.webob.Request)
    def app(request):
        seen["db"] = request.db
        seen["real"] = wsgipool.connection(request.environ)
        seen["other"] = request.databases["other"].execute("SELECT 7").fetchone()[0]
        return "ok"

    other = f"sqlite:///{tmp_path / 'other.db'}"
    wrapped = wsgipool.PoolMiddleware(app, sqlite.url, lazy=True, databases={"other": other})
    assert webob.Request.blank("/").get_response(wrapped).text == "ok"
    import sqlite3

    assert type(seen["db"]) is sqlite3.Connection and seen["db"] is seen["real"]
    assert seen["other"] == 7
    for pool in wrapped.pools.values():
        assert pool.stats()["in_use"] == 0
        pool.close()


def test_pyramid_request_method_db(db):
    pyramid_config = pytest.importorskip("pyramid.config", reason="pip install pyramid")

    def view(request):
        cursor = request.db.cursor()
        cursor.execute("SELECT 40 + 2")
        (answer,) = cursor.fetchone()
        assert request.db is request.db  # reified: one lookup per request
        request.db.rollback()
        return request.response.__class__(text=str(answer))

    with pyramid_config.Configurator() as config:
        config.add_request_method(wsgipool.webob.db, "db", reify=True)
        config.add_route("answer", "/")
        config.add_view(view, route_name="answer")
        pyramid_app = config.make_wsgi_app()
    app = wsgipool.PoolMiddleware(pyramid_app, db.url, max_size=2)
    responses = [Response(validator(app), environ_for("/")) for _ in range(3)]
    assert {r.body for r in responses} == {b"42"}
    assert app.pool.stats()["connects"] == 1
    app.pool.close()


def test_readme_snippets_for_databases_and_lazy(postgresql, tmp_path):
    for name in ("databases", "lazy"):
        namespace = {}
        exec(readme_code(name, postgresql.url, postgresql.url), namespace)
        app = namespace["app"]
        paths = ["/", "/health"] if name == "lazy" else ["/"]
        for path in paths:
            response = Response(validator(app), environ_for(path))
            assert response.status == "200 OK", (name, path)
        stats = app.pool.stats()
        assert (stats["checkouts"], stats["in_use"]) == (1, 0)  # /health took none
        for pool in app.pools.values():
            pool.close()
