"""The guestbook on Flask, with wsgipool's extension: ``get_db()`` in views and commands.

Run it (SQLite in the working directory unless DATABASE_URL says otherwise)::

    gunicorn --chdir examples flask_app:app
    flask --app examples/flask_app.py count     # a CLI command: get_db() works there too

``Pool(app)`` wraps ``app.wsgi_app``, so Flask's own ``app.run()`` and test client go
through the pool too. The same code runs on PostgreSQL and MariaDB: the placeholder
comes from the pool's ``paramstyle``.
"""

import datetime
import os

import click
from flask import Flask, jsonify, redirect, render_template_string, request

from wsgipool.flask import Pool, get_db

TABLE = os.environ.get("GUESTBOOK_TABLE", "guestbook")

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
app.config["WSGIPOOL_URL"] = os.environ.get("DATABASE_URL", "sqlite:///flask_guestbook.db")
pool = Pool(app)


def mark():
    return "?" if pool.pool.paramstyle == "qmark" else "%s"


@app.get("/")
def show():
    cursor = get_db().cursor()
    cursor.execute(f"SELECT name, message FROM {TABLE} ORDER BY created_at DESC LIMIT 50")
    rows = cursor.fetchall()
    get_db().rollback()  # end the read transaction
    return render_template_string(PAGE, rows=rows, pid=os.getpid(), stats=pool.stats())


@app.post("/sign")
def sign():
    name = request.form.get("name", "").strip()[:100]
    message = request.form.get("message", "").strip()[:500]
    if not name or not message:
        return "Please give a name and a message.\n", 400
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")
    get_db().cursor().execute(
        f"INSERT INTO {TABLE} (name, message, created_at) VALUES ({mark()}, {mark()}, {mark()})",
        (name, message, now))
    get_db().commit()
    return redirect("/", code=303)


@app.get("/stats")
def stats():
    return jsonify(pid=os.getpid(), **pool.stats())


@app.cli.command("count")
def count():
    """Print how many times the guestbook was signed."""
    cursor = get_db().cursor()  # checked out for the command, given back when it ends
    cursor.execute(f"SELECT COUNT(*) FROM {TABLE}")
    click.echo(cursor.fetchone()[0])


def create_table():
    conn = get_db()
    try:
        conn.cursor().execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (name VARCHAR(100) NOT NULL, "
            "message VARCHAR(500) NOT NULL, created_at VARCHAR(32) NOT NULL)")
        conn.commit()
    except Exception:  # another worker created it at the same moment
        conn.rollback()


with app.app_context():  # outside a request: a connection for this block only
    create_table()
