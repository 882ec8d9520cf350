"""The one place where errors become HTTP answers.

Under /api/v1 every answer is an envelope, bad input included (HTTP 400, as the QPU's
clients expect, never FastAPI's 422). Control endpoints keep FastAPI's own answers.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from qpu_simulator.envelope import failure
from qpu_simulator.errors import SimulatorError, UnauthorizedError
from qpu_simulator.protocol import API_PREFIX


def error_response(exc: SimulatorError) -> JSONResponse:
    response = failure(exc.http_status, exc.code, exc.message, exc.data)
    if isinstance(exc, UnauthorizedError):
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _field(loc: tuple[int | str, ...]) -> str:
    """`('body', 'context', 'batch_id')` -> `context.batch_id`."""
    parts = [str(p) for p in loc if p not in ("body", "path", "query", "header")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(SimulatorError)
    async def _simulator_error(_: Request, exc: SimulatorError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _bad_input(request: Request, exc: RequestValidationError) -> Response:
        if not request.url.path.startswith(API_PREFIX):
            return await request_validation_exception_handler(request, exc)
        problems = [f"{_field(tuple(e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors()]
        message = "; ".join(problems) or "invalid request"
        return failure(400, "400", message, {"problems": problems})

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        if not request.url.path.startswith(API_PREFIX):
            return await http_exception_handler(request, exc)
        return failure(exc.status_code, str(exc.status_code), str(exc.detail))
