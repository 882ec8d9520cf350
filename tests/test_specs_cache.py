"""Public Device Specs: built when the specs change, served from memory with an ETag."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from pulser.devices import AnalogDevice
from pulser.json.abstract_repr.deserializer import deserialize_device

from api.app import create_app
from api.specs_cache import SpecsCache
from core.config import Settings
from core.enums import DeviceType
from core.names import RedisKeys
from tests.conftest import Account


@pytest.fixture
def qpu_settings(settings: Settings) -> Settings:
    # A FRESNEL QPU is configured (nothing answers there: its specs come from Redis only).
    return settings.model_copy(
        update={"qpus": {DeviceType.FRESNEL: "http://127.0.0.1:1"}, "devices": [
            DeviceType.EMU_SV, DeviceType.EMU_FRESNEL, DeviceType.FRESNEL
        ]}
    )  # fmt: skip


@pytest.fixture
def client(qpu_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(qpu_settings)) as c:
        yield c


def cache_of(client: TestClient) -> SpecsCache:
    cache: SpecsCache = client.app.state.services.specs_cache  # type: ignore[attr-defined]
    return cache


def publish_qpu_specs(client: redis.Redis, settings: Settings, max_runs: int) -> None:
    device = dataclasses.replace(AnalogDevice, name="FRESNEL", max_runs=max_runs)
    key = RedisKeys(settings.namespace).device_state(DeviceType.FRESNEL)
    client.hset(key, "specs", json.dumps(json.loads(device.to_abstract_repr())))


def test_public_specs_are_built_once_and_a_matching_etag_gets_a_304(
    client: TestClient,
) -> None:
    # Given an API that prepared the specs at start-up
    cache = cache_of(client)
    assert cache.builds == 1
    # When anonymous callers ask many times
    first = client.get("/api/v1/devices/public-specs")
    for _ in range(5):
        again = client.get("/api/v1/devices/public-specs")
        assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    # Then nothing was rebuilt, and the answer is the specs of the served devices
    assert cache.builds == 1
    assert first.status_code == 200
    served = {p["device_type"] for p in first.json()["data"]}
    assert served == {"EMU_SV", "EMU_FRESNEL"}  # FRESNEL: absent until the QPU answered
    # and a client holding the current ETag gets a 304 without a body
    etag = first.headers["etag"]
    cached = client.get("/api/v1/devices/public-specs", headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["etag"] == etag
    listed = client.get("/api/v1/devices/public-specs", headers={"If-None-Match": f'"x", {etag}'})
    assert listed.status_code == 304
    stale = client.get("/api/v1/devices/public-specs", headers={"If-None-Match": '"stale"'})
    assert stale.status_code == 200 and stale.content == first.content


def test_a_qpu_s_new_specs_are_served_with_a_new_etag(
    client: TestClient, qpu_settings: Settings, redis_client: redis.Redis
) -> None:
    # Given the served specs and their ETag, before the QPU answered
    cache = cache_of(client)
    cache.recheck_s = 0  # compare with Redis on every call (default: at most once a second)
    before = client.get("/api/v1/devices/public-specs")
    # When the scheduler's QPU watch stores the QPU's specs
    publish_qpu_specs(redis_client, qpu_settings, max_runs=1234)
    after = client.get("/api/v1/devices/public-specs")
    # Then they are served at once, under another ETag, EMU_FRESNEL following FRESNEL's
    assert after.headers["etag"] != before.headers["etag"]
    specs = {p["device_type"]: p["specs"] for p in after.json()["data"]}
    assert deserialize_device(specs["FRESNEL"]).max_runs == 1234
    assert deserialize_device(specs["EMU_FRESNEL"]).max_runs == 1234
    old = client.get(
        "/api/v1/devices/public-specs", headers={"If-None-Match": before.headers["etag"]}
    )
    assert old.status_code == 200
    # and calls while nothing changes build nothing more
    builds = cache.builds
    for _ in range(3):
        client.get("/api/v1/devices/public-specs")
    assert cache.builds == builds
    # When the QPU's specs change again (a calibration)
    publish_qpu_specs(redis_client, qpu_settings, max_runs=999)
    # Then the next call serves them, built once more
    body = client.get("/api/v1/devices/public-specs").json()["data"]
    assert {p["device_type"]: deserialize_device(p["specs"]).max_runs for p in body}[
        "FRESNEL"
    ] == 999
    assert cache.builds == builds + 1


def test_device_specs_for_callers_with_a_token_come_from_the_same_cache(
    client: TestClient, account: Account
) -> None:
    headers = account.headers
    first = client.get("/api/v1/devices/specs", headers=headers)
    assert first.status_code == 200 and "EMU_SV" in first.json()["data"]
    again = client.get(
        "/api/v1/devices/specs", headers={**headers, "If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304
    assert cache_of(client).builds == 1
