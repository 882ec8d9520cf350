"""The operations metrics: dispatchable jobs (KEDA's demand) leave out what a project's
running cap holds back; Redis's memory; webhook attempts by outcome; the API's readiness.
All on the real store, Redis and HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from atomfleet.services import free_port
from core.config import Settings
from core.enums import DeviceType, EventKind
from core.metrics import new_registry
from scheduler import projects
from scheduler.metrics import SchedulerMetrics
from scheduler.models import Job, utcnow
from scheduler.ops_collector import OpsCollector
from scheduler.webhooks.delivery import WebhookSender
from tests.conftest import Account, make_account
from tests.metrics_support import Scrape, report, submit
from tests.test_webhooks import Receiver, ended_with_webhook

MPS, SV, NOOP = DeviceType.EMU_MPS, DeviceType.EMU_SV, DeviceType.NOOP


def scrape(registry: object) -> Scrape:
    return Scrape(generate_latest(registry).decode())  # type: ignore[arg-type]


def ops_registry(
    sessions: sessionmaker[Session], client: redis.Redis, devices: list[DeviceType]
) -> object:
    registry = new_registry()
    registry.register(OpsCollector(sessions, client, devices))
    return registry


def test_a_capped_projects_waiting_jobs_are_not_dispatchable(
    sessions: sessionmaker[Session], account: Account, redis_client: redis.Redis
) -> None:
    # Given a project capped at 2 running jobs per device, with 10 EMU_MPS jobs of which one
    # is dispatched (in flight) and one runs: no room is left, its 8 others are held back
    capped = account
    with sessions.begin() as session:
        projects.configure(session, capped.project_id, max_running_per_device=2)
    jobs = submit(sessions, capped, MPS, "HIGH", 10)
    report(sessions, jobs[0], EventKind.RUNNING, started_at=time.time())
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id.in_(jobs[:2])).values(dispatched_at=utcnow()))
    # And an uncapped project with 3 waiting EMU_MPS jobs, and a capped one of 4 on EMU_SV
    # with room for 3
    free = make_account(sessions)
    submit(sessions, free, MPS, "LOW", 3)
    roomy = make_account(sessions)
    with sessions.begin() as session:
        projects.configure(session, roomy.project_id, max_running_per_device=3)
    submit(sessions, roomy, SV, "MEDIUM", 4)
    # When the scheduler's operations gauges are scraped
    found = scrape(ops_registry(sessions, redis_client, [MPS, SV, NOOP]))
    # Then EMU_MPS's dispatchable jobs are the uncapped 3 and the dispatched one still
    # waiting for a worker; the capped project's 8 others are no demand
    assert found.value("atomfleet_jobs_dispatchable", device_type="EMU_MPS") == 4
    assert found.value("atomfleet_jobs_dispatchable", device_type="EMU_SV") == 3
    assert found.value("atomfleet_jobs_dispatchable", device_type="NOOP") == 0
    # And when the cap is lifted, every waiting job is demand again
    with sessions.begin() as session:
        projects.configure(session, capped.project_id, max_running_per_device=0)
    lifted = scrape(ops_registry(sessions, redis_client, [MPS, SV, NOOP]))
    assert lifted.value("atomfleet_jobs_dispatchable", device_type="EMU_MPS") == 12


def test_redis_memory_is_what_info_memory_says(
    sessions: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    found = scrape(ops_registry(sessions, redis_client, [MPS]))
    used = found.value("atomfleet_redis_memory_used_bytes")
    assert 100_000 < used < 64 * 2**30
    configured = int(str(redis_client.config_get("maxmemory")["maxmemory"]))
    assert found.value("atomfleet_redis_memory_max_bytes") == configured
    # A Redis that does not answer leaves its part out; the store's is still served
    gone = redis.Redis(port=free_port(), socket_connect_timeout=1)
    partial = scrape(ops_registry(sessions, gone, [MPS]))
    assert "atomfleet_redis_memory_used_bytes" not in partial.names()
    assert partial.value("atomfleet_jobs_dispatchable", device_type="EMU_MPS") == 0


@pytest.fixture
def noop(settings: Settings) -> Settings:
    return settings.model_copy(update={"devices": [NOOP]})


@pytest.fixture
def api(noop: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(noop)) as c:
        yield c


def test_webhook_attempts_are_counted_by_outcome(
    api: TestClient, noop: Settings, sessions: sessionmaker[Session], account: Account
) -> None:
    receiver = Receiver()
    try:
        ended_with_webhook(api, account, receiver.url)
        ended_with_webhook(api, account, "http://10.0.0.1:8080/hook")  # refused
        ended_with_webhook(api, account, f"http://127.0.0.1:{free_port()}/hook")  # no answer
        metrics = SchedulerMetrics(new_registry(), [NOOP])
        allowed = noop.model_copy(
            update={"webhook_allow_hosts": ["127.0.0.1"], "webhook_retry_s": [0.0]}
        )
        sender = WebhookSender(allowed, sessions, metrics.webhook_attempted)
        receiver.answers = [500]  # the first POST fails, its retry is delivered
        assert sender.deliver_once() == 3
        assert sender.deliver_once() == 2  # the retries of the 500 and of the silent one
    finally:
        receiver.close()
    found = scrape(metrics.registry)
    counts = {o: found.value("atomfleet_webhook_attempts_total", outcome=o) for o in (
        "delivered", "rejected", "refused", "unreachable", "gone")}  # fmt: skip
    assert counts == {"delivered": 1, "rejected": 1, "refused": 1, "unreachable": 2, "gone": 0}


def test_the_api_says_it_is_ready_only_while_its_database_and_redis_answer(
    api: TestClient, tmp_path: Path
) -> None:
    ready = Scrape(api.get("/metrics").text)
    assert ready.value("atomfleet_api_ready") == 1
    ready.assert_exports_exactly_the_list("api")
    down = Settings(
        database_url="postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
        redis_url="redis://127.0.0.1:1/0",
        data_dir=tmp_path,
        secret_key="s",
    )
    with TestClient(create_app(down)) as client:
        found = Scrape(client.get("/metrics").text)
    assert "atomfleet_api_ready" in found.names()
    assert found.value("atomfleet_api_ready") == 0
