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
    status, headers, body = call(app, "/stats")
    stats = json.loads(body)
    assert headers["Content-Type"].startswith("application/json")
    assert stats["connects"] == 1 and stats["checkouts"] >= 5
    assert stats["rollbacks"] == 0  # every handler ends its own transaction
    assert call(app, "/nope")[0] == "404 Not Found"
