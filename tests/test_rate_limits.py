"""Anonymous endpoints are limited per client address, as uvicorn gives it after trusted
proxy headers (the API trusts 127.0.0.1 by default: these tests' requests come from there
and name the client in X-Forwarded-For)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import Settings
from tests.fleet import TestFleet

pytestmark = pytest.mark.e2e

SPECS = "/api/v1/devices/public-specs"


@pytest.fixture
def api(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[TestFleet]:
    fleet = TestFleet(pg_url, redis_url, tmp_path / "fleet")
    with fleet.running("api"):
        yield fleet


def test_rapid_anonymous_calls_from_one_address_get_429_after_the_documented_limit(
    api: TestFleet,
) -> None:
    # Given the documented default: 30 calls a minute per client address
    limit = int(Settings.model_fields["rate_limit_public_specs"].default.split("/")[0])
    assert limit == 30
    # When one address calls public-specs 50 times at once
    answers = [api.http.get(SPECS, headers={"X-Forwarded-For": "203.0.113.7"}) for _ in range(50)]
    # Then the first 30 are answered and the rest are 429 with a Retry-After within the minute
    assert [a.status_code for a in answers] == [200] * limit + [429] * (50 - limit)
    refused = answers[-1]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "203.0.113.7" in refused.json()["data"]["description"][0]
    # while another address is still served, and so are callers with a token elsewhere
    other = api.http.get(SPECS, headers={"X-Forwarded-For": "203.0.113.8"})
    assert other.status_code == 200
    assert api.http.get("/healthz", headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 200


def test_a_304_counts_like_any_call(api: TestFleet) -> None:
    # Given the current ETag
    headers = {"X-Forwarded-For": "198.51.100.1"}
    etag = api.http.get(SPECS, headers=headers).headers["etag"]
    # When an address revalidates past its limit, Then it is refused too
    answers = [
        api.http.get(SPECS, headers={**headers, "If-None-Match": etag}).status_code
        for _ in range(30)
    ]
    assert answers == [304] * 29 + [429]
