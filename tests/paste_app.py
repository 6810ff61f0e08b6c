"""The app a PasteDeploy ini file under test names (``use = call:paste_app:make_app``)."""

import json


def make_app(global_conf, **settings):
    def app(environ, start_response):
        conn = environ["db.conn"]
        cursor = conn.cursor()
        cursor.execute("SELECT 1")
        answer = {
            "one": cursor.fetchone()[0],
            "databases": sorted(environ.get("wsgipool.connections", {"default": 0})),
        }
        conn.rollback()
        body = json.dumps(answer).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return app
