"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
from fastapi import FastAPI
from sqlalchemy import text
from starlette.responses import Response

from api import errors, openapi
from api.body import BodyLimitMiddleware
from api.deps import Services
from api.envelope import failure, success
from api.guard import InputGuardMiddleware
from api.routes import batches, devices, jobs, oauth
from api.schemas import ErrorEnvelope
from core.config import Settings
from scheduler.db import engine_from_settings, make_sessionmaker
from scheduler.estimates import QueueEstimator
from scheduler.intake import Intake
from scheduler.reactions import redis_reactor
from scheduler.specs import DeviceSpecs


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    specs = DeviceSpecs(settings, client)
    engine = engine_from_settings(settings)
    services = Services(
        settings=settings,
        sessions=make_sessionmaker(
            engine,
            reactors=[redis_reactor(client, settings)],
            half_life_s=settings.fair_share_half_life_s,
        ),
        redis=client,
        intake=Intake(settings, specs),
        specs=specs,
        estimator=QueueEstimator(settings, client),
        secret_key=settings.resolved_secret_key(),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # Connections are closed, not left to the garbage collector.
        engine.dispose()
        client.close()

    app = FastAPI(
        lifespan=lifespan,
        title="atomfleet",
        version="0.1.0",
        description="Batch and job API of a neutral-atom quantum cloud (Pasqal Cloud compatible).",
    )
    app.state.services = services
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        max_small_bytes=settings.max_small_body_bytes,
    )
    app.add_middleware(InputGuardMiddleware)
    errors.install(app)
    app.include_router(batches.router)
    app.include_router(jobs.router)
    app.include_router(devices.router)
    app.include_router(oauth.router)

    @app.get(
        "/healthz",
        tags=["operations"],
        summary="Health",
        responses={503: {"model": ErrorEnvelope}},
    )
    def healthz() -> Response:
        """200 when the store and Redis answer."""
        problems = []
        try:
            with services.sessions() as session:
                session.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001
            problems.append(f"database: {exc}")
        try:
            services.redis.ping()
        except redis.RedisError as exc:
            problems.append(f"redis: {exc}")
        return failure(503, problems) if problems else success({"ok": True})

    openapi.install(app)
    return app
