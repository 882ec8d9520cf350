"""Request bodies: capped while they stream, gzip inflated incrementally off the event loop.

The cap holds for the decompressed size too, so a 1 MB gzip bomb is refused after
inflating one cap's worth, in a worker thread, while other requests are served. Create
Batch and Add Jobs get `max_body_bytes`; every other route `max_small_body_bytes`.
Memory is bounded per process too: at most `INFLATING` bodies inflate at once, and the
heap is trimmed after a refusal (32 concurrent bombs left the API at 2-3 GB).
"""

from __future__ import annotations

import re
import zlib

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.envelope import failure
from core.malloc import trim

# The routes whose bodies carry jobs.
_LARGE_BODIES = re.compile(r"^/api/(v1/batches|v2/batches/[^/]+/jobs)/?$")
INFLATING = 4  # gzip bodies inflated at once in this process
_STEP = 1024 * 1024  # inflated per call: a refusal never holds more than the cap


class BodyTooLarge(ValueError):
    pass


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, max_small_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_small_bytes = max_small_bytes
        self._inflating: anyio.CapacityLimiter | None = None  # made in the event loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        cap = self.max_bytes if _LARGE_BODIES.match(scope["path"]) else self.max_small_bytes
        headers = dict(scope["headers"])
        gzipped = headers.get(b"content-encoding", b"").strip().lower() == b"gzip"
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > cap:
            await _too_large(cap)(scope, receive, send)
            return
        try:
            body = await _read(receive, cap)
            if gzipped:
                if self._inflating is None:
                    self._inflating = anyio.CapacityLimiter(INFLATING)
                body = await anyio.to_thread.run_sync(_gunzip, body, cap, limiter=self._inflating)
        except BodyTooLarge:
            await anyio.to_thread.run_sync(trim)
            await _too_large(cap)(scope, receive, send)
            return
        except (zlib.error, EOFError):
            await failure(400, "body: Content-Encoding is gzip but the body is not gzip data")(
                scope, receive, send
            )
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


async def _read(receive: Receive, cap: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _gunzip(data: bytes, cap: int) -> bytes:
    """Inflate every gzip member of `data`, refusing to produce more than `cap` bytes."""
    out: list[bytes] = []
    size = 0
    while data:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        while not inflater.eof:
            chunk = inflater.decompress(data, min(_STEP, cap - size + 1))
            size += len(chunk)
            if size > cap:
                # Freed now: the exception's traceback keeps this frame (and `out`) alive
                # until the garbage collector breaks its cycles.
                out.clear()
                raise BodyTooLarge
            out.append(chunk)
            data = inflater.unconsumed_tail
            if not chunk and not data:
                break  # it needs more input than there is: truncated
        if not inflater.eof:
            raise EOFError("truncated gzip data")
        data = inflater.unused_data
    return b"".join(out)


def _too_large(cap: int) -> ASGIApp:
    response = failure(413, f"body: over the limit of {cap} bytes")
    response.headers["Connection"] = "close"
    return response
