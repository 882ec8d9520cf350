"""Contract tests: the unmodified public clients, installed from PyPI into their own virtual
environments, drive a running atomfleet (API, scheduler, real workers) through
`tests/contract/scenario.py`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from atomfleet.services import free_port
from scheduler.db import make_sessionmaker
from tests.conftest import SERVICES_DIR, make_account
from tests.fleet import TestFleet, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = {
    "pasqal-cloud-0.22+pulser-pasqal-0.24": [
        "pasqal-cloud==0.22.0",
        "pulser-pasqal==0.24.0",
        "pulser-core==1.9.1",
    ],
    "pasqal-cloud-0.24": ["pasqal-cloud==0.24.0", "pulser-core==1.9.1"],
}


def client_python(name: str) -> Path:
    """A virtual environment with one client generation, made once and reused."""
    venv = SERVICES_DIR / f"sdk-{name}"
    python = venv / "bin" / "python"
    marker = venv / "installed.txt"
    wanted = "\n".join(CLIENTS[name])
    if not (marker.exists() and marker.read_text() == wanted):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"),
             *CLIENTS[name]],
            check=True,
        )  # fmt: skip
        marker.write_text(wanted)
    return python


@pytest.fixture(scope="module")
def fleet(
    pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestFleet]:
    # No EMU_TN worker on purpose: jobs sent there stay PENDING, to be canceled and paged.
    fleet = TestFleet(pg_url, redis_url, Path(tmp_path_factory.mktemp("contract")))
    qpu_port = free_port()
    fleet.env["ATOMFLEET_QPUS"] = json.dumps({"FRESNEL": f"http://127.0.0.1:{qpu_port}"})
    fleet.processes.start("qpu", "qpu-simulator", "--port", str(qpu_port))
    with fleet.running("api", "scheduler", "worker-EMU_MPS", "worker-EMU_SV", "worker-EMU_FREE",
                       "worker-FRESNEL"):  # fmt: skip
        # once a second: public-specs is limited to 30 calls a minute per address
        wait_for(lambda: "FRESNEL" in fleet.http.get("/api/v1/devices/public-specs").text, 30,
                 "the QPU's specs", every_s=1.0)  # fmt: skip
        yield fleet


@pytest.mark.parametrize("client", list(CLIENTS))
def test_the_real_client_works_unmodified(client: str, fleet: TestFleet, pg_engine: Engine) -> None:
    python = client_python(client)
    account = make_account(make_sessionmaker(pg_engine))
    env = {
        **os.environ,
        "ATOMFLEET_URL": fleet.base,
        "ATOMFLEET_TOKEN": account.token,
        "ATOMFLEET_PROJECT": account.project_id,
    }
    run = subprocess.run(
        [str(python), str(ROOT / "tests" / "contract" / "scenario.py")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if run.returncode != 0:
        print(fleet.logs())
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "all good" in run.stdout
