"""The guestbook on Flask, with wsgipool underneath: ``request.environ["db.conn"]``.

Run it (SQLite in the working directory unless DATABASE_URL says otherwise)::

    gunicorn --chdir examples flask_app:app

``app.wsgi_app`` is wrapped, not ``app``, so Flask's own ``app.run()`` and test client
go through the pool too. The same code runs on PostgreSQL and MariaDB: the placeholder
comes from the pool's ``paramstyle``.
"""

import datetime
import os

from flask import Flask, g, jsonify, redirect, render_template_string, request

from wsgipool import PoolMiddleware

TABLE = os.environ.get("GUESTBOOK_TABLE", "guestbook")
DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite:///flask_guestbook.db")

PAGE = """<!doctype html><title>Guestbook (Flask)</title>
<h1>Guestbook</h1>
<form method="post" action="/sign">
  <input name="name" placeholder="name" maxlength="100" required>
  <input name="message" placeholder="message" maxlength="500" required>
  <button>Sign</button>
</form>
<ul>{% for name, message in rows %}<li><b>{{ name }}</b>: {{ message }}</li>{% endfor %}</ul>
<p>{{ stats.checkouts }} requests served by {{ stats.connects }} connection(s) in pid {{ pid }}.</p>
"""

app = Flask(__name__)


def db():
    """This request's pooled connection (checked out by the middleware)."""
    return request.environ["db.conn"]


def mark():
    return "?" if request.environ["wsgipool.pool"].paramstyle == "qmark" else "%s"


@app.get("/")
def show():
    cursor = db().cursor()
    cursor.execute(f"SELECT name, message FROM {TABLE} ORDER BY created_at DESC LIMIT 50")
    rows = cursor.fetchall()
    db().rollback()  # end the read transaction
    return render_template_string(PAGE, rows=rows, pid=os.getpid(),
                                  stats=request.environ["wsgipool.pool"].stats())


@app.post("/sign")
def sign():
    name = request.form.get("name", "").strip()[:100]
    message = request.form.get("message", "").strip()[:500]
    if not name or not message:
        return "Please give a name and a message.\n", 400
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")
    db().cursor().execute(
        f"INSERT INTO {TABLE} (name, message, created_at) VALUES ({mark()}, {mark()}, {mark()})",
        (name, message, now))
    db().commit()
    return redirect("/", code=303)


@app.get("/stats")
def stats():
    return jsonify(pid=os.getpid(), **request.environ["wsgipool.pool"].stats())


app.wsgi_app = PoolMiddleware(app.wsgi_app, DATABASE_URL)


def create_table():
    with app.wsgi_app.pool.connection() as conn:
        try:
            conn.cursor().execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (name VARCHAR(100) NOT NULL, "
                "message VARCHAR(500) NOT NULL, created_at VARCHAR(32) NOT NULL)")
            conn.commit()
        except Exception:  # another worker created it at the same moment
            conn.rollback()


create_table()
