"""The rest of the public API over HTTP: lists, filters, pagination, open batches, cancel,
rebatch, tags, status, devices and OAuth; always scoped to the caller's projects."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pulser.devices import MockDevice
from pulser.json.abstract_repr.deserializer import deserialize_device
from sqlalchemy import update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.config import Settings
from core.enums import DeviceType, EventKind
from core.messages import JobEvent, JobResult
from scheduler import accounts, operations
from scheduler.events import apply_events
from scheduler.models import Batch, Job
from tests.conftest import Account, make_account
from tests.sequences import parametrized_sweep

SWEEP = parametrized_sweep(3)


@pytest.fixture
def client(settings: Settings, sessions: sessionmaker[Session]) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def create(client: TestClient, account: Account, jobs: int = 1, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "project_id": account.project_id,
        "device_type": "EMU_SV",
        "sequence_builder": SWEEP,
        "jobs": [
            {"runs": 10 + i, "variables": {"omega": 5.0, "duration": 300}} for i in range(jobs)
        ],
    }
    body.update(fields)
    response = client.post("/api/v1/batches", json=body, headers=account.headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def get(client: TestClient, account: Account, path: str, **params: Any) -> Any:
    response = client.get(path, params=params, headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


def ids(payload: dict[str, Any]) -> set[str]:
    return {item["id"] for item in payload["data"]}


def finish(sessions: sessionmaker[Session], job_id: str, kind: EventKind = EventKind.DONE) -> None:
    """Drive a job to DONE or ERROR through the events path the workers use."""
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(attempt=1))
    event = JobEvent(job_id=job_id, attempt=1, kind=kind)
    if kind == EventKind.DONE:
        event.result = JobResult(counter={"000": 10}, serialised_results=None)
    else:
        event.errors = ["boom"]
    with sessions.begin() as session:
        apply_events(session, [event])


# --- lists and pagination ----------------------------------------------------------------------


def test_batches_are_listed_newest_first_for_every_project_of_the_caller(
    client: TestClient, account: Account, sessions: sessionmaker[Session]
) -> None:
    # Given the caller in a second project, and a stranger with a batch of their own
    with sessions.begin() as session:
        second = accounts.create_project(session, "second")
        accounts.add_member(session, account.user_id, second.id)
    first = create(client, account)
    other = create(client, account, project_id=second.id)
    stranger = make_account(sessions)
    hidden = create(client, stranger)
    # When the caller lists batches without a project filter
    payload = get(client, account, "/api/v1/batches")
    # Then both of theirs come, newest first, and never the stranger's
    assert [b["id"] for b in payload["data"]] == [other["id"], first["id"]]
    assert hidden["id"] not in ids(payload)
    assert payload["pagination"] == {"total": 2, "start": 0, "end": 2}
    assert "jobs" not in payload["data"][0]


def test_jobs_page_with_offset_and_end_never_loops(client: TestClient, account: Account) -> None:
    # Given a batch of 230 jobs
    batch = create(client, account, jobs=230)
    # When a client pages the way the SDK does (offset=end, no limit)
    seen: list[dict[str, Any]] = []
    offset = 0
    while True:
        response = client.get(
            "/api/v2/jobs",
            params={
                "batch_id": batch["id"],
                "order_by": "creation_order",
                "order_by_direction": "ASC",
                "offset": offset,
            },
            headers=account.headers,
        )
        page = response.json()
        seen.extend(page["data"])
        assert response.headers["Content-Range"] == (
            f"{offset}-{offset + len(page['data']) - 1}/230"
        )
        assert "Content-Range" in response.headers["Access-Control-Expose-Headers"]
        assert page["pagination"]["end"] > offset
        offset = page["pagination"]["end"]
        if offset >= page["pagination"]["total"]:
            break
    # Then it got every job once, in creation order, in pages of at most 100
    assert [j["creation_order"] for j in seen] == list(range(230))
    # And a page past the end is empty with `end` not behind `total`
    past = get(client, account, "/api/v2/jobs", batch_id=batch["id"], offset=500)
    assert past["data"] == [] and past["pagination"]["end"] >= 230


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 101}, "limit"),
        ({"offset": -1}, "offset"),
        ({"status": "PAUSED"}, "status"),
        ({"order_by": "nope"}, "order_by"),
        ({"order_by_direction": "sideways"}, "order_by_direction"),
        ({"start_date": "yesterday"}, "start_date"),
    ],
)
def test_a_bad_list_query_is_a_422_naming_the_parameter(
    client: TestClient, account: Account, params: dict[str, Any], field: str
) -> None:
    response = client.get("/api/v1/batches", params=params, headers=account.headers)
    assert response.status_code == 422, response.text
    assert response.json()["data"]["description"][0].split(":")[0].split("[")[0] == field


def test_every_batch_filter(
    client: TestClient, account: Account, sessions: sessionmaker[Session]
) -> None:
    # Given batches that differ in one attribute each
    small = create(client, account, jobs=1, tags=["alpha"])
    big = create(client, account, jobs=3, queue_priority="HIGH", device_type="EMU_MPS")
    opened = create(client, account, jobs=0, open=True, tags=["beta", "alpha"])
    with sessions.begin() as session:
        session.execute(
            update(Batch)
            .where(Batch.id == small["id"])
            .values(created_at=datetime.now(UTC) - timedelta(days=3))
        )
    finish(sessions, big["jobs"][0]["id"])

    def listed(**params: Any) -> set[str]:
        return ids(get(client, account, "/api/v1/batches", **params))

    everything = {small["id"], big["id"], opened["id"]}
    assert listed() == everything
    assert listed(id=[small["id"], big["id"]]) == {small["id"], big["id"]}
    assert listed(id_prefix=big["id"][:8]) == {big["id"]}
    assert listed(project_id=account.project_id) == everything
    assert listed(project_id=str(uuid.uuid4())) == set()
    assert listed(user_id=account.user_id) == everything
    assert listed(device_type="EMU_MPS") == {big["id"]}
    assert listed(device_type=["EMU_MPS", "EMU_SV"]) == everything
    assert listed(status="RUNNING") == {big["id"]}  # one of its jobs is DONE, two wait
    assert listed(status=["PENDING", "DONE"]) == {small["id"], opened["id"]}
    assert listed(open="True") == {opened["id"]}
    assert listed(open="false") == {small["id"], big["id"]}
    assert listed(complete="TRUE") == {small["id"], big["id"]}
    assert listed(min_jobs=2) == {big["id"]}
    assert listed(max_jobs=0) == {opened["id"]}
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert listed(start_date=since) == {big["id"], opened["id"]}
    assert listed(end_date=since) == {small["id"]}
    assert listed(queue_priority="HIGH") == {big["id"]}
    assert listed(queue_priority=["LOW", "MEDIUM"]) == {small["id"], opened["id"]}
    assert listed(tag="alpha") == {small["id"], opened["id"]}
    assert listed(tag="beta") == {opened["id"]}


def test_every_job_filter(
    client: TestClient, account: Account, sessions: sessionmaker[Session]
) -> None:
    # Given jobs that differ in one attribute each, in two batches
    one = create(client, account, jobs=3)
    two = create(client, account, jobs=1)
    a, b, c = (j["id"] for j in one["jobs"])
    (d,) = (j["id"] for j in two["jobs"])
    finish(sessions, a)
    finish(sessions, b, EventKind.ERROR)
    with sessions.begin() as session:
        session.execute(
            update(Job).where(Job.id == d).values(created_at=datetime.now(UTC) - timedelta(days=3))
        )

    def listed(**params: Any) -> set[str]:
        return ids(get(client, account, "/api/v2/jobs", **params))

    assert listed() == {a, b, c, d}
    assert listed(id=[a, d]) == {a, d}
    assert listed(id_prefix=c[:6]) == {c}
    assert listed(batch_id=one["id"]) == {a, b, c}
    assert listed(project_id=account.project_id) == {a, b, c, d}
    assert listed(user_id=account.user_id) == {a, b, c, d}
    assert listed(user_id="someone-else") == set()
    assert listed(status="DONE") == {a}
    assert listed(status=["ERROR", "PENDING"]) == {b, c, d}
    assert listed(min_runs=11) == {b, c}
    assert listed(max_runs=10) == {a, d}
    assert listed(errors="True") == {b}
    assert listed(errors="false") == {a, c, d}
    assert listed(origin="CLIENT") == {a, b, c, d}
    assert listed(origin="AZURE") == set()
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert listed(start_date=since) == {a, b, c}
    assert listed(end_date=since) == {d}
    ordered = get(client, account, "/api/v2/jobs", batch_id=one["id"], order_by="runs",
                  order_by_direction="DESC")  # fmt: skip
    assert [j["runs"] for j in ordered["data"]] == [12, 11, 10]


# --- open batches, retry, close -----------------------------------------------------------------


def test_jobs_are_added_to_an_open_batch_and_a_retry_gets_its_parent(
    client: TestClient, account: Account
) -> None:
    # Given an open batch with no jobs, as pulser's open_batch() creates it
    batch = create(client, account, jobs=0, open=True)
    job = {"runs": 10, "variables": {"omega": 5.0, "duration": 300}}
    # When jobs are added (a top-level array), then one is retried as the SDK does
    added = client.post(f"/api/v2/batches/{batch['id']}/jobs", json=[job], headers=account.headers)
    assert added.status_code == 200, added.text
    first = added.json()["data"]["jobs"][0]
    retried = client.post(
        f"/api/v2/batches/{batch['id']}/jobs",
        json=[{**job, "sequence": None}],
        headers=account.headers,
    ).json()["data"]
    # Then the batch shows all its jobs in order, the retry pointing to the original
    assert [j["creation_order"] for j in retried["jobs"]] == [0, 1]
    assert retried["jobs"][1]["parent_id"] == first["id"]
    assert retried["jobs"][0]["parent_id"] is None
    assert retried["jobs_count"] == 2


def test_a_closed_batch_takes_no_more_jobs(client: TestClient, account: Account) -> None:
    batch = create(client, account, jobs=0, open=True)
    closed = client.patch(f"/api/v2/batches/{batch['id']}/complete", headers=account.headers)
    assert closed.status_code == 200
    assert (closed.json()["data"]["open"], closed.json()["data"]["complete"]) == (False, True)
    again = client.patch(f"/api/v2/batches/{batch['id']}/complete", headers=account.headers)
    assert again.status_code == 200
    job = {"runs": 10, "variables": {"omega": 5.0, "duration": 300}}
    response = client.post(
        f"/api/v2/batches/{batch['id']}/jobs", json=[job], headers=account.headers
    )
    assert response.status_code == 409
    assert "closed" in response.json()["data"]["description"][0]


def test_added_jobs_are_validated_like_new_ones(client: TestClient, account: Account) -> None:
    batch = create(client, account, jobs=0, open=True)
    bad = [{"runs": 10, "variables": {"omgea": 5.0, "duration": 300}}]
    response = client.post(f"/api/v2/batches/{batch['id']}/jobs", json=bad, headers=account.headers)
    assert response.status_code == 422
    assert "jobs[0].variables: unknown variable 'omgea'" in response.json()["data"]["description"]
    # schema errors are named the same way (the body is the array of jobs)
    zero = [{"runs": 10}, {"runs": 0}]
    response = client.post(f"/api/v2/batches/{batch['id']}/jobs", json=zero,
                           headers=account.headers)  # fmt: skip
    assert response.status_code == 422
    assert response.json()["data"]["description"] == [
        "jobs[1].runs: Input should be greater than or equal to 1"
    ]
    response = client.post(f"/api/v2/batches/{batch['id']}/jobs", json={"runs": 1},
                           headers=account.headers)  # fmt: skip
    assert response.json()["data"]["description"] == ["jobs: Input should be a valid array"]
    assert get(client, account, f"/api/v2/batches/{batch['id']}")["data"]["jobs_count"] == 0


# --- cancel -----------------------------------------------------------------------------------


def test_a_pending_job_is_canceled_and_a_done_one_cannot_be(
    client: TestClient, account: Account, sessions: sessionmaker[Session]
) -> None:
    batch = create(client, account, jobs=2)
    first, second = (j["id"] for j in batch["jobs"])
    finish(sessions, second)
    canceled = client.patch(f"/api/v2/jobs/{first}/cancel", headers=account.headers)
    assert canceled.status_code == 200
    assert canceled.json()["data"]["status"] == "CANCELED"
    refused = client.patch(f"/api/v2/jobs/{second}/cancel", headers=account.headers)
    assert refused.status_code == 409
    status = get(client, account, f"/api/v1/batches/{batch['id']}/status")["data"]
    assert status == {"status": "DONE", "jobs_count_per_status": {"DONE": 1, "CANCELED": 1}}
    assert get(client, account, f"/api/v1/jobs/{first}/status")["data"] == {"status": "CANCELED"}


def test_a_batch_is_canceled_with_its_active_jobs(
    client: TestClient, account: Account, sessions: sessionmaker[Session], settings: Settings,
    redis_client: Any,
) -> None:  # fmt: skip
    batch = create(client, account, jobs=3)
    done = batch["jobs"][0]["id"]
    finish(sessions, done)
    response = client.patch(f"/api/v2/batches/{batch['id']}/cancel", headers=account.headers)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["status"] == "CANCELED"
    assert data["jobs_count_per_status"] == {"DONE": 1, "CANCELED": 2}
    # workers are told not to run the canceled jobs
    from core.names import RedisKeys

    flags = [RedisKeys(settings.namespace).cancel_flag(j["id"]) for j in batch["jobs"][1:]]
    assert all(redis_client.exists(flag) for flag in flags)
    again = client.patch(f"/api/v2/batches/{batch['id']}/cancel", headers=account.headers)
    assert again.status_code == 409


def test_batches_are_canceled_in_bulk_with_errors_keyed_by_id(
    client: TestClient, account: Account, sessions: sessionmaker[Session]
) -> None:
    ok = create(client, account)
    theirs = create(client, make_account(sessions))
    missing = str(uuid.uuid4())
    response = client.patch(
        "/api/v1/batches/cancel",
        json={"batch_ids": [ok["id"], theirs["id"], missing]},
        headers=account.headers,
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert [b["id"] for b in data["batches"]] == [ok["id"]]
    assert set(data["errors"]) == {theirs["id"], missing}
    assert all(uuid.UUID(key) for key in data["errors"])


def test_a_store_failure_after_a_bulk_cancel_committed_is_reported_per_batch_not_a_5xx(
    client: TestClient, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = create(client, account), create(client, account)
    real = operations.cancel_batch

    def failing_on_the_second(session: Session, user_id: str, batch_id: str) -> Batch:
        if batch_id == second["id"]:
            raise OperationalError("UPDATE batches", {}, Exception("connection lost"))
        return real(session, user_id, batch_id)

    monkeypatch.setattr(operations, "cancel_batch", failing_on_the_second)
    response = client.patch(
        "/api/v1/batches/cancel",
        json={"batch_ids": [first["id"], second["id"]]},
        headers=account.headers,
    )
    assert response.status_code == 200, response.text  # the first cancel committed
    data = response.json()["data"]
    assert [b["id"] for b in data["batches"]] == [first["id"]]
    assert "unavailable" in data["errors"][second["id"]]
    # the same failure before anything was written is a 503 the client may retry
    response = client.patch(
        "/api/v1/batches/cancel", json={"batch_ids": [second["id"]]}, headers=account.headers
    )
    assert response.status_code == 503
    monkeypatch.undo()
    status = get(client, account, f"/api/v1/batches/{second['id']}/status")["data"]["status"]
    assert status == "PENDING"


def test_a_batch_s_jobs_are_canceled_by_filter(
    client: TestClient, account: Account, sessions: sessionmaker[Session]
) -> None:
    batch = create(client, account, jobs=3)  # runs 10, 11, 12
    finish(sessions, batch["jobs"][2]["id"])
    response = client.patch(
        f"/api/v2/batches/{batch['id']}/cancel/jobs", params={"min_runs": 11},
        headers=account.headers,
    )  # fmt: skip
    data = response.json()["data"]
    assert [j["id"] for j in data["jobs"]] == [batch["jobs"][1]["id"]]
    assert list(data["errors"]) == [batch["jobs"][2]["id"]]


# --- rebatch and tags ---------------------------------------------------------------------------


def test_rebatch_reruns_the_matching_jobs_in_a_new_batch(
    client: TestClient, account: Account, sessions: sessionmaker[Session]
) -> None:
    old = create(client, account, jobs=3, tags=["x"])
    finish(sessions, old["jobs"][0]["id"])
    finish(sessions, old["jobs"][1]["id"], EventKind.ERROR)
    response = client.post(
        f"/api/v1/batches/{old['id']}/rebatch", params={"status": "ERROR"}, headers=account.headers
    )
    assert response.status_code == 200, response.text
    new = response.json()["data"]
    assert new["parent_id"] == old["id"] and new["id"] != old["id"]
    assert new["status"] == "PENDING" and new["tags"] == ["x"]
    assert [j["parent_id"] for j in new["jobs"]] == [old["jobs"][1]["id"]]
    nothing = client.post(
        f"/api/v1/batches/{old['id']}/rebatch", params={"min_runs": 99}, headers=account.headers
    )
    assert nothing.status_code == 422


def test_tags_are_replaced(client: TestClient, account: Account) -> None:
    batch = create(client, account, tags=["a", "b"])
    response = client.patch(
        f"/api/v1/batches/{batch['id']}/tags", json=["c"], headers=account.headers
    )
    assert response.json()["data"]["tags"] == ["c"]
    assert ids(get(client, account, "/api/v1/batches", tag="a")) == set()
    assert ids(get(client, account, "/api/v1/batches", tag="c")) == {batch["id"]}


# --- another project's resources ----------------------------------------------------------------


def test_another_project_s_resources_answer_404_everywhere(
    client: TestClient, account: Account, sessions: sessionmaker[Session]
) -> None:
    batch = create(client, account, jobs=1)
    job = batch["jobs"][0]["id"]
    stranger = make_account(sessions).headers
    calls = [
        ("GET", f"/api/v2/batches/{batch['id']}", None),
        ("GET", f"/api/v1/batches/{batch['id']}/status", None),
        ("POST", f"/api/v2/batches/{batch['id']}/jobs", []),
        ("PATCH", f"/api/v2/batches/{batch['id']}/complete", None),
        ("PATCH", f"/api/v2/batches/{batch['id']}/cancel", None),
        ("PATCH", f"/api/v2/batches/{batch['id']}/cancel/jobs", None),
        ("POST", f"/api/v1/batches/{batch['id']}/rebatch", None),
        ("PATCH", f"/api/v1/batches/{batch['id']}/tags", ["t"]),
        ("GET", f"/api/v2/jobs/{job}", None),
        ("GET", f"/api/v1/jobs/{job}/status", None),
        ("PATCH", f"/api/v2/jobs/{job}/cancel", None),
        ("GET", f"/api/v1/jobs/{job}/results_link", None),
    ]
    for method, path, body in calls:
        response = client.request(method, path, json=body, headers=stranger)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["status"] == "fail"
    assert get(client, account, f"/api/v2/batches/{batch['id']}")["data"]["status"] == "PENDING"


# --- devices and accounts -----------------------------------------------------------------------


def test_device_specs_are_pulser_devices_carrying_the_limits(
    client: TestClient, account: Account, settings: Settings
) -> None:
    specs = get(client, account, "/api/v1/devices/specs")["data"]
    assert set(specs) == {"EMU_MPS", "EMU_SV", "EMU_FREE", "EMU_TN", "EMU_FRESNEL"}
    # EMU_FRESNEL is the FRESNEL QPU's specs (here the reference: no QPU is configured)
    fresnel = deserialize_device(specs.pop("EMU_FRESNEL"))
    assert fresnel.name == "EMU_FRESNEL" and fresnel.max_runs == 2000
    assert fresnel.requires_layout
    # the QPU's 80 atoms, tightened to what the emulator accepts (so Pulser refuses it first)
    assert fresnel.max_atom_num == settings.limits(DeviceType.EMU_FRESNEL).max_atoms == 50
    for name, text in specs.items():
        device = deserialize_device(text)
        limits = settings.limits(DeviceType(name))
        assert device.name == name
        assert device.channels == MockDevice.channels
        assert device.max_atom_num == limits.max_atoms
        assert device.max_sequence_duration == limits.max_duration_ns
        assert device.max_runs == limits.max_runs
    public = client.get("/api/v1/devices/public-specs").json()["data"]
    assert {p["device_type"] for p in public} == {*specs, "EMU_FRESNEL"}


def test_devices_list_their_state(client: TestClient, account: Account) -> None:
    create(client, account, jobs=2)
    listed = {d["device_type"]: d for d in get(client, account, "/api/v1/devices")["data"]}
    assert listed["EMU_SV"]["jobs_pending"] == 2
    assert listed["EMU_SV"]["status"] == "DOWN"  # no worker runs in this test
    assert listed["EMU_SV"]["limits"]["max_atoms"] == 20
    assert client.get("/api/v1/devices").status_code == 401


def test_the_password_grant_issues_a_token_that_works(
    client: TestClient, sessions: sessionmaker[Session]
) -> None:
    with sessions.begin() as session:
        user = accounts.create_user(session, "ada", "s3cret")
        project = accounts.create_project(session, "p")
        accounts.add_member(session, user.id, project.id)
    form = {"grant_type": "password", "username": "ada", "password": "s3cret", "client_id": "x",
            "audience": "x", "realm": "x"}  # fmt: skip
    response = client.post("/oauth/token", data=form)
    assert response.status_code == 200, response.text
    token = response.json()
    assert token["expires_in"] > 60
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    assert client.get("/api/v1/batches", headers=headers).status_code == 200
    wrong = client.post("/oauth/token", data={**form, "password": "nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error_description"] == "wrong username or password"


def test_an_expired_or_revoked_token_is_refused(
    client: TestClient, account: Account, sessions: sessionmaker[Session]
) -> None:
    with sessions.begin() as session:
        expiring = accounts.create_token(session, account.user_id, ttl=timedelta(seconds=-1))
        revoked = accounts.create_token(session, account.user_id)
        accounts.revoke_token(session, revoked.id)
    for token in (expiring.token, revoked.token):
        response = client.get("/api/v1/batches", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401


# --- the OpenAPI document ---------------------------------------------------------------------


def test_the_openapi_document_describes_every_response_field(
    client: TestClient, account: Account
) -> None:
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    for name in ("BatchOut", "JobOut", "CreateBatchRequest", "JobIn", "Pagination"):
        for field, spec in schemas[name]["properties"].items():
            assert spec.get("description"), f"{name}.{field} has no description"
    # and the documented fields are exactly what the API returns
    batch = create(client, account)
    documented = set(schemas["BatchOut"]["properties"])
    assert set(batch) <= documented
    assert set(batch["jobs"][0]) <= set(schemas["JobOut"]["properties"])
    paths = document["paths"]
    expected = [
        "/api/v1/batches",
        "/api/v2/jobs",
        "/api/v2/batches/{batch_id}/jobs",
        "/api/v1/batches/{batch_id}/rebatch",
        "/oauth/token",
        "/api/v1/devices/specs",
    ]
    assert all(path in paths for path in expected)
