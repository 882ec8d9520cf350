"""Counts and times every HTTP request by its route template, method and status code.

A pure ASGI middleware, outermost but for Starlette's own error handler: it sees the
answers of the other middlewares too (413 for a body over the cap, 404 for a NUL in the
path, the 500 envelope). The `route` label is the matched route's template
(`/api/v2/jobs/{job_id}`), never the raw path, which carries ids. It is found before the
request runs, by matching it against the documented routes: the router's own choice is
not seen out here (the gzip middleware hands the router a copy of the scope, and the
answers of the middlewares never reach the router).
"""

from __future__ import annotations

import time

from starlette.routing import Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import ApiMetrics
from api.route_templates import RouteTemplates

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Prometheus's own scrapes would otherwise be most of the API's traffic.
NOT_COUNTED = frozenset({"/metrics"})


class RequestMetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics, router: Router) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = RouteTemplates(router)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.templates.match(scope)
        if route in NOT_COUNTED:
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in METHODS else "other"
        started = time.perf_counter()
        code = 500  # what Starlette answers to an error that escapes before any answer

        async def watch(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self.metrics.requests.labels(route, method, str(code)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - started)
