"""The guestbook example, in process, on each real database."""

import importlib.util
import io
import json
import os
import uuid
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest

from servers import ROOT


@pytest.fixture
def guestbook(db, monkeypatch):
    """A fresh import of examples/guestbook.py on ``db``, with a table of its own."""
    from wsgipool import settings

    table = f"guestbook_{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(settings, "_configured", None)
    monkeypatch.setenv("DATABASE_URL", db.url)
    monkeypatch.setenv("GUESTBOOK_TABLE", table)
    spec = importlib.util.spec_from_file_location(
        f"guestbook_{table}", os.path.join(ROOT, "examples", "guestbook.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    module.app.pool.close()
    admin = db.admin()
    admin.cursor().execute(f"DROP TABLE {table}")
    admin.commit()
    admin.close()


def call(app, path="/", method="GET", body=b""):
    environ = {"PATH_INFO": path, "SCRIPT_NAME": "", "REQUEST_METHOD": method,
               "QUERY_STRING": "", "CONTENT_LENGTH": str(len(body)),
               "CONTENT_TYPE": "application/x-www-form-urlencoded"}
    setup_testing_defaults(environ)
    environ["wsgi.input"] = io.BytesIO(body)
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = status, dict(headers)

    result = validator(app)(environ, start_response)
    data = b"".join(result)
    result.close()
    return seen["status"], seen["headers"], data


def test_guestbook_signs_shows_and_reports_stats(guestbook):
    app = guestbook.app
    status, _, page = call(app)
    assert status == "200 OK" and b'<form method="post"' in page
    status, headers, _ = call(app, "/sign", "POST", b"name=%3Cscript%3EEve&message=Hi+there")
    assert (status, headers["Location"]) == ("303 See Other", "/")
    status, _, page = call(app)
    assert b"&lt;script&gt;Eve" in page and b"<script>Eve" not in page
    assert b"Hi there" in page
    status, _, page = call(app, "/sign", "POST", b"name=&message=")
    assert status == "400 Bad Request" and b"Please give a name" in page
    status, headers, body = call(app, "/stats")  # the middleware's stats_path
    (stats,) = json.loads(body)["pools"].values()
    assert headers["Content-Type"].startswith("application/json")
    assert stats["connects"] == 1 and stats["checkouts"] >= 5
    assert stats["rollbacks"] == 0  # every handler ends its own transaction
    assert call(app, "/nope")[0] == "404 Not Found"


@pytest.mark.slow
@pytest.mark.parametrize("example", ["flask_app", "pyramid_app"])
@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_framework_example_runs_under_gunicorn(example, kind, request, tmp_path):
    """The README's one command, ``gunicorn --chdir examples <example>:app``, serving
    the guestbook on each database: sign, see the entry escaped, reuse connections."""
    pytest.importorskip({"flask_app": "flask", "pyramid_app": "pyramid"}[example])
    from servers import Gunicorn, get

    db = request.getfixturevalue(kind)
    table = f"guestbook_{uuid.uuid4().hex[:8]}"
    env = {"DATABASE_URL": db.url, "GUESTBOOK_TABLE": table}
    server = Gunicorn(f"{example}:app", "--chdir", "examples", "--workers", "2",
                      "-k", "gthread", "--threads", "2", env=env,
                      log_path=str(tmp_path / "gunicorn.log"))
    try:
        with server:
            status, _ = get(server.url + "/sign",
                            data=b"name=%3Cb%3EAda&message=Hello+from+" + example.encode())
            assert status == 200  # urllib followed the 303 to the page
            pages = [get(server.url + "/") for _ in range(10)]
            stats = [json.loads(get(server.url + "/stats")[1]) for _ in range(4)]
    finally:
        server.stop()
    assert all(status == 200 for status, _ in pages), server.log()[-2000:]
    body = pages[-1][1]
    assert b"&lt;b&gt;Ada" in body and b"<b>Ada" not in body
    assert b"Hello from " + example.encode() in body
    by_pid = {s["pid"]: s for s in stats}  # the latest figures of each worker seen
    assert all(s["connects"] <= 2 for s in by_pid.values())  # at most its 2 threads
    assert sum(s["connects"] for s in by_pid.values()) < sum(
        s["checkouts"] for s in by_pid.values())
    admin = db.admin()
    cursor = admin.cursor()
    cursor.execute(f"SELECT name FROM {table}")
    assert [tuple(row) for row in cursor.fetchall()] == [("<b>Ada",)]
    cursor.execute(f"DROP TABLE {table}")
    admin.commit()
    admin.close()
