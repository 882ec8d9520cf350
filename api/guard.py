"""Refuses NUL characters in the path and query before any route sees them.

No id or filter can contain one (the store cannot even hold it), so a path with one is
a 404 and a query parameter with one a 422 naming the parameter.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from api.envelope import failure


class InputGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if "\x00" in scope["path"]:
                await failure(404, "not found")(scope, receive, send)
                return
            query = scope.get("query_string", b"").decode("latin-1")
            for key, value in parse_qsl(query, keep_blank_values=True):
                if "\x00" in key or "\x00" in value:
                    name = key.replace("\x00", "\\0")[:40]
                    await failure(422, f"{name}: must not contain NUL characters")(
                        scope, receive, send
                    )
                    return
        await self.app(scope, receive, send)
