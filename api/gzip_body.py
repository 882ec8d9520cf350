"""Decompresses `Content-Encoding: gzip` request bodies (the SDK gzips batch submissions)."""

from __future__ import annotations

import gzip
import zlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.envelope import failure

MAX_BODY_BYTES = 256 * 1024 * 1024


class GzipRequestMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if headers.get(b"content-encoding", b"").strip().lower() != b"gzip":
            await self.app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        try:
            body = gzip.decompress(b"".join(chunks))
        except (OSError, EOFError, zlib.error):
            await failure(400, "body: Content-Encoding is gzip but the body is not gzip data")(
                scope, receive, send
            )
            return
        if len(body) > MAX_BODY_BYTES:
            await failure(413, "body: too large")(scope, receive, send)
            return
        new_headers = [
            (k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")
        ]
        new_headers.append((b"content-length", str(len(body)).encode()))
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": new_headers}, replay, send)
