"""Where the contract is an integer, a boolean is a 422 (JSON's true is not 1)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.config import Settings
from tests.conftest import Account
from tests.sequences import plain


@pytest.fixture
def client(settings: Settings, sessions: sessionmaker[Session]) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def batch(account: Account, **fields: Any) -> dict[str, Any]:
    return {
        "project_id": account.project_id,
        "device_type": "EMU_SV",
        "sequence_builder": plain(2),
        "jobs": [{"runs": 10}],
        **fields,
    }


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"jobs": [{"runs": True}]}, "jobs[0].runs"),
        ({"jobs": [{"runs": False}]}, "jobs[0].runs"),
        ({"priority": True}, "priority"),
    ],
)
def test_a_boolean_where_an_integer_is_expected_is_a_422_naming_the_field(
    client: TestClient, account: Account, fields: dict[str, Any], field: str
) -> None:
    response = client.post(
        "/api/v1/batches", json=batch(account, **fields), headers=account.headers
    )
    assert response.status_code == 422, response.text
    [message] = response.json()["data"]["description"]
    assert message == f"{field}: expected an integer, not a boolean"


def test_added_jobs_refuse_a_boolean_runs_too(client: TestClient, account: Account) -> None:
    created = client.post(
        "/api/v1/batches", json=batch(account, open=True), headers=account.headers
    )
    assert created.status_code == 200, created.text
    added = client.post(
        f"/api/v2/batches/{created.json()['data']['id']}/jobs",
        json=[{"runs": True}],
        headers=account.headers,
    )
    assert added.status_code == 422
    assert added.json()["data"]["description"] == [
        "jobs[0].runs: expected an integer, not a boolean"
    ]


@pytest.mark.parametrize("param", ["limit", "offset", "min_runs"])
def test_a_boolean_in_an_integer_query_parameter_is_a_422(
    client: TestClient, account: Account, param: str
) -> None:
    response = client.get("/api/v2/jobs", params={param: "true"}, headers=account.headers)
    assert response.status_code == 422
    assert response.json()["data"]["description"][0].startswith(f"{param}: ")


def test_an_integer_runs_is_still_accepted(client: TestClient, account: Account) -> None:
    response = client.post("/api/v1/batches", json=batch(account), headers=account.headers)
    assert response.status_code == 200
    assert response.json()["data"]["jobs"][0]["runs"] == 10
