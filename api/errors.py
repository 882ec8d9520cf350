"""The one place where errors become HTTP responses; every error body is a JSON envelope."""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.envelope import failure
from api.route_templates import RouteTemplates
from core.errors import (
    AuthenticationError,
    ConflictError,
    GoneError,
    InvalidRequestError,
    NotFoundError,
    QuotaExceededError,
    ServiceUnavailableError,
)
from scheduler.submissions import NO_NUL

log = logging.getLogger(__name__)


def field_path(loc: tuple[int | str, ...]) -> str:
    """`('body', 'jobs', 2, 'runs')` -> `jobs[2].runs`."""
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def validation_messages(exc: ValidationError | RequestValidationError) -> list[str]:
    return [f"{field}: {reason}" for field, reason in validation_problems(exc)]


def validation_problems(
    exc: ValidationError | RequestValidationError, root: tuple[str, ...] = ()
) -> list[tuple[str, str]]:
    """(field, reason) of each error; `root` names what was validated (a bare JSON array
    of jobs is `jobs`, so that its errors read `jobs[0].runs` as in Create Batch)."""
    problems = []
    for err in exc.errors():
        field = field_path((*root, *err.get("loc", ())))
        reason = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if (
            err.get("type") == "string_pattern_mismatch"
            and err.get("ctx", {}).get("pattern") == NO_NUL
        ):
            reason = "must not contain NUL characters"
        if err.get("type") == "json_invalid":
            field, reason = "body", f"not valid JSON: {err.get('ctx', {}).get('error', reason)}"
        problems.append((field, reason))
    return problems


def install(app: FastAPI) -> None:
    templates = RouteTemplates(app.router)

    @app.exception_handler(InvalidRequestError)
    async def _invalid(_: Request, exc: InvalidRequestError) -> Response:
        return failure(422, exc.messages)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, exc: RequestValidationError) -> Response:
        return failure(422, validation_messages(exc))

    @app.exception_handler(ValidationError)
    async def _model_invalid(_: Request, exc: ValidationError) -> Response:
        return failure(422, validation_messages(exc))

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> Response:
        return failure(404, str(exc))

    @app.exception_handler(GoneError)
    async def _gone(_: Request, exc: GoneError) -> Response:
        return failure(410, str(exc))

    @app.exception_handler(QuotaExceededError)
    async def _quota(_: Request, exc: QuotaExceededError) -> Response:
        response = failure(429, str(exc))
        if exc.retry_after_s is not None:
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    @app.exception_handler(ConflictError)
    async def _conflict(_: Request, exc: ConflictError) -> Response:
        return failure(409, str(exc))

    @app.exception_handler(AuthenticationError)
    async def _unauthenticated(_: Request, exc: AuthenticationError) -> Response:
        response = failure(401, str(exc))
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(ServiceUnavailableError)
    async def _unavailable(_: Request, exc: ServiceUnavailableError) -> Response:
        return failure(503, str(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        response = failure(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route with this path only.
            response.headers["Allow"] = ", ".join(sorted(templates.methods(request.scope)))
        return response

    @app.exception_handler(OperationalError)
    async def _database_down(_: Request, exc: OperationalError) -> Response:
        log.warning("database unavailable: %s", exc)
        return failure(503, "the database is unavailable; try again")

    @app.exception_handler(PoolTimeoutError)
    async def _database_busy(_: Request, exc: PoolTimeoutError) -> Response:
        # Every pooled connection stayed busy for db_pool_timeout_s (a slow or hung store).
        log.warning("no database connection free: %s", exc)
        return failure(503, "the database is unavailable; try again")

    @app.exception_handler(redis.ConnectionError)
    async def _redis_down(_: Request, exc: redis.ConnectionError) -> Response:
        log.warning("Redis unavailable: %s", exc)
        return failure(503, "Redis is unavailable; try again")

    app.add_middleware(UnexpectedErrorMiddleware)


class UnexpectedErrorMiddleware:
    """Answers an unexpected error with a 500 envelope and keeps the connection usable.

    (Starlette's outermost handler answers too, but then re-raises, and the server drops
    the connection under the client's next request.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if started:
                raise
            await failure(500, "internal error")(scope, receive, send)
