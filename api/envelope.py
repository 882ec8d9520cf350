"""The JSend-like envelopes the clients read: `data` on success, `data.description` on error."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from starlette.responses import Response


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def success(
    data: Any, status_code: int = 200, pagination: dict[str, int] | None = None
) -> Response:
    payload: dict[str, Any] = {
        "status": "success",
        "code": status_code,
        "message": "OK.",
        "data": data,
    }
    if pagination is not None:
        payload["pagination"] = pagination
    return Response(_json(payload), status_code=status_code, media_type="application/json")


def paged(data: list[Any], total: int, offset: int, end: int) -> Response:
    """A list page: `pagination` in the body, `Content-Range: first-last/total` in the headers."""
    response = success(data, pagination={"total": total, "start": offset, "end": end})
    last = offset + len(data) - 1 if data else offset
    response.headers["Content-Range"] = f"{offset}-{last}/{total}"
    response.headers["Access-Control-Expose-Headers"] = "Content-Range"
    return response


# An error quotes at most an excerpt of what was sent, never the whole document.
MAX_DESCRIPTION_CHARS = 400


def _clip(item: str) -> str:
    if len(item) <= MAX_DESCRIPTION_CHARS:
        return item
    return item[: MAX_DESCRIPTION_CHARS - 1] + "…"


def failure(status_code: int, description: list[str] | str) -> Response:
    items = [
        _clip(item) for item in ([description] if isinstance(description, str) else description)
    ]
    payload = {
        "status": "fail",
        "code": status_code,
        "message": HTTPStatus(status_code).phrase,
        "data": {"description": items},
    }
    return Response(_json(payload), status_code=status_code, media_type="application/json")


def raw(data: Any) -> Response:
    """A bare JSON object, as the results download returns it."""
    return Response(_json(data), media_type="application/json")
