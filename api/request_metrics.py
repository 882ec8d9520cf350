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

import re
import time
from dataclasses import dataclass
from typing import Any

from starlette.routing import Router, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import ApiMetrics

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Prometheus's own scrapes would otherwise be most of the API's traffic.
NOT_COUNTED = frozenset({"/metrics"})


@dataclass(frozen=True)
class _Template:
    regex: re.Pattern[str]
    methods: frozenset[str]
    path: str


class RouteTemplates:
    """The app's route templates, matched the way its router matches them.

    Built from the same flattened routes the OpenAPI document is built from, so a label
    is exactly a documented path (FastAPI nests included routers; older versions list
    their routes directly).
    """

    def __init__(self, router: Router) -> None:
        self._router = router
        self._table: list[_Template] | None = None

    def _build(self) -> list[_Template]:
        try:
            from fastapi.routing import iter_route_contexts

            flat: list[Any] = list(iter_route_contexts(self._router.routes))
        except ImportError:  # FastAPI before 0.165
            flat = list(self._router.routes)
        table = []
        for route in flat:
            path = getattr(route, "path_format", None) or getattr(route, "path", None)
            if isinstance(path, str) and path:
                regex, _, _ = compile_path(path)
                methods = frozenset(getattr(route, "methods", None) or ())
                table.append(_Template(regex, methods, path))
        return table

    def match(self, scope: Scope) -> str:
        """The template of the route that answers `scope` (one with the path but not the
        method if none has both: that one answers 405), else `unmatched`."""
        if self._table is None:
            self._table = self._build()  # the routes are all included by the first request
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        partial = UNMATCHED
        for template in self._table:
            if template.regex.match(path):
                if not template.methods or scope["method"] in template.methods:
                    return template.path
                if partial == UNMATCHED:
                    partial = template.path
        return partial


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
