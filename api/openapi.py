"""The OpenAPI document: every status code an operation can answer, and the request bodies
of the routes that parse their own (off the event loop).

Declared on every operation: 500 and 503 (a backing service failed); on every operation
with a body: 400 (gzip that is not) and 413 (over the body cap). Routes declare the rest
(401, 404, 409, 422, 429) through `api.schemas.doc`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, TypeAdapter

from api.schemas import ErrorEnvelope

_BODY_METHODS = {"post", "put", "patch"}
_PHRASES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


_BODIES: dict[str, tuple[Any, str]] = {}


def json_body(model: Any, description: str) -> dict[str, Any]:
    """`openapi_extra` of a route that reads its JSON body itself."""
    key = f"body-{len(_BODIES)}"
    _BODIES[key] = (model, description)
    return {"x-atomfleet-body": key}


def install(app: FastAPI) -> None:
    def document() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ErrorEnvelope"] = _schema(ErrorEnvelope, components)
        for methods in schema.get("paths", {}).values():
            for method, operation in methods.items():
                body = operation.pop("x-atomfleet-body", None)
                if body is not None:
                    model, description = _BODIES[body]
                    operation["requestBody"] = {
                        "required": True,
                        "description": description,
                        "content": {"application/json": {"schema": _schema(model, components)}},
                    }
                codes = [500, 503]
                if method in _BODY_METHODS:
                    codes += [400, 413]
                if operation.get("parameters") or "requestBody" in operation:
                    codes.append(422)
                responses = operation.setdefault("responses", {})
                for code in codes:
                    responses.setdefault(str(code), _error(code))
        app.openapi_schema = schema
        return schema

    app.openapi = document  # type: ignore[method-assign]


def _error(code: int) -> dict[str, Any]:
    return {
        "description": _PHRASES[code],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
    }


def _schema(model: Any, components: dict[str, Any]) -> dict[str, Any]:
    """`model`'s JSON schema, its definitions moved into the document's components."""
    adapter = TypeAdapter(model) if not _is_model(model) else None
    raw = (
        model.model_json_schema(ref_template="#/components/schemas/{model}")
        if adapter is None
        else adapter.json_schema(ref_template="#/components/schemas/{model}")
    )
    for name, definition in raw.pop("$defs", {}).items():
        components.setdefault(name, definition)
    if _is_model(model):
        components.setdefault(model.__name__, raw)
        return {"$ref": f"#/components/schemas/{model.__name__}"}
    return raw


def _is_model(model: Any) -> bool:
    return isinstance(model, type) and issubclass(model, BaseModel)
