"""A hung database (stopped, not refusing) fails requests within the configured timeouts.

The database is a throwaway PostgreSQL cluster started for the test in a temporary folder
and frozen with SIGSTOP (every one of its processes), never the shared server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from atomfleet.services import Started, ensure_postgres
from scheduler.db import make_engine, make_sessionmaker
from scheduler.db_timeouts import GRACE_S, DbTimeouts
from scheduler.migrate import upgrade
from tests.conftest import make_account
from tests.fleet import TestFleet, wait_for

pytestmark = pytest.mark.e2e

DEFAULT_BOUND_S = 5.0  # the acceptance's bound with the default timeouts (3 s, 4 s, 3 s)


@dataclass
class Throwaway:
    started: Started
    data: Path

    @property
    def url(self) -> str:
        return self.started.url

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, checkpointer, ...)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        found = [postmaster]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                found.append(int(entry.name))
        return found

    def signal_all(self, sig: int) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


@pytest.fixture
def throwaway_pg() -> Iterator[Throwaway]:
    workdir = Path(tempfile.mkdtemp(prefix="atomfleet-hung-pg-"))
    workdir.chmod(0o755)  # the cluster runs as the postgres user when the tests run as root
    # Nothing answers on port 1: ensure_postgres starts a cluster of its own in workdir.
    started = ensure_postgres("postgresql+psycopg://postgres@127.0.0.1:1/atomfleet", workdir)
    pg = Throwaway(started, workdir / "postgres" / "data")
    try:
        engine = make_engine(started.url)
        upgrade(engine)
        engine.dispose()
        yield pg
    finally:
        pg.signal_all(signal.SIGCONT)
        started.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def timed_get(base: str, path: str, headers: dict[str, str]) -> tuple[int, float]:
    started = time.monotonic()
    try:
        status = httpx.get(base + path, headers=headers, timeout=30).status_code
    except httpx.HTTPError:
        status = 0
    return status, time.monotonic() - started


def test_a_hung_database_answers_503_within_the_timeouts_and_nothing_piles_up(
    throwaway_pg: Throwaway, redis_url: str, tmp_path: Path
) -> None:
    # Given an API on its own PostgreSQL, with default database timeouts, serving lists
    engine = make_engine(throwaway_pg.url)
    account = make_account(make_sessionmaker(engine))
    engine.dispose()
    fleet = TestFleet(throwaway_pg.url, redis_url, tmp_path / "fleet")
    with fleet.running("api"):
        assert fleet.http.get("/api/v1/batches", headers=account.headers).status_code == 200
        # When the database hangs (every process of it stopped)
        throwaway_pg.signal_all(signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(8) as pool:
                lists = [
                    pool.submit(timed_get, fleet.base, "/api/v1/batches", account.headers)
                    for _ in range(6)
                ]
                ready = pool.submit(timed_get, fleet.base, "/readyz", {})
                answers = [f.result() for f in lists]
                ready_answer = ready.result()
        finally:
            throwaway_pg.signal_all(signal.SIGCONT)
        # Then each list request and /readyz answer 503 within the bound
        print("hung database: lists", answers, "readyz", ready_answer)
        assert [status for status, _ in answers] == [503] * 6
        assert max(took for _, took in answers) <= DEFAULT_BOUND_S
        assert ready_answer[0] == 503 and ready_answer[1] <= DEFAULT_BOUND_S
        # and once it answers again, so does the API, without a pile of connections left
        wait_for(lambda: fleet.http.get("/readyz").status_code == 200, 30, "readiness")
        assert fleet.http.get("/api/v1/batches", headers=account.headers).status_code == 200
        admin = throwaway_pg.url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            ).fetchone()
        assert row is not None and row[0] <= 15  # the API's pool: 5 + 10 overflow at most


def test_a_statement_to_a_hung_database_fails_soon_after_its_timeout(
    throwaway_pg: Throwaway,
) -> None:
    # Given a connection in hand, with a 1 s statement timeout
    engine = make_engine(throwaway_pg.url, DbTimeouts(connect_s=2, statement_s=1.0, pool_s=1))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
            # When the database hangs before the next statement
            throwaway_pg.signal_all(signal.SIGSTOP)
            started = time.monotonic()
            try:
                with pytest.raises(OperationalError):
                    conn.execute(text("SELECT 2"))
            finally:
                took = time.monotonic() - started
                throwaway_pg.signal_all(signal.SIGCONT)
        # Then it failed once its timeout and the grace had passed (the server never answered)
        print(f"statement to a hung database failed after {took:.2f} s")
        assert 1.0 <= took <= 1.0 + GRACE_S + 1.0
        # and the engine works again once the database does
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 3")).scalar() == 3
    finally:
        engine.dispose()
