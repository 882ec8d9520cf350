"""The `{"code", "message", "data", "status"}` envelope every `/api/v1` answer is wrapped in."""

from __future__ import annotations

from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from qpu_simulator.protocol import SUCCESS_CODE, SUCCESS_MESSAGE, EnvelopeStatus


def success(data: Any) -> dict[str, Any]:
    """The body of a 200 answer (FastAPI serializes it)."""
    return {
        "code": SUCCESS_CODE,
        "message": SUCCESS_MESSAGE,
        "data": data,
        "status": EnvelopeStatus.SUCCESS.value,
    }


def failure(
    http_status: int, code: str, message: str, data: dict[str, Any] | None = None
) -> JSONResponse:
    """An error answer: `fail` for 4xx (the caller's mistake), `error` for 5xx."""
    status = EnvelopeStatus.ERROR if http_status >= 500 else EnvelopeStatus.FAIL
    body = {
        "code": code,
        "message": message,
        "data": {"description": message, **(data or {})},
        "status": status.value,
    }
    return JSONResponse(status_code=http_status, content=jsonable_encoder(body))
