"""The `atomfleet` command as an operator runs it: migrations, account administration, the
fleet's status, and the refusal to run production processes on the one-machine defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from atomfleet.services import free_port
from core.config import Settings
from core.enums import DeviceType, EventKind
from core.errors import AuthenticationError
from core.names import RedisKeys
from scheduler import accounts
from scheduler.models import Job, ProjectUsage, utcnow
from tests.conftest import Account
from tests.fleet import wait_for
from tests.metrics_support import beat, report, submit


def atomfleet(env: dict[str, str], *args: str, ok: bool = True) -> Any:
    run = subprocess.run(
        [sys.executable, "-m", "atomfleet", *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (run.returncode == 0) == ok, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1]) if ok else run.stderr


def test_accounts_are_administered_from_the_command_line(
    pg_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    env = {"ATOMFLEET_DATABASE_URL": pg_url, "ATOMFLEET_DATA_DIR": str(tmp_path)}
    # Given a bootstrapped admin
    boot = atomfleet(env, "admin", "bootstrap", "--user", "root-user", "--project", "lab")
    assert set(boot) == {"user_id", "project_id", "token"}
    with sessions() as session:
        assert accounts.authenticate(session, boot["token"]).id == boot["user_id"]
    # When an operator adds a user to the project and gives them a token
    user = atomfleet(env, "admin", "user", "create", "grace", "--password", "pw")
    atomfleet(env, "admin", "member", "add", user["user_id"], boot["project_id"])
    token = atomfleet(env, "admin", "token", "create", user["user_id"], "--days", "7")
    # Then the token works and the user is a member
    with sessions() as session:
        assert accounts.authenticate(session, token["token"]).id == user["user_id"]
        assert accounts.is_member(session, user["user_id"], boot["project_id"])
    # And once revoked it no longer works
    atomfleet(env, "admin", "token", "revoke", token["token_id"])
    with sessions() as session:
        try:
            accounts.authenticate(session, token["token"])
            raise AssertionError("a revoked token authenticated")
        except AuthenticationError:
            pass
    # And mistakes are reported, not crashes
    assert "already exists" in atomfleet(env, "admin", "user", "create", "grace", ok=False)
    assert "not found" in atomfleet(env, "admin", "token", "revoke", "nope", ok=False)


def test_migrate_creates_the_embedded_sqlite_store(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "atomfleet", "migrate"],
        env={**os.environ, "ATOMFLEET_DATA_DIR": str(tmp_path)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "atomfleet.db").exists()


def test_projects_shares_caps_and_webhook_secrets_are_set_from_the_command_line(
    pg_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    env = {"ATOMFLEET_DATABASE_URL": pg_url, "ATOMFLEET_DATA_DIR": str(tmp_path)}
    lab = atomfleet(env, "admin", "project", "create", "lab")["project_id"]
    other = atomfleet(env, "admin", "project", "create", "other")["project_id"]
    # A new project has weight 1, no caps and a webhook secret
    shown = atomfleet(env, "admin", "project", "show", lab)
    assert (shown["weight"], shown["max_running_per_device"]) == (1.0, None)
    assert shown["webhook_secret"].startswith("whsec_")
    # Set, then a cap removed with 0, other fields left as they were
    atomfleet(env, "admin", "project", "set", lab, "--weight", "3", "--max-running-per-device",
              "2", "--max-waiting-jobs", "100", "--max-jobs-per-batch", "50")  # fmt: skip
    changed = atomfleet(env, "admin", "project", "set", lab, "--max-waiting-jobs", "0")
    assert changed["weight"] == 3.0
    assert (changed["max_running_per_device"], changed["max_waiting_jobs"]) == (2, None)
    assert changed["max_jobs_per_batch"] == 50
    assert "weight: must be more than 0" in atomfleet(
        env, "admin", "project", "set", lab, "--weight", "0", ok=False
    )
    assert "not found" in atomfleet(env, "admin", "project", "show", "nope", ok=False)
    # Rotation gives a new secret
    rotated = atomfleet(env, "admin", "project", "rotate-webhook-secret", lab)
    assert rotated["webhook_secret"] != shown["webhook_secret"]
    # Usage: each project's share of a device's recent run time
    with sessions.begin() as session:
        now = utcnow()
        session.add_all([
            ProjectUsage(project_id=lab, device_type=DeviceType.EMU_MPS, decayed_run_s=30.0,
                         decayed_at=now, jobs=3, run_s=30.0),
            ProjectUsage(project_id=other, device_type=DeviceType.EMU_MPS, decayed_run_s=10.0,
                         decayed_at=now, jobs=1, run_s=10.0),
        ])  # fmt: skip
    usage = {row["name"]: row for row in atomfleet(env, "admin", "usage")["usage"]}
    assert usage["lab"]["share"] == pytest.approx(0.75, abs=0.01)
    assert usage["other"]["share"] == pytest.approx(0.25, abs=0.01)
    assert (usage["lab"]["jobs"], usage["lab"]["weight"], usage["lab"]["device_type"]) == (
        3, 3.0, "EMU_MPS",
    )  # fmt: skip


def test_status_shows_jobs_workers_and_the_oldest_wait_per_device(
    settings: Settings, sessions: sessionmaker[Session], account: Account, redis_client: Redis
) -> None:
    # Given waiting jobs at two levels on EMU_SV, one of them an hour old and one running,
    # two live EMU_SV workers (one slot busy) and a STALLED EMU_MPS without workers
    ids = submit(sessions, account, DeviceType.EMU_SV, "HIGH", 3)
    submit(sessions, account, DeviceType.EMU_SV, "LOW", 2)
    with sessions.begin() as session:
        session.execute(
            update(Job).where(Job.id == ids[0]).values(created_at=utcnow() - timedelta(hours=1))
        )
    report(sessions, ids[1], EventKind.RUNNING, started_at=time.time())
    keys = RedisKeys(settings.namespace)
    beat(redis_client, keys, DeviceType.EMU_SV, "a:1", concurrency=2, busy=1)
    beat(redis_client, keys, DeviceType.EMU_SV, "b:1", concurrency=1, busy=0)
    redis_client.hset(keys.device_state(DeviceType.EMU_MPS), "stalled_since", time.time())
    redis_client.xadd(keys.events_stream, {"n": 1})
    env = {
        "ATOMFLEET_DATABASE_URL": settings.database_url,
        "ATOMFLEET_REDIS_URL": settings.redis_url,
        "ATOMFLEET_NAMESPACE": settings.namespace,
        "ATOMFLEET_DEVICES": '["EMU_SV", "EMU_MPS", "EMU_FRESNEL"]',
    }
    # When an operator asks for the status
    run = subprocess.run(
        [sys.executable, "-m", "atomfleet", "status"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # Then each device's row says it all, from the store and Redis
    assert run.returncode == 0, run.stderr
    rows = {line.split()[0]: line.split() for line in run.stdout.splitlines() if line}
    assert rows["device"][:4] == ["device", "state", "workers", "slots"]
    # device, state, workers, slots busy/all, waiting HIGH MEDIUM LOW, running, oldest
    assert rows["EMU_SV"][:8] == ["EMU_SV", "UP", "2", "1/3", "2", "0", "2", "1"]
    assert rows["EMU_SV"][8:] == ["1h", "00m"] or rows["EMU_SV"][8] == "59m"
    assert rows["EMU_MPS"] == ["EMU_MPS", "DOWN", "0", "0/0", "0", "0", "0", "0", "-"]
    assert rows["EMU_FRESNEL"][:2] == ["EMU_FRESNEL", "DOWN"]  # the longest name has its column
    assert "batches open (PENDING or RUNNING): 2" in run.stdout
    assert "worker events not yet applied: 1" in run.stdout
    assert settings.database_url.split("@")[-1] in run.stdout


def test_status_says_which_backing_service_it_cannot_read(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "atomfleet", "status"],
        env={**os.environ, "ATOMFLEET_DATABASE_URL": "postgresql+psycopg://u:secret@127.0.0.1:1/x",
             "ATOMFLEET_DATA_DIR": str(tmp_path)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1
    assert "cannot read the store" in run.stderr and "secret" not in run.stderr


def test_status_never_prints_the_redis_password(settings: Settings) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "atomfleet", "status"],
        env={**os.environ, "ATOMFLEET_DATABASE_URL": settings.database_url,
             "ATOMFLEET_REDIS_URL": "redis://:hunter2@127.0.0.1:1/0"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1
    assert "cannot read Redis at redis://:***@127.0.0.1:1/0" in run.stderr
    assert "hunter2" not in run.stderr + run.stdout


@pytest.mark.parametrize(
    ("process", "env", "refused_for"),
    [
        ("api", {}, ["ATOMFLEET_DATABASE_URL", "ATOMFLEET_SECRET_KEY"]),
        ("api", {"ATOMFLEET_DATABASE_URL": "postgresql+psycopg://h/db"}, ["ATOMFLEET_SECRET_KEY"]),
        ("api", {"ATOMFLEET_SECRET_KEY": "k"}, ["ATOMFLEET_DATABASE_URL"]),
        ("scheduler", {}, ["ATOMFLEET_DATABASE_URL"]),
    ],
)
def test_api_and_scheduler_refuse_the_one_machine_defaults_outside_a_one_machine_run(
    tmp_path: Path, process: str, env: dict[str, str], refused_for: list[str]
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ATOMFLEET_")}
    run = subprocess.run(
        [sys.executable, "-m", "atomfleet", process],
        env={**clean, "ATOMFLEET_DATA_DIR": str(tmp_path), **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode != 0
    assert "refusing to start on the one-machine defaults" in run.stderr
    for setting in refused_for:
        assert setting in run.stderr
    assert "ATOMFLEET_SINGLE_MACHINE=1" in run.stderr
    assert not (tmp_path / "secret_key").exists(), "nothing generated before refusing"


def test_a_one_machine_deployment_may_use_the_embedded_defaults(
    tmp_path: Path, redis_url: str
) -> None:
    # Given the embedded SQLite store, migrated, and no secret, on one machine
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ATOMFLEET_")}
    env = {**clean, "ATOMFLEET_DATA_DIR": str(tmp_path), "ATOMFLEET_SINGLE_MACHINE": "1",
           "ATOMFLEET_REDIS_URL": redis_url, "ATOMFLEET_NAMESPACE": f"one-{uuid.uuid4().hex[:8]}",
           "ATOMFLEET_API_PORT": str(free_port())}  # fmt: skip
    subprocess.run([sys.executable, "-m", "atomfleet", "migrate"], env=env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    # When the API starts, it serves
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        api = subprocess.Popen([sys.executable, "-m", "atomfleet", "api"], env=env,
                               stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{env['ATOMFLEET_API_PORT']}/readyz"
        wait_for(lambda: _answers(url) or api.poll() is not None, 60, "the API")
        assert api.poll() is None, log.read_text()
    finally:
        api.terminate()
        api.wait(timeout=30)
    assert (tmp_path / "secret_key").exists()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
