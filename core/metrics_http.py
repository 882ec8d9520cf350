"""The small HTTP server of the processes that serve no HTTP of their own (scheduler, workers).

`/metrics` is prometheus_client's WSGI app (content negotiation, gzip); `/healthz` answers
200 or 503 from a check the process supplies, with the reason in the body, so that a
liveness probe or an operator's curl says what is wrong. A thread per request, in daemon
threads: a slow scrape never holds a probe, and the server never holds the process.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from core.health import Health, HealthCheck

log = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the log."""


def _app(registry: Collector, health: HealthCheck) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            try:
                found = health()
            except Exception as exc:  # a check that fails says unhealthy, never 500
                log.exception("health check failed")
                found = Health(False, f"the health check failed: {exc}")
            body = json.dumps({"ok": found.ok, "detail": found.detail}).encode()
            status = "200 OK" if found.ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"/metrics or /healthz\n"]

    return app


class MetricsServer:
    """Serves `/metrics` from `registry` and `/healthz` from `health`, in a daemon thread."""

    def __init__(self, host: str, port: int, registry: Collector, health: HealthCheck) -> None:
        self._server = make_server(
            host, port, _app(registry, health), ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
