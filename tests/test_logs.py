"""Structured logs: with ATOMFLEET_LOG_FORMAT=json every line of the API, the scheduler and a
Celery worker (Celery's own lines included) is one JSON object; a job's lines carry its ids;
the API's access log has one line per request with the route template, never the token."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from core.logs import JsonFormatter, configure_logging, log_context
from tests.conftest import Account
from tests.fleet import TestFleet, wait_for
from tests.sequences import plain

pytestmark = pytest.mark.e2e


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"{path.name}: not a JSON line: {line!r}") from None
        assert isinstance(parsed[-1], dict), line
    return parsed


def test_every_process_logs_json_with_job_ids_and_the_api_an_access_line(
    pg_url: str, redis_url: str, tmp_path: Path, account: Account
) -> None:
    # Given a fleet (API, scheduler, NOOP worker) logging JSON
    fleet = TestFleet(pg_url, redis_url, tmp_path / "fleet")
    fleet.env["ATOMFLEET_LOG_FORMAT"] = "json"
    fleet.env["ATOMFLEET_DEVICES"] = '["NOOP"]'
    fleet.start("api", "scheduler", "worker-NOOP")
    try:
        fleet.wait_ready()
        # When a batch runs, with the token in the header and a secret in a query string
        created = fleet.http.post(
            "/api/v1/batches?signature=do-not-log-me",
            json={
                "project_id": account.project_id,
                "device_type": "NOOP",
                "sequence_builder": plain(2),
                "jobs": [{"runs": 1}] * 2,
            },
            headers=account.headers,
        )
        assert created.status_code == 200, created.text
        batch = created.json()["data"]
        job_id = batch["jobs"][0]["id"]

        def ended() -> bool:
            answer = fleet.http.get(f"/api/v2/jobs/{job_id}", headers=account.headers)
            return answer.json()["data"]["status"] == "DONE"

        wait_for(ended, 60, "the job to end")
        time.sleep(0.5)  # the last lines reach the files
    except BaseException:
        print(fleet.logs())
        raise
    finally:
        fleet.stop()
    logs = fleet.processes.log_dir
    # Then every line of every process is a JSON object with the common fields
    found = {name: json_lines(logs / f"{name}.log") for name in ("api", "scheduler", "worker-NOOP")}
    for name, lines in found.items():
        assert lines, f"{name} logged nothing"
        for line in lines:
            assert {"ts", "level", "logger", "message", "process"} <= set(line), (name, line)
    # And Celery's own lines are among the worker's, and its job lines carry the job's ids
    worker = found["worker-NOOP"]
    assert any(line["logger"].startswith("celery") for line in worker), worker
    [ran] = [line for line in worker if line.get("job_id") == job_id]
    assert ran["batch_id"] == batch["id"] and ran["device_type"] == "NOOP", ran
    assert "DONE" in ran["message"]
    # And the API wrote one access line per request, by route template, never the secrets
    access = [line for line in found["api"] if line["logger"] == "atomfleet.access"]
    post = [a for a in access if a["method"] == "POST" and a["route"] == "/api/v1/batches"]
    assert len(post) == 1 and post[0]["status"] == 200 and post[0]["duration_ms"] > 0
    polls = [a for a in access if a["route"] == "/api/v2/jobs/{job_id}"]
    assert polls and all(a["method"] == "GET" for a in polls)
    assert not [a for a in access if a["route"] in ("/readyz", "/healthz", "/metrics")]
    everything = "".join((logs / f"{n}.log").read_text() for n in found)
    assert account.token not in everything
    assert "do-not-log-me" not in everything


def test_a_jobs_lines_carry_its_ids_from_the_context_or_the_record(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json")
    try:
        log = logging.getLogger("atomfleet.test")
        with log_context(job_id="j-1", batch_id="b-1", device_type="EMU_SV"):
            log.info("running")
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("failed")
        log.warning("lost", extra={"job_id": "j-2"})
        log.info("plain")
    finally:
        configure_logging("text")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    running, failed, lost, plain_line = lines
    assert running["job_id"] == "j-1" and running["batch_id"] == "b-1"
    assert running["device_type"] == "EMU_SV" and running["level"] == "INFO"
    assert failed["exc"].startswith("Traceback") and "ValueError: boom" in failed["exc"]
    assert lost["job_id"] == "j-2" and "batch_id" not in lost
    assert not {"job_id", "batch_id", "device_type"} & set(plain_line)
    assert isinstance(JsonFormatter().format(logging.makeLogRecord({"msg": "x"})), str)
