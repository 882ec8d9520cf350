"""The unmodified public clients on a batch whose results the retention deleted: they list
the batch and its jobs as before, and reading a result fails with the server's 410."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from core.config import Settings
from core.enums import EventKind
from scheduler.db import make_sessionmaker
from scheduler.models import Job, utcnow
from scheduler.retention import ResultsRetention
from tests.conftest import make_account
from tests.fleet import TestFleet
from tests.metrics_support import report
from tests.sequences import parametrized_sweep
from tests.test_contract import CLIENTS, ROOT, client_python

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api(
    pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestFleet]:
    fleet = TestFleet(pg_url, redis_url, Path(tmp_path_factory.mktemp("purged")))
    fleet.env["ATOMFLEET_RESULTS_RETENTION_DAYS"] = "30"
    with fleet.running("api"):
        yield fleet


@pytest.mark.parametrize("client", list(CLIENTS))
def test_the_real_client_lists_a_purged_batch_and_reads_410_for_its_results(
    client: str, api: TestFleet, pg_url: str, pg_engine: Engine
) -> None:
    # Given a batch of two jobs that ended DONE 40 days ago, purged by the retention
    sessions = make_sessionmaker(pg_engine)
    account = make_account(sessions)
    created = api.http.post(
        "/api/v1/batches",
        json={
            "project_id": account.project_id,
            "device_type": "EMU_SV",
            "sequence_builder": parametrized_sweep(3),
            "jobs": [{"runs": 5, "variables": {"omega": 5.0, "duration": 300}}] * 2,
        },
        headers=account.headers,
    )
    assert created.status_code == 200, created.text
    batch = created.json()["data"]
    jobs = [j["id"] for j in batch["jobs"]]
    for job in jobs:
        report(sessions, job, EventKind.DONE)
    with sessions.begin() as session:
        session.execute(
            update(Job).where(Job.id.in_(jobs)).values(end_timestamp=utcnow() - timedelta(days=40))
        )
    kept = Settings(database_url=pg_url, results_retention_days=30)
    assert ResultsRetention(kept, sessions).purge_once() == 2
    # When the client reads it
    python = client_python(client)
    env = {
        **os.environ,
        "ATOMFLEET_URL": api.base,
        "ATOMFLEET_TOKEN": account.token,
        "ATOMFLEET_PROJECT": account.project_id,
        "ATOMFLEET_BATCH": batch["id"],
    }
    run = subprocess.run(
        [str(python), str(ROOT / "tests" / "contract" / "purged.py")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # Then it lists the batch and its jobs, and the result read fails with the 410
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "all good" in run.stdout
