"""What orchestrators and Prometheus call: liveness, readiness and the metrics.

- `/healthz`: the process is alive and serves HTTP; it touches neither the database nor
  Redis, so an outage of those never gets healthy API pods restarted (liveness).
- `/readyz`: the database and Redis answer; while they do not, the pod leaves the load
  balancer (readiness), and tests and `atomfleet run` wait on it.
- `/metrics`: this process's metrics in the Prometheus text format (or OpenMetrics when
  asked for).
"""

from __future__ import annotations

import redis
from fastapi import APIRouter, Request
from prometheus_client.exposition import choose_encoder
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from starlette.responses import Response

from api.deps import ServicesDep
from api.envelope import failure, success
from api.schemas import ErrorEnvelope

router = APIRouter(tags=["operations"])

_TEXT = {"schema": {"type": "string"}}


@router.get("/healthz", summary="Liveness")
def healthz() -> Response:
    """200 while the process serves HTTP (the database and Redis are not asked)."""
    return success({"ok": True})


@router.get("/readyz", summary="Readiness", responses={503: {"model": ErrorEnvelope}})
def readyz(svc: ServicesDep) -> Response:
    """200 when the store and Redis answer, else 503 naming which does not."""
    problems = readiness_problems(svc.sessions, svc.redis)
    return failure(503, problems) if problems else success({"ok": True})


def readiness_problems(sessions: sessionmaker[Session], client: redis.Redis) -> list[str]:
    """What keeps this process from serving: the database or Redis not answering."""
    problems = []
    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001  # any failure of the store means not ready
        problems.append(f"database: {exc}")
    try:
        client.ping()
    except redis.RedisError as exc:
        problems.append(f"redis: {exc}")
    return problems


@router.get(
    "/metrics",
    summary="Metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format (OpenMetrics when the Accept header asks).",
            "content": {"text/plain": _TEXT, "application/openmetrics-text": _TEXT},
        }
    },
)
def metrics(request: Request, svc: ServicesDep) -> Response:
    """This API process's metrics (each replica serves its own)."""
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(svc.metrics.registry), headers={"Content-Type": content_type})
