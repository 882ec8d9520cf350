"""The baseline: a bare Celery app with atomfleet's broker settings and a task that only
counts itself done (one INCR), run by a bare worker on the same Redis."""

from __future__ import annotations

import redis
from celery import Celery

from core.broker import celery_config
from core.config import Settings


def done_key(settings: Settings) -> str:
    return f"{settings.namespace}:raw:done"


def make_app(settings: Settings) -> Celery:
    app = Celery("raw")
    app.conf.update(celery_config(settings))
    client = redis.Redis.from_url(settings.redis_url)
    key = done_key(settings)

    @app.task(name="raw.noop")  # type: ignore[untyped-decorator]
    def noop(payload: dict[str, object]) -> None:
        client.incr(key)

    return app


app = make_app(Settings())  # what `celery -A bench.raw_celery worker` runs (env-configured)
