"""Create Batch over HTTP: every validation rule answers 422 naming the field, writes nothing."""

from __future__ import annotations

import dataclasses
import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pulser import Pulse, Register, Sequence
from pulser.backend import BitStrings, EmulationConfig
from pulser.devices import MockDevice
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.config import Settings
from scheduler.models import Batch, Job
from tests.conftest import Account, make_account
from tests.sequences import parametrized_sweep, plain

SWEEP = parametrized_sweep(3)
GOOD = {"omega": 5.0, "duration": 400}


@pytest.fixture
def client(settings: Settings, sessions: sessionmaker[Session]) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def batch(account: Account, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "project_id": account.project_id,
        "device_type": "EMU_SV",
        "sequence_builder": SWEEP,
        "jobs": [{"runs": 10, "variables": GOOD}],
    }
    body.update(fields)
    return body


def count_rows(sessions: sessionmaker[Session]) -> tuple[int, int]:
    with sessions() as session:
        return (
            session.scalar(select(func.count()).select_from(Batch)) or 0,
            session.scalar(select(func.count()).select_from(Job)) or 0,
        )


def assert_rejected(
    response: Any, sessions: sessionmaker[Session], message: str, status: int = 422
) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "fail"
    assert body["code"] == status
    assert message in body["data"]["description"], body["data"]["description"]
    assert count_rows(sessions) == (0, 0), "nothing may be written"


def post(client: TestClient, account: Account, body: Any) -> Any:
    return client.post("/api/v1/batches", json=body, headers=account.headers)


# --- accepted -------------------------------------------------------------------------------


def test_a_parametrized_batch_is_accepted_with_its_jobs_in_creation_order(
    client: TestClient, account: Account, sessions: sessionmaker[Session]
) -> None:
    # Given three variable sets for one parametrized sequence
    jobs = [{"runs": 10 + i, "variables": {"omega": 4.0 + i, "duration": 300}} for i in range(3)]
    # When the batch is created
    response = post(client, account, batch(account, jobs=jobs, tags=["t1"]))
    # Then it is PENDING with its three jobs, in order, in the contract's shape
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["status"] == "PENDING"
    assert (data["open"], data["complete"]) == (False, True)
    assert data["device_type"] == "EMU_SV"
    assert data["queue_priority"] == "MEDIUM"
    assert data["jobs_count"] == 3
    assert data["jobs_count_per_status"] == {"PENDING": 3}
    assert data["tags"] == ["t1"]
    assert data["sequence_builder"] == SWEEP
    assert [j["runs"] for j in data["jobs"]] == [10, 11, 12]
    assert [j["creation_order"] for j in data["jobs"]] == [0, 1, 2]
    assert [j["variables"]["omega"] for j in data["jobs"]] == [4.0, 5.0, 6.0]
    assert all(isinstance(j["created_at"], str) and "T" in j["created_at"] for j in data["jobs"])
    assert count_rows(sessions) == (1, 3)


def test_a_job_shows_its_built_sequence(client: TestClient, account: Account) -> None:
    # Given a created parametrized batch
    data = post(client, account, batch(account)).json()["data"]
    job_id = data["jobs"][0]["id"]
    # When the job is read
    job = client.get(f"/api/v2/jobs/{job_id}", headers=account.headers).json()["data"]
    # Then its sequence is the builder built with its variables
    built = Sequence.from_abstract_repr(job["sequence"])
    assert not built.is_parametrized()
    expected = Sequence.from_abstract_repr(SWEEP).build(**GOOD)
    assert built.get_duration() == expected.get_duration() == 800


def test_a_batch_reads_back_with_its_builder_and_job_ids(
    client: TestClient, account: Account
) -> None:
    data = post(client, account, batch(account)).json()["data"]
    read = client.get(f"/api/v2/batches/{data['id']}", headers=account.headers).json()["data"]
    assert read["sequence_builder"] == SWEEP
    assert read["job_ids"] == [j["id"] for j in data["jobs"]]


def test_an_open_batch_may_start_without_jobs(client: TestClient, account: Account) -> None:
    response = post(client, account, batch(account, jobs=[], open=True))
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["open"], data["complete"], data["jobs_count"]) == (True, False, 0)


def test_a_gzip_body_is_accepted(client: TestClient, account: Account) -> None:
    raw = gzip.compress(json.dumps(batch(account)).encode())
    response = client.post(
        "/api/v1/batches",
        content=raw,
        headers={**account.headers, "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text


def test_jobs_with_their_own_sequences_need_no_builder(
    client: TestClient, account: Account
) -> None:
    body = batch(account, sequence_builder=None, jobs=[{"runs": 5, "sequence": plain(3)}])
    response = post(client, account, body)
    assert response.status_code == 200, response.text


def test_without_runs_an_emulator_takes_the_configuration_s_shots(
    client: TestClient, account: Account
) -> None:
    config = EmulationConfig(observables=[BitStrings(num_shots=77)]).to_abstract_repr()
    body = batch(account, backend_configuration=config, jobs=[{"variables": GOOD}])
    assert post(client, account, body).json()["data"]["jobs"][0]["runs"] == 77


def test_the_legacy_sdk_s_placeholder_runs_defers_to_the_configuration(
    client: TestClient, account: Account
) -> None:
    # pulser-pasqal 0.2x sends runs=1 meaning "unset"; 0.24 sends runs only when given
    config = EmulationConfig(observables=[BitStrings(num_shots=90)]).to_abstract_repr()
    body = batch(account, backend_configuration=config, jobs=[{"runs": 1, "variables": GOOD}])
    legacy = {**account.headers, "User-Agent": "PasqalCloudSDK/0.22.0"}
    current = {**account.headers, "User-Agent": "PasqalCloudSDK/0.24.0"}
    old = client.post("/api/v1/batches", json=body, headers=legacy).json()["data"]
    new = client.post("/api/v1/batches", json=body, headers=current).json()["data"]
    assert old["jobs"][0]["runs"] == 90
    assert new["jobs"][0]["runs"] == 1


def test_deprecated_fields_still_work(client: TestClient, account: Account) -> None:
    body = batch(account, emulator="EMU_FREE", complete=False, jobs=[], priority=3)
    del body["device_type"]
    data = post(client, account, body).json()["data"]
    assert (data["device_type"], data["open"]) == ("EMU_FREE", True)


def test_the_device_type_is_inferred_from_the_sequence_s_device(
    client: TestClient, account: Account
) -> None:
    device = dataclasses.replace(MockDevice, name="EMU_FREE")
    seq = Sequence(Register.rectangle(1, 2, spacing=6.0, prefix="q"), device)
    seq.declare_channel("ryd", "rydberg_global")
    seq.add(Pulse.ConstantPulse(100, 2.0, 0.0, 0.0), "ryd")
    body = batch(account, sequence_builder=seq.to_abstract_repr(), jobs=[{"runs": 3}])
    del body["device_type"]
    assert post(client, account, body).json()["data"]["device_type"] == "EMU_FREE"


# --- rejected: 422 naming the field, nothing written ---------------------------------------


REJECTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("project missing", {"project_id": None}, "project_id: UUID input should be a string"),
    ("project not a uuid", {"project_id": "nope"}, "project_id: Input should be a valid UUID"),
    (
        "no jobs in a closed batch",
        {"jobs": []},
        "jobs: at least one job is required unless the batch is open",
    ),
    (
        "variables and sequence",
        {"jobs": [{"variables": GOOD, "sequence": plain(3)}]},
        "jobs[0]: give either variables or sequence, not both",
    ),
    (
        "no sequence at all",
        {"sequence_builder": None, "jobs": [{"runs": 3}]},
        "jobs[0].sequence: required when the batch has no sequence_builder",
    ),
    (
        "unknown variable",
        {"jobs": [{"variables": GOOD}, {"variables": GOOD}, {"variables": {**GOOD, "omgea": 1}}]},
        "jobs[2].variables: unknown variable 'omgea'",
    ),
    (
        "missing variable",
        {"jobs": [{"variables": {"omega": 5.0}}]},
        "jobs[0].variables: missing variable 'duration'",
    ),
    (
        "wrong type",
        {"jobs": [{"variables": {"omega": "fast", "duration": 400}}]},
        'jobs[0].variables.omega: expected a number, got "fast"',
    ),
    (
        "float for an int",
        {"jobs": [{"variables": {"omega": 5.0, "duration": 400.5}}]},
        "jobs[0].variables.duration: expected an integer, got 400.5",
    ),
    (
        "wrong size",
        {"jobs": [{"variables": {"omega": [5.0, 6.0], "duration": 400}}]},
        "jobs[0].variables.omega: expected 1 value(s), got 2",
    ),
    (
        "runs not positive",
        {"jobs": [{"runs": 0, "variables": GOOD}]},
        "jobs[0].runs: Input should be greater than or equal to 1",
    ),
    (
        "runs over max_runs",
        {"jobs": [{"runs": 5000, "variables": GOOD}]},
        "jobs[0].runs: 5000 is over the device's maximum of 2000",
    ),
    (
        "device not served",
        {"device_type": "FRESNEL"},
        "device_type: FRESNEL is not served here (available: EMU_FREE, EMU_FRESNEL, EMU_MPS, "
        "EMU_SV, EMU_TN)",
    ),
    (
        "unknown device",
        {"device_type": "EMU_C"},
        "device_type: Input should be 'EMU_MPS', 'EMU_SV', 'EMU_FREE', 'EMU_TN', "
        "'EMU_FRESNEL', 'FRESNEL' or 'NOOP'",
    ),
    (
        "device not inferable",
        {"device_type": None},
        "device_type: required: the sequence's device 'AnalogDevice' is not a device of this "
        "platform",
    ),
    (
        "builder not a sequence",
        {"sequence_builder": '{"version": "1"}'},
        "sequence_builder: not a valid Pulser sequence",
    ),
    (
        "job sequence parametrized",
        {"sequence_builder": None, "jobs": [{"sequence": SWEEP}]},
        "jobs[0].sequence: is parametrized; a job's own sequence must be built",
    ),
    (
        "bad backend configuration",
        {"backend_configuration": '{"observables": 3}'},
        "backend_configuration: not a valid Pulser EmulationConfig",
    ),
]


@pytest.mark.parametrize(
    ("fields", "message"), [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS]
)
def test_an_invalid_batch_is_rejected_and_nothing_is_written(
    client: TestClient,
    account: Account,
    sessions: sessionmaker[Session],
    fields: dict[str, Any],
    message: str,
) -> None:
    # Given a request with one mistake
    body = batch(account, **fields)
    # When it is submitted
    response = post(client, account, body)
    # Then it is a 422 whose message names the field and the reason, and nothing is written
    assert response.status_code == 422, response.text
    descriptions = response.json()["data"]["description"]
    assert any(d.startswith(message) for d in descriptions), descriptions
    assert count_rows(sessions) == (0, 0)


def test_a_build_error_names_the_job_and_the_device_limit(
    client: TestClient, account: Account, sessions: sessionmaker[Session]
) -> None:
    # Given a job whose amplitude is over AnalogDevice's maximum
    jobs = [{"runs": 5, "variables": GOOD}, {"runs": 5, "variables": {**GOOD, "omega": 50.0}}]
    response = post(client, account, batch(account, jobs=jobs))
    assert response.status_code == 422
    (message,) = response.json()["data"]["description"]
    assert message.startswith("jobs[1].variables: ")
    assert "amplitude goes over the maximum" in message
    assert count_rows(sessions) == (0, 0)


def test_a_large_batch_still_catches_a_device_limit_at_a_variable_s_extreme(
    settings: Settings, account: Account, sessions: sessionmaker[Session]
) -> None:
    # Given intake builds every job only up to 3 jobs, and a 6-job sweep whose largest
    # omega is over the device's maximum amplitude
    settings.intake_build_every_job_up_to = 3
    jobs = [{"runs": 5, "variables": {**GOOD, "omega": 2.0 + 4 * i}} for i in range(6)]
    with TestClient(create_app(settings)) as client:
        response = post(client, account, batch(account, jobs=jobs))
    # Then the job holding that extreme is named
    assert response.status_code == 422
    (message,) = response.json()["data"]["description"]
    assert message.startswith("jobs[5].variables: ") and "amplitude" in message
    assert count_rows(sessions) == (0, 0)


def test_a_stored_job_that_cannot_be_built_is_still_shown_without_its_sequence(
    client: TestClient, account: Account, sessions: sessionmaker[Session]
) -> None:
    # Given a job of a large batch that intake did not build and that cannot be built
    # (here: its variables set over the device's amplitude after intake)
    response = post(client, account, batch(account, jobs=[{"runs": 5, "variables": GOOD}]))
    assert response.status_code == 200, response.text
    job_id = response.json()["data"]["jobs"][0]["id"]
    with sessions.begin() as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(variables={**GOOD, "omega": 1e9})
        )
    # Then reading it answers 200, its sequence unknown, not a 422 to a GET
    shown = client.get(f"/api/v2/jobs/{job_id}", headers=account.headers)
    assert shown.status_code == 200, shown.text
    assert shown.json()["data"]["sequence"] is None


def test_a_duration_over_the_device_maximum_is_rejected(
    client: TestClient, account: Account, sessions: sessionmaker[Session]
) -> None:
    response = post(
        client, account, batch(account, jobs=[{"variables": {**GOOD, "duration": 4000}}])
    )
    assert response.status_code == 422
    (message,) = response.json()["data"]["description"]
    assert message.startswith("jobs[0].variables: ") and "maximum duration" in message
    assert count_rows(sessions) == (0, 0)


def test_a_project_the_caller_is_not_in_is_rejected(
    client: TestClient, account: Account, sessions: sessionmaker[Session]
) -> None:
    stranger = make_account(sessions)
    response = post(client, stranger, batch(account))
    assert_rejected(response, sessions, "project_id: not a project you are a member of")


def test_malformed_json_is_a_422_in_the_envelope(
    client: TestClient, account: Account, sessions: sessionmaker[Session]
) -> None:
    response = client.post(
        "/api/v1/batches",
        content=b'{"project_id": ',
        headers={**account.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["data"]["description"][0].startswith("body: ")
    assert count_rows(sessions) == (0, 0)


def test_a_body_that_claims_gzip_but_is_not_is_a_400(
    client: TestClient, account: Account, sessions: sessionmaker[Session]
) -> None:
    response = client.post(
        "/api/v1/batches",
        content=b"plain",
        headers={**account.headers, "Content-Encoding": "gzip"},
    )
    assert_rejected(
        response, sessions, "body: Content-Encoding is gzip but the body is not gzip data", 400
    )


@pytest.mark.parametrize("token", [None, "af_unknown"])
def test_without_a_valid_token_nothing_is_created(
    client: TestClient,
    account: Account,
    sessions: sessionmaker[Session],
    token: str | None,
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.post("/api/v1/batches", json=batch(account), headers=headers)
    assert response.status_code == 401
    assert response.json()["status"] == "fail"
    assert count_rows(sessions) == (0, 0)


# --- reads ----------------------------------------------------------------------------------


def test_another_project_s_batch_and_job_are_not_found(
    client: TestClient, account: Account, sessions: sessionmaker[Session]
) -> None:
    data = post(client, account, batch(account)).json()["data"]
    stranger = make_account(sessions)
    assert client.get(f"/api/v2/batches/{data['id']}", headers=stranger.headers).status_code == 404
    job = data["jobs"][0]["id"]
    assert client.get(f"/api/v2/jobs/{job}", headers=stranger.headers).status_code == 404
    assert (
        client.get(f"/api/v1/jobs/{job}/results_link", headers=stranger.headers).status_code == 404
    )


def test_a_results_link_is_null_until_a_result_exists(client: TestClient, account: Account) -> None:
    job = post(client, account, batch(account)).json()["data"]["jobs"][0]["id"]
    response = client.get(f"/api/v1/jobs/{job}/results_link", headers=account.headers)
    assert response.status_code == 200
    assert response.json()["data"] == {"results_link": None}


def test_a_forged_or_expired_download_link_is_refused(client: TestClient, account: Account) -> None:
    job = post(client, account, batch(account)).json()["data"]["jobs"][0]["id"]
    assert client.get(f"/api/v1/results/{job}?expires=9999999999&signature=00").status_code == 404
    from api.signing import sign

    expired = client.get(f"/api/v1/results/{job}?expires=1&signature={sign('test-secret', job, 1)}")
    assert expired.status_code == 404
