"""The sessions app plus /metrics from prometheus_client's multiprocess collector."""

from prometheus_client import CollectorRegistry, generate_latest, multiprocess

from sessions_app import app as sessions_app


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/metrics":
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
        start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return sessions_app(environ, start_response)
