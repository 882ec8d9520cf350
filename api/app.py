"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors, openapi
from api.access_log import AccessLogMiddleware
from api.body import BodyLimitMiddleware
from api.deps import Services
from api.guard import InputGuardMiddleware
from api.limiter import Limiter
from api.login import PasswordHashing
from api.metrics import ApiMetrics
from api.ready_metric import ReadyCollector
from api.request_metrics import RequestMetricsMiddleware
from api.routes import batches, devices, jobs, oauth, probes
from api.routes.probes import readiness_problems
from api.specs_cache import SpecsCache
from core.config import Settings
from core.metrics import version
from core.redis_client import redis_client
from scheduler.db import engine_from_settings, make_sessionmaker
from scheduler.estimates import QueueEstimator
from scheduler.intake import Intake
from scheduler.reactions import redis_reactor
from scheduler.sandbox import Sandbox
from scheduler.specs import DeviceSpecs


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    client = redis_client(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    specs = DeviceSpecs(settings, client)
    metrics = ApiMetrics(settings.devices)
    engine = engine_from_settings(settings)
    services = Services(
        settings=settings,
        sessions=make_sessionmaker(
            engine,
            reactors=[redis_reactor(client, settings), metrics.reactor()],
            half_life_s=settings.fair_share_half_life_s,
        ),
        redis=client,
        intake=Intake(settings, specs),
        specs=specs,
        estimator=QueueEstimator(settings, client),
        secret_keys=settings.resolved_secret_keys(),
        metrics=metrics,
        specs_cache=SpecsCache(specs),
        limiter=Limiter(client, settings.namespace),
        hashing=PasswordHashing(settings.login_hash_threads, settings.login_hash_queue),
    )

    metrics.registry.register(
        ReadyCollector(lambda: readiness_problems(services.sessions, services.redis))
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        services.specs_cache.warm()
        if settings.intake_processes:
            services.intake.sandbox = Sandbox(
                settings.intake_processes,
                settings.intake_cpu_budget_s,
                settings.intake_memory_budget_mb,
            )
        yield
        if services.intake.sandbox is not None:
            services.intake.sandbox.close()
        # Connections are closed, not left to the garbage collector.
        services.hashing.close()
        engine.dispose()
        client.close()

    app = FastAPI(
        lifespan=lifespan,
        title="atomfleet",
        version=version(),
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
    # One access log line per request (api/access_log.py), of what the middlewares answer too.
    app.add_middleware(AccessLogMiddleware, router=app.router)
    # Outermost (added last): it counts what every other middleware answers too.
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics, router=app.router)
    app.include_router(batches.router)
    app.include_router(jobs.router)
    app.include_router(devices.router)
    app.include_router(oauth.router)
    app.include_router(probes.router)
    openapi.install(app)
    return app
