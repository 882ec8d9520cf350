"""The API's access log: one line per request, in the process's log format (`core.logs`).

Logger `atomfleet.access`, level INFO; fields `method`, `route` (the matched route's
template, `/api/v2/jobs/{job_id}`, never the raw path), `status`, `duration_ms`, and in the
message the same in words. Never the query string, a header or a body: no token, no
signed link's signature reaches the log. Probes and scrapes (`/healthz`, `/readyz`,
`/metrics`) are left out (they would be most of the lines). A pure ASGI middleware, like
`api.request_metrics`, so it sees the answers of the other middlewares too.
"""

from __future__ import annotations

import logging
import time

from starlette.routing import Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.request_metrics import METHODS
from api.route_templates import RouteTemplates

log = logging.getLogger("atomfleet.access")

NOT_LOGGED = frozenset({"/metrics", "/healthz", "/readyz"})


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.templates = RouteTemplates(router)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.templates.match(scope)
        if route in NOT_LOGGED or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in METHODS else "other"
        started = time.perf_counter()
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            log.info(
                "%s %s %d %.2f ms",
                method,
                route,
                status,
                duration_ms,
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": duration_ms,
                },
            )
