"""The `atomfleet` command: migrations and account administration, as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core.errors import AuthenticationError
from scheduler import accounts


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
