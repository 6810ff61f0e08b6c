"""A guestbook: a small, real WSGI app whose handlers use ``environ["db.conn"]``.

Run it with ``make demo`` (SQLite, http://127.0.0.1:8000), or against a server::

    DATABASE_URL=postgresql://postgres@127.0.0.1/test make demo
    DATABASE_URL=mysql://root@127.0.0.1/test make demo

The page shows the serving worker's pool figures: reload it and watch the reuse ratio
grow while the number of connections opened stays put. ``/stats`` is the middleware's
stats endpoint: JSON, or Prometheus text with ``?format=prometheus``.
"""

import datetime
import html
import os
from urllib.parse import parse_qs

from wsgipool import PoolMiddleware

TABLE = os.environ.get("GUESTBOOK_TABLE", "guestbook")
MAX_BODY = 10_000  # bytes: a guestbook form is small


def guestbook(environ, start_response):
    """Route a request to its handler."""
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
    if path == "/" and method == "GET":
        return show(environ, start_response)
    if path == "/sign" and method == "POST":
        return sign(environ, start_response)
    return respond(start_response, "404 Not Found", "Not found\n", "text/plain")


def show(environ, start_response, error=""):
    conn = environ["db.conn"]
    cursor = conn.cursor()
    cursor.execute(f"SELECT name, message, created_at FROM {TABLE} "
                   "ORDER BY created_at DESC LIMIT 50")
    rows = cursor.fetchall()
    conn.rollback()  # end the read transaction: the pool need not clean up after us
    status = "400 Bad Request" if error else "200 OK"
    return respond(start_response, status, page(rows, environ, error), "text/html")


def sign(environ, start_response):
    try:
        length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_BODY)
    except ValueError:
        length = 0
    form = parse_qs(environ["wsgi.input"].read(length).decode("utf-8", "replace"))
    name = form.get("name", [""])[0].strip()
    message = form.get("message", [""])[0].strip()
    if not 1 <= len(name) <= 100 or not 1 <= len(message) <= 500:
        error = "Please give a name (1-100 characters) and a message (1-500 characters)."
        return show(environ, start_response, error)
    conn = environ["db.conn"]
    mark = "?" if environ["wsgipool.pool"].paramstyle == "qmark" else "%s"
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")
    conn.cursor().execute(
        f"INSERT INTO {TABLE} (name, message, created_at) VALUES ({mark}, {mark}, {mark})",
        (name, message, now),
    )
    conn.commit()
    start_response("303 See Other", [("Location", "/"), ("Content-Type", "text/plain"),
                                     ("Content-Length", "0")])
    return [b""]


def respond(start_response, status, text, content_type):
    body = text.encode("utf-8")
    start_response(status, [("Content-Type", f"{content_type}; charset=utf-8"),
                            ("Content-Length", str(len(body)))])
    return [body]


def page(rows, environ, error):
    esc = html.escape
    entries = "".join(
        f"<li><b>{esc(name)}</b> <small>{esc(created[:19].replace('T', ' '))} UTC</small>"
        f"<p>{esc(message)}</p></li>" for name, message, created in rows
    ) or "<li><i>No messages yet: be the first.</i></li>"
    notice = f'<p class="error">{esc(error)}</p>' if error else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>wsgipool guestbook</title><style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 52em; margin: 2em auto; padding: 0 1em; }}
main {{ display: grid; grid-template-columns: 3fr 2fr; gap: 2em; }}
ul {{ list-style: none; padding: 0; }} li {{ border-bottom: 1px solid #ddd; padding: .5em 0; }}
li p {{ margin: .2em 0; }} input, textarea {{ width: 100%; box-sizing: border-box; }}
.error {{ color: #b00; }} table {{ border-collapse: collapse; width: 100%; }}
td {{ padding: .15em .4em; border-bottom: 1px solid #eee; }} td:last-child {{ text-align: right; }}
aside {{ background: #f6f6f2; padding: 1em; border-radius: 6px; }}
</style></head><body>
<h1>Guestbook</h1>
<main><section>
{notice}
<form method="post" action="/sign">
<p><label>Name <input name="name" maxlength="100" required></label></p>
<p><label>Message <textarea name="message" maxlength="500" rows="3" required></textarea></label></p>
<p><button>Sign</button></p>
</form>
<ul>{entries}</ul>
</section>
{stats_panel(environ)}
</main></body></html>
"""


def stats_panel(environ):
    """This worker's pool, at a glance: is it reusing connections, is anyone waiting?"""
    s = environ["wsgipool.pool"].stats()
    ms = lambda seconds: f"{seconds * 1000:.2f} ms"  # noqa: E731
    discards = ", ".join(f"{k} {v}" for k, v in s["discard_reasons"].items() if v) or "none"
    rows = [
        ("worker pid", os.getpid()),
        ("reuse ratio", s["reuse_ratio"]),
        ("connections opened", s["connects"]),
        ("requests served (checkouts)", s["checkouts"]),
        ("in use / idle / max", f"{s['in_use']} / {s['idle']} / {s['max_size']}"),
        ("waits / timeouts", f"{s['waits']} / {s['timeouts']}"),
        ("wait p50 / p99", f"{ms(s['wait_seconds']['p50'])} / {ms(s['wait_seconds']['p99'])}"),
        ("hold p50 / p99", f"{ms(s['hold_seconds']['p50'])} / {ms(s['hold_seconds']['p99'])}"),
        ("rollbacks on return", s["rollbacks"]),
        ("discards", discards),
        ("this request waited", f"{environ.get('wsgipool.wait_ms', '?')} ms"),
    ]
    cells = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                    for k, v in rows)
    return (f"<aside><h2>Pool</h2><p>{s['checkouts']} requests served by {s['connects']} "
            f"connection(s) opened in this worker.</p><table>{cells}</table>"
            f'<p><a href="/stats">/stats</a> (JSON; <a href="/stats?format=prometheus">'
            f"Prometheus</a>): the middleware's own endpoint</p></aside>")


# The URL and pool options come from gunicorn.conf.py or DATABASE_URL; /stats is the
# middleware's stats endpoint (keep such a path off public networks).
app = PoolMiddleware(guestbook, stats_path="/stats")



def create_table():
    with app.pool.connection() as conn:
        try:
            conn.cursor().execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (name VARCHAR(100) NOT NULL, "
                "message VARCHAR(500) NOT NULL, created_at VARCHAR(32) NOT NULL)"
            )
            conn.commit()
        except Exception:  # two workers raced to create it (PostgreSQL): is it there now?
            conn.rollback()
            conn.cursor().execute(f"SELECT 1 FROM {TABLE} WHERE 1 = 0")
            conn.rollback()


create_table()
