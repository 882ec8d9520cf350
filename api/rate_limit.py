"""Per-client-address limits of the endpoints anyone may call without a token.

The client address is what uvicorn puts in the request's scope: behind a proxy listed in
ATOMFLEET_FORWARDED_ALLOW_IPS, the X-Forwarded-For address; so behind a proxy that is not
listed, every client shares the proxy's address and its limit (deploy/README.md).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request

from api.deps import Services, services
from core.errors import RateLimitedError


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def limited(name: str) -> Callable[[Request], None]:
    """A route dependency counting each call against `ATOMFLEET_RATE_LIMIT_<NAME>` per
    client address; over it, a 429 with Retry-After."""

    def dependency(request: Request) -> None:
        svc: Services = services(request)
        limit: str = getattr(svc.settings, f"rate_limit_{name}")
        verdict = svc.limiter.hit(limit, name, client_address(request))
        if not verdict.allowed:
            raise RateLimitedError(
                "client address",
                f"more than {limit} calls from {client_address(request)}; try again later",
                verdict.retry_after_s,
            )

    return dependency
