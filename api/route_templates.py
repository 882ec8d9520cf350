"""The app's route templates (`/api/v2/jobs/{job_id}`), matched as its router matches them.

Built from the same flattened routes the OpenAPI document is built from, so a template is
exactly a documented path. FastAPI nests included routers (0.165 on), so the routes of
`app.router.routes` no longer carry their paths and methods themselves; older versions
list them directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from starlette.routing import Router, compile_path
from starlette.types import Scope

UNMATCHED = "unmatched"


@dataclass(frozen=True)
class _Template:
    regex: re.Pattern[str]
    methods: frozenset[str]
    path: str


class RouteTemplates:
    """Built at the first request (the routes are all included by then), then reused."""

    def __init__(self, router: Router) -> None:
        self._router = router
        self._table: list[_Template] | None = None

    def _templates(self) -> list[_Template]:
        if self._table is None:
            self._table = self._build()
        return self._table

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

    def methods(self, scope: Scope) -> set[str]:
        """Every method the routes of this path answer (the `Allow` header of a 405)."""
        path = _route_path(scope)
        return {m for t in self._templates() if t.regex.match(path) for m in t.methods}

    def match(self, scope: Scope) -> str:
        """The template of the route that answers `scope` (one with the path but not the
        method if none has both: that one answers 405), else `unmatched`."""
        path = _route_path(scope)
        partial = UNMATCHED
        for template in self._templates():
            if template.regex.match(path):
                if not template.methods or scope["method"] in template.methods:
                    return template.path
                if partial == UNMATCHED:
                    partial = template.path
        return partial


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
