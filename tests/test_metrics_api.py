"""The API's metrics and probes: requests by route template, jobs submitted and canceled,
liveness without the backing services, readiness with them."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.config import Settings
from tests.conftest import Account
from tests.metrics_support import Scrape
from tests.sequences import parametrized_sweep

BATCHES = "/api/v1/batches"
JOB = "/api/v2/jobs/{job_id}"


@pytest.fixture
def client(settings: Settings, sessions: sessionmaker[Session]) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def scrape(client: TestClient) -> Scrape:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


def batch_body(account: Account, jobs: int, priority: str = "HIGH") -> dict[str, object]:
    return {
        "project_id": account.project_id,
        "device_type": "EMU_SV",
        "queue_priority": priority,
        "sequence_builder": parametrized_sweep(3),
        "jobs": [{"runs": 10, "variables": {"omega": 5.0, "duration": 300}}] * jobs,
    }


def test_requests_are_counted_by_route_template_method_and_code_never_by_raw_path(
    client: TestClient, account: Account
) -> None:
    # Given a few requests: a batch created (once gzipped), a job read, missing and
    # malformed resources, an unknown path and a wrong method
    h = account.headers
    batch = client.post(BATCHES, json=batch_body(account, 2), headers=h).json()["data"]
    zipped = gzip.compress(json.dumps(batch_body(account, 1)).encode())
    gz_headers = {**h, "Content-Encoding": "gzip", "Content-Type": "application/json"}
    assert client.post(BATCHES, content=zipped, headers=gz_headers).status_code == 200
    job_id = batch["jobs"][0]["id"]
    assert client.get(f"/api/v2/jobs/{job_id}", headers=h).status_code == 200
    assert client.get(f"/api/v2/jobs/{uuid.uuid4()}", headers=h).status_code == 404
    assert client.post(BATCHES, json={"jobs": "nope"}, headers=h).status_code == 422
    assert client.get(f"/no/such/{job_id}").status_code == 404
    wrong_method = client.delete(f"/api/v2/jobs/{job_id}", headers=h)
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "GET"
    # When the API's metrics are scraped (twice: scrapes are not counted)
    scrape(client)
    metrics = scrape(client)
    # Then each request is counted under its route's template
    requests = "atomfleet_http_requests_total"
    assert metrics.value(requests, route=BATCHES, method="POST", code="200") == 2
    assert metrics.value(requests, route=BATCHES, method="POST", code="422") == 1
    assert metrics.value(requests, route=JOB, method="GET", code="200") == 1
    assert metrics.value(requests, route=JOB, method="GET", code="404") == 1
    assert metrics.value(requests, route=JOB, method="DELETE", code="405") == 1
    assert metrics.value(requests, route="unmatched", method="GET", code="404") == 1
    assert metrics.value(requests, route="/metrics") == 0
    latency = "atomfleet_http_request_duration_seconds_count"
    assert metrics.value(latency, route=BATCHES, method="POST") == 3
    # And a route label is a documented path, never a raw one: no label carries an id
    documented = set(client.get("/openapi.json").json()["paths"])
    assert metrics.label_values(requests, "route") <= documented | {"unmatched"}
    for _, labels, _ in metrics.samples():
        assert not any(job_id in v or batch["id"] in v for v in labels.values()), labels
    metrics.assert_exports_exactly_the_list("api")


def test_accepted_and_canceled_jobs_are_counted_per_device_and_priority(
    client: TestClient, account: Account
) -> None:
    # Given a HIGH batch of 3 jobs and a LOW one of 2, on EMU_SV
    h = account.headers
    high = client.post(BATCHES, json=batch_body(account, 3, "HIGH"), headers=h).json()["data"]
    client.post(BATCHES, json=batch_body(account, 2, "LOW"), headers=h)
    before = scrape(client)
    # When one job is canceled, twice (the second is refused)
    job_id = high["jobs"][0]["id"]
    assert client.patch(f"/api/v2/jobs/{job_id}/cancel", headers=h).status_code == 200
    client.patch(f"/api/v2/jobs/{job_id}/cancel", headers=h)
    metrics = scrape(client)
    # Then the accepted jobs are counted per priority, the cancel once
    submitted = "atomfleet_jobs_submitted_total"
    assert metrics.value(submitted, device_type="EMU_SV", priority="HIGH") == 3
    assert metrics.value(submitted, device_type="EMU_SV", priority="LOW") == 2
    assert metrics.value(submitted, device_type="EMU_SV", priority="MEDIUM") == 0
    finished = "atomfleet_jobs_finished_total"
    assert before.value(finished, device_type="EMU_SV", status="CANCELED") == 0
    assert metrics.value(finished, device_type="EMU_SV", status="CANCELED") == 1
    # And every served device has its series from the start
    assert metrics.label_values(submitted, "device_type") == {d.value for d in Settings().devices}
    assert metrics.value("atomfleet_build_info") == 1


def test_metrics_are_documented_as_text_in_the_openapi_document(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    assert "text/plain" in operation["responses"]["200"]["content"]
    openmetrics = client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")


def test_healthz_is_alive_without_database_or_redis_and_readyz_names_what_is_down(
    tmp_path: Path,
) -> None:
    # Given an API whose database and Redis do not answer
    settings = Settings(
        database_url="postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
        redis_url="redis://127.0.0.1:1/0",
        data_dir=tmp_path,
        secret_key="s",
    )
    with TestClient(create_app(settings)) as client:
        # Then it is alive, not ready, and says why
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        errors = " ".join(ready.json()["errors"]) if "errors" in ready.json() else ready.text
        assert "database" in errors and "redis" in errors


def test_readyz_answers_200_when_the_database_and_redis_answer(client: TestClient) -> None:
    assert client.get("/readyz").status_code == 200
    assert client.get("/healthz").json()["data"] == {"ok": True}
