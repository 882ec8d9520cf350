"""Schemathesis against the live API: no server error, no undeclared status code, nothing
the OpenAPI document does not say (all checks, bounded and seeded).

The run gets a real batch (open, with jobs) and job to aim at, so operations on existing
resources are exercised beyond 404s. One allowance, stated in the config below: Create
Batch and Add Jobs may answer 422 to a schema-valid body, because what makes a body valid
(a Pulser sequence, a project you belong to) cannot be written in JSON Schema.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from scheduler.db import make_sessionmaker
from tests.conftest import Account, make_account
from tests.fleet import TestFleet
from tests.sequences import parametrized_sweep

pytestmark = pytest.mark.e2e

SEED = 20261125
MAX_EXAMPLES = 60


@pytest.fixture
def api(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[TestFleet]:
    fleet = TestFleet(pg_url, redis_url, tmp_path / "fleet")
    with fleet.running("api"):
        yield fleet


def test_schemathesis_finds_no_server_error_and_no_undeclared_answer(
    api: TestFleet, pg_engine: Engine, tmp_path: Path
) -> None:
    # Given an account with an open batch of two jobs
    user: Account = make_account(make_sessionmaker(pg_engine))
    created = api.http.post(
        "/api/v1/batches",
        json={
            "project_id": user.project_id,
            "device_type": "EMU_SV",
            "open": True,
            "sequence_builder": parametrized_sweep(3),
            "jobs": [{"runs": 5, "variables": {"omega": 5.0, "duration": 300}}] * 2,
        },
        headers=user.headers,
    )
    assert created.status_code == 200, created.text
    batch = created.json()["data"]
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f"""
seed = {SEED}
max-failures = 50
continue-on-failure = true
headers = {{ Authorization = "Bearer {user.token}" }}
generation.max-examples = {MAX_EXAMPLES}
checks.enabled = true

[parameters]
"path.batch_id" = "{batch["id"]}"
"path.job_id" = "{batch["jobs"][0]["id"]}"

[[operations]]
include-path = ["/api/v1/batches", "/api/v2/batches/{{batch_id}}/jobs"]
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = [200, 401, 404, 409, 422]
"""
    )
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert binary, "schemathesis is installed by `make install`"
    # When schemathesis runs every check on every operation
    run = subprocess.run(
        [binary, "--config-file", str(config), "run", f"{api.base}/openapi.json",
         "--checks", "all", "--no-color", "--report", "junit",
         "--report-dir", str(tmp_path / "report")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    # Then it finds nothing
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-15000:]
    assert "Server error" not in output
    assert f"Seed: {SEED}" in output
