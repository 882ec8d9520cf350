"""A real worker's metrics: its prefork children count the jobs, its parent serves the sum."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from atomfleet.services import free_port
from core.config import Settings
from core.enums import DeviceType
from scheduler.dispatch import Dispatcher, make_producer
from scheduler.intake import Caller, Intake
from scheduler.models import Job
from scheduler.submissions import CreateBatchRequest
from tests.conftest import Account
from tests.fleet import TestFleet, wait_for
from tests.metrics_support import Scrape
from tests.sequences import plain

pytestmark = pytest.mark.e2e

JOBS = 24
NOOP = DeviceType.NOOP


@pytest.fixture
def noop(settings: Settings) -> Settings:
    settings.devices = [NOOP]
    return settings


@pytest.fixture
def worker(
    noop: Settings, pg_url: str, redis_url: str, tmp_path: Path
) -> Iterator[tuple[TestFleet, str, Path]]:
    """A NOOP worker of 2 prefork children serving its metrics; its multiprocess directory
    is given, and holds a stale file of an earlier run."""
    fleet = TestFleet(pg_url, redis_url, tmp_path / "fleet")
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    (multiproc / "counter_999999.db").write_bytes(b"\0" * 64)
    fleet.env["ATOMFLEET_NAMESPACE"] = noop.namespace
    fleet.env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
    port = free_port()
    fleet.start_process(
        "worker", "worker", "--device", "NOOP", "--concurrency", "2", "--metrics-port", str(port)
    )
    try:
        yield fleet, f"http://127.0.0.1:{port}", multiproc
    except BaseException:
        print(fleet.logs())
        raise
    finally:
        fleet.stop()


def get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None


def test_the_parent_serves_the_jobs_its_children_ran(
    noop: Settings,
    sessions: sessionmaker[Session],
    account: Account,
    worker: tuple[TestFleet, str, Path],
) -> None:
    fleet, base, multiproc = worker
    # Given a worker that consumes (its health says so)
    healthy = wait_for(
        lambda: (r := get(f"{base}/healthz")) is not None and r.status_code == 200 and r,
        60,
        "the worker to consume",
    )
    assert "consuming" in healthy.json()["detail"]
    assert not (multiproc / "counter_999999.db").exists(), "a stale file is removed at start"
    # When it runs a batch of NOOP jobs
    request = CreateBatchRequest(
        project_id=account.project_id,
        device_type="NOOP",
        sequence_builder=plain(3),
        jobs=[{"runs": 5}] * JOBS,
    )
    with sessions.begin() as session:
        Intake(noop).create_batch(session, request, Caller(account.user_id))
    dispatcher = Dispatcher(
        noop, sessions, redis.Redis.from_url(noop.redis_url), make_producer(noop), [NOOP]
    )

    def all_ran() -> bool:
        dispatcher.dispatch_once()
        scraped = get(f"{base}/metrics")
        return scraped is not None and Scrape(scraped.text).value(
            "atomfleet_worker_jobs_total", device_type="NOOP", status="DONE"
        ) == float(JOBS)

    wait_for(all_ran, 60, f"the worker's metrics to count {JOBS} jobs", every_s=0.1)
    # Then the parent's /metrics sums what its children counted
    metrics = Scrape(httpx.get(f"{base}/metrics").text)
    assert metrics.value("atomfleet_worker_jobs_total", device_type="NOOP", status="ERROR") == 0
    assert metrics.value("atomfleet_worker_job_duration_seconds_count", device_type="NOOP") == (
        JOBS
    )
    assert metrics.value("atomfleet_build_info") == 1
    metrics.assert_exports_exactly_the_list("worker")
    # And the counts were written by processes other than the parent that serves them
    parent = fleet.process("worker").pid
    writers = {
        int(m.group(1)) for p in multiproc.iterdir() if (m := re.search(r"_(\d+)\.db$", p.name))
    }
    assert writers - {parent}, f"only the parent ({parent}) wrote: {writers}"
    with sessions() as session:
        dispatched = session.scalar(select(func.count()).where(Job.dispatched_at.is_not(None)))
    assert dispatched == JOBS


def test_the_multiprocess_directory_is_private_and_removed_when_not_given(
    noop: Settings, pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    # Given a worker started without PROMETHEUS_MULTIPROC_DIR
    fleet = TestFleet(pg_url, redis_url, tmp_path / "fleet")
    fleet.env["ATOMFLEET_NAMESPACE"] = noop.namespace
    fleet.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    fleet.env["TMPDIR"] = str(tmp_path)
    port = free_port()
    fleet.start_process("worker", "worker", "--device", "NOOP", "--metrics-port", str(port))
    try:
        # When it serves its metrics, its directory is a fresh one under the temporary dir
        wait_for(lambda: get(f"http://127.0.0.1:{port}/metrics"), 60, "the worker's metrics")
        created = list(tmp_path.glob("atomfleet-worker-metrics-*"))
        assert len(created) == 1 and any(created[0].iterdir())
    finally:
        fleet.stop()
    # Then it is removed when the worker stops
    time.sleep(0.5)
    assert not list(tmp_path.glob("atomfleet-worker-metrics-*"))
