"""Rotating the key of results links: ATOMFLEET_SECRET_KEY lists keys, the first signs and any
verifies, so a link signed before a rotation keeps working until it expires."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.signing import sign, verify
from core.config import Settings
from core.enums import DeviceType, EventKind
from tests.conftest import Account
from tests.metrics_support import report, submit


def test_a_link_signed_under_the_old_key_verifies_while_it_is_listed_and_not_after() -> None:
    expires = int(time.time()) + 60
    under_a = sign("A", "job", expires)
    assert verify(["B", "A"], "job", expires, under_a)
    assert not verify(["B"], "job", expires, under_a)
    assert verify(["B", "A"], "job", expires, sign("B", "job", expires))
    assert not verify(["B", "A"], "job", expires, sign("C", "job", expires))
    assert not verify(
        ["B", "A"], "job", int(time.time()) - 1, sign("A", "job", int(time.time()) - 1)
    )


def test_the_setting_is_a_comma_separated_list_whose_first_key_signs(tmp_path: object) -> None:
    assert Settings(secret_key="B, A").resolved_secret_keys() == ("B", "A")
    assert Settings(secret_key="only").resolved_secret_keys() == ("only",)
    for wrong in ("B,,A", "B,", ",A", " , "):
        with pytest.raises(ValidationError, match="empty key"):
            Settings(secret_key=wrong)


@contextmanager
def api(settings: Settings, keys: str) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"secret_key": keys}))) as client:
        yield client


def link(client: TestClient, account: Account, job: str) -> str:
    response = client.get(f"/api/v1/jobs/{job}/results_link", headers=account.headers)
    assert response.status_code == 200, response.text
    url: str = response.json()["data"]["results_link"]
    return url


def test_a_rotation_breaks_no_valid_link_and_retiring_the_old_key_ends_its_links(
    settings: Settings, sessions: sessionmaker[Session], account: Account
) -> None:
    # Given a DONE job and a results link signed by an API configured with key A
    [job] = submit(sessions, account, DeviceType.EMU_SV, "MEDIUM", 1)
    report(sessions, job, EventKind.DONE)
    with api(settings, "A") as old:
        signed_by_a = link(old, account, job)
        assert old.get(signed_by_a).status_code == 200
        # When a replica first learns B without signing with it ("A,B"), its links still
        # verify on a replica that knows only A (the first step of a rotation)
        with api(settings, "A,B") as learning:
            assert old.get(link(learning, account, job)).status_code == 200
    # When the API then signs with B and keeps A ("B,A")
    with api(settings, "B,A") as rotated:
        # Then the link signed under A still downloads, and new links are signed under B
        assert rotated.get(signed_by_a).json()["counter"] == {"000": 10}
        signed_by_b = link(rotated, account, job)
    with api(settings, "B") as retired:
        assert retired.get(signed_by_b).status_code == 200
        # and once A is retired ("B"), the link signed under A no longer downloads
        assert retired.get(signed_by_a).status_code == 404
