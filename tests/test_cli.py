"""The `atomfleet` command: migrations and account administration, as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.enums import DeviceType
from core.errors import AuthenticationError
from scheduler import accounts
from scheduler.models import ProjectUsage, utcnow


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
