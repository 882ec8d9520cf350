"""Lists over several projects: every filter and order gives the rows, totals and pages of
sorting all the caller's matches at once (scheduler.listing merges one walk per project),
on PostgreSQL and on SQLite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select, update
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.config import Settings
from core.enums import EventKind, JobOrigin
from scheduler import accounts
from scheduler.db import make_engine, make_sessionmaker
from scheduler.migrate import upgrade
from scheduler.models import Batch, Job
from tests.conftest import Account, make_account
from tests.test_api import create, finish

T0 = datetime(2026, 1, 1, tzinfo=UTC)


Backend = tuple[Settings, sessionmaker[Session]]


@pytest.fixture(params=["postgresql", "sqlite"])
def backend(
    request: pytest.FixtureRequest,
    settings: Settings,
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> Iterator[Backend]:
    if request.param == "postgresql":
        yield settings, sessions
        return
    (tmp_path / "sqlite").mkdir()
    embedded = settings.model_copy(update={"database_url": "", "data_dir": tmp_path / "sqlite"})
    engine = make_engine(embedded.resolved_database_url())
    upgrade(engine)
    yield embedded, make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def client(backend: Backend) -> Iterator[TestClient]:
    with TestClient(create_app(backend[0])) as c:
        yield c


@pytest.fixture
def store(client: TestClient, backend: Backend) -> tuple[Account, Account]:
    """The caller in three projects with a colleague; batches interleaved in time across
    them (two created at the same instant); jobs DONE, ERROR, PENDING, one batch AZURE;
    and a stranger's batch."""
    sessions = backend[1]
    account, colleague = make_account(sessions), make_account(sessions)
    with sessions.begin() as session:
        accounts.add_member(session, colleague.user_id, account.project_id)
        projects = [account.project_id]
        for name in ("second", "third"):
            project = accounts.create_project(session, name)
            accounts.add_member(session, account.user_id, project.id)
            accounts.add_member(session, colleague.user_id, project.id)
            projects.append(project.id)
    batches = []
    for i in range(9):
        owner = colleague if i % 4 == 3 else account
        batches.append(create(client, owner, jobs=1 + 5 * (i % 3), project_id=projects[i % 3]))
    create(client, make_account(sessions), jobs=3)  # a stranger's
    with sessions.begin() as session:
        for i, batch in enumerate(batches):
            at = T0 + timedelta(hours=i // 2 * 2 if i in (4, 5) else i)  # 4 and 5 tie
            session.execute(update(Batch).where(Batch.id == batch["id"]).values(created_at=at))
            session.execute(update(Job).where(Job.batch_id == batch["id"]).values(created_at=at))
        session.execute(
            update(Job).where(Job.batch_id == batches[7]["id"]).values(origin=JobOrigin.AZURE)
        )
    for i, batch in enumerate(batches):
        for j, job in enumerate(batch["jobs"]):
            if (i + j) % 3 == 0:
                finish(sessions, job["id"], EventKind.ERROR if j % 2 else EventKind.DONE)
    return account, colleague


def everything(sessions: sessionmaker[Session], model: type[Any], user: str) -> list[Any]:
    with sessions() as session:
        mine = accounts.project_ids_of(session, user)
        return list(session.scalars(select(model).where(model.project_id.in_(mine))))


def pages(client: TestClient, caller: Account, path: str, **params: Any) -> tuple[list[Any], int]:
    """Every page the way the SDK reads them (offset = end while end < total)."""
    seen: list[Any] = []
    offset, total = 0, None
    while total is None or offset < total:
        response = client.get(
            path, params={**params, "offset": offset, "limit": 4}, headers=caller.headers
        )
        assert response.status_code == 200, response.text
        payload = response.json()
        assert total in (None, payload["pagination"]["total"])
        total = payload["pagination"]["total"]
        seen.extend(item["id"] for item in payload["data"])
        assert payload["pagination"]["end"] > offset
        offset = payload["pagination"]["end"]
    return seen, total


def reference(
    rows: list[Any], keep: Callable[[Any], bool], key: str, desc: bool, ties: tuple[str, ...]
) -> list[str]:
    kept = [r for r in rows if keep(r)]
    # sort by the tie-breakers, then (stable) by the key: the order the API promises
    for name in reversed(ties):
        kept.sort(key=lambda r, n=name: getattr(r, n), reverse=desc)
    kept.sort(key=lambda r: getattr(r, key), reverse=desc)
    return [r.id for r in kept]


def test_every_job_filter_and_order_pages_like_one_sorted_list(
    client: TestClient, backend: Backend, store: tuple[Account, Account]
) -> None:
    caller, colleague = store
    jobs = everything(backend[1], Job, caller.user_id)
    some = sorted(jobs, key=lambda j: j.id)[3]
    batch_ids = sorted({j.batch_id for j in jobs})[:2]
    project = jobs[0].project_id
    cases: list[tuple[dict[str, Any], Callable[[Job], bool]]] = [
        ({}, lambda j: True),
        ({"id": some.id}, lambda j: j.id == some.id),
        ({"id_prefix": some.id[:1]}, lambda j: j.id.startswith(some.id[:1])),
        ({"batch_id": batch_ids}, lambda j: j.batch_id in batch_ids),
        ({"project_id": project}, lambda j: j.project_id == project),
        ({"user_id": colleague.user_id}, lambda j: j.user_id == colleague.user_id),
        ({"status": "DONE"}, lambda j: j.status == "DONE"),
        ({"status": ["PENDING", "ERROR"]}, lambda j: j.status in ("PENDING", "ERROR")),
        ({"errors": "True"}, lambda j: j.status == "ERROR"),
        ({"errors": "False"}, lambda j: j.status != "ERROR"),
        ({"min_runs": 12}, lambda j: j.runs >= 12),
        ({"max_runs": 11}, lambda j: j.runs <= 11),
        ({"origin": "AZURE"}, lambda j: j.origin == "AZURE"),
        (
            {"start_date": (T0 + timedelta(hours=4)).isoformat()},
            lambda j: j.created_at >= T0 + timedelta(hours=4),
        ),
        (
            {"end_date": (T0 + timedelta(hours=4)).isoformat(), "status": "PENDING"},
            lambda j: j.created_at <= T0 + timedelta(hours=4) and j.status == "PENDING",
        ),
        (  # a closed window: its total is counted once, then cached
            {"end_date": (T0 + timedelta(hours=4)).isoformat(), "min_runs": 6},
            lambda j: j.created_at <= T0 + timedelta(hours=4) and j.runs >= 6,
        ),
    ]
    orders = [
        ({}, "created_at", True, ("batch_id", "creation_order")),
        ({"order_by_direction": "ASC"}, "created_at", False, ("batch_id", "creation_order")),
        (
            {"order_by": "creation_order", "order_by_direction": "ASC"},
            "creation_order",
            False,
            ("batch_id",),
        ),
        ({"order_by": "runs"}, "runs", True, ("batch_id", "creation_order")),
    ]
    for params, keep in cases:
        for order, key, desc, ties in orders:
            expected = reference(jobs, keep, key, desc, ties)
            seen, total = pages(client, caller, "/api/v2/jobs", **params, **order)
            assert (seen, total) == (expected, len(expected)), (params, order)


def test_every_batch_filter_and_order_pages_like_one_sorted_list(
    client: TestClient, backend: Backend, store: tuple[Account, Account]
) -> None:
    caller, colleague = store
    batches = everything(backend[1], Batch, caller.user_id)
    project = batches[0].project_id
    cases: list[tuple[dict[str, Any], Callable[[Batch], bool]]] = [
        ({}, lambda b: True),
        ({"project_id": project}, lambda b: b.project_id == project),
        ({"user_id": colleague.user_id}, lambda b: b.user_id == colleague.user_id),
        ({"status": "RUNNING"}, lambda b: b.status == "RUNNING"),
        ({"min_jobs": 6}, lambda b: b.jobs_count >= 6),
        (
            {"start_date": (T0 + timedelta(hours=4)).isoformat()},
            lambda b: b.created_at >= T0 + timedelta(hours=4),
        ),
    ]
    orders = [
        ({}, "created_at", True),
        ({"order_by_direction": "ASC"}, "created_at", False),
        ({"order_by": "jobs_count"}, "jobs_count", True),
    ]
    for params, keep in cases:
        for order, key, desc in orders:
            expected = reference(batches, keep, key, desc, ("id",))
            seen, total = pages(client, caller, "/api/v1/batches", **params, **order)
            assert (seen, total) == (expected, len(expected)), (params, order)


def test_a_total_on_what_never_changes_is_counted_again_only_once_a_job_is_added(
    client: TestClient, backend: Backend, store: tuple[Account, Account]
) -> None:
    caller, _ = store
    counts: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT COUNT(*)"):
            counts.append(statement)

    event.listen(Engine, "before_cursor_execute", count)  # (the API's engine among them)
    try:
        # Given a filter on what never changes (creation time, runs), over several pages
        until_tomorrow = {"end_date": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
                          "min_runs": 1}  # fmt: skip
        first, total = pages(client, caller, "/api/v2/jobs", **until_tomorrow)
        assert len(counts) == 1 and total == len(first) > 4  # several pages, one count
        again, total_again = pages(client, caller, "/api/v2/jobs", **until_tomorrow)
        assert (again, total_again, len(counts)) == (first, total, 1)
        # When a job is added to the caller's projects, the total is counted again, once
        create(client, caller, jobs=2)
        seen, total_after = pages(client, caller, "/api/v2/jobs", **until_tomorrow)
        assert total_after == total + 2 == len(seen) and len(counts) == 2
        # And a status filter, which can change without a job being added, is never cached
        # (its totals come from the maintained counts; with runs, from a count each page)
        counts.clear()
        pending, total = pages(client, caller, "/api/v2/jobs", status="PENDING", min_runs=1)
        assert len(counts) == -(-total // 4) and total == len(pending)
    finally:
        event.remove(Engine, "before_cursor_execute", count)
