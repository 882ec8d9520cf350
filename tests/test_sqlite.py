"""The embedded default: the same store code on SQLite, from intake to events to reads."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from core.config import Settings
from core.enums import EventKind
from core.messages import JobEvent, JobResult
from scheduler import accounts
from scheduler.db import make_engine, make_sessionmaker
from scheduler.events import apply_events
from scheduler.migrate import upgrade
from tests.sequences import parametrized_sweep


def test_a_batch_runs_through_the_store_on_sqlite(
    tmp_path: Path, redis_url: str, namespace: str
) -> None:
    # Given a migrated SQLite store and an account
    settings = Settings(data_dir=tmp_path, redis_url=redis_url, namespace=namespace)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        user = accounts.create_user(session, "sqlite-user")
        project = accounts.create_project(session, "p")
        accounts.add_member(session, user.id, project.id)
        token = accounts.create_token(session, user.id).token
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings)) as client:
        # When a batch is created and its job reported DONE by a worker event
        body = {
            "project_id": project.id,
            "device_type": "EMU_FREE",
            "sequence_builder": parametrized_sweep(3),
            "jobs": [{"runs": 4, "variables": {"omega": 5.0, "duration": 300}}],
            "tags": ["s"],
        }
        batch = client.post("/api/v1/batches", json=body, headers=headers).json()["data"]
        job_id = batch["jobs"][0]["id"]
        with sessions.begin() as session:
            from sqlalchemy import update

            from scheduler.models import Job

            session.execute(update(Job).where(Job.id == job_id).values(attempt=1))
        done = JobEvent(job_id=job_id, attempt=1, kind=EventKind.DONE,
                        result=JobResult(counter={"000": 4}))  # fmt: skip
        with sessions.begin() as session:
            apply_events(session, [done])
        # Then reads, filters and the result link work the same as on PostgreSQL
        read = client.get(f"/api/v2/batches/{batch['id']}", headers=headers).json()["data"]
        assert read["status"] == "DONE"
        assert read["jobs_count_per_status"] == {"DONE": 1}
        listed = client.get("/api/v1/batches", params={"tag": "s"}, headers=headers).json()
        assert [b["id"] for b in listed["data"]] == [batch["id"]]
        link = client.get(f"/api/v1/jobs/{job_id}/results_link", headers=headers).json()
        assert client.get(link["data"]["results_link"]).json()["counter"] == {"000": 4}
    engine.dispose()
