"""The device seam: one public status that `/api/v1/devices` and `atomfleet status` agree on,
and catalog entries that say how a device behaves (its fewest atoms, its mirrored QPU)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from atomfleet.examples import parametrized_sweep, plain
from atomfleet.status import print_status
from core.catalog import CATALOG, DeviceKind, SpecsSource
from core.config import Settings
from core.enums import DeviceStatus, DeviceType
from core.names import RedisKeys, device_queues
from scheduler.device_state import DeviceState
from scheduler.fleet_state import read_fleet
from scheduler.watch import FleetWatch
from tests.conftest import Account
from tests.metrics_support import beat

QPU = DeviceType.FRESNEL
DEVICES = [DeviceType.EMU_SV, DeviceType.EMU_MPS, DeviceType.EMU_FREE, QPU]


@pytest.fixture
def fleet_settings(settings: Settings) -> Settings:
    # The QPU's URL is never called here: its state is what the scheduler's watch wrote.
    return settings.model_copy(update={"devices": DEVICES, "qpus": {QPU: "http://127.0.0.1:9"}})


def api_statuses(settings: Settings, account: Account) -> dict[str, str]:
    with TestClient(create_app(settings)) as client:
        response = client.get("/api/v1/devices", headers=account.headers)
    assert response.status_code == 200, response.text
    return {d["device_type"]: d["status"] for d in response.json()["data"]}


def cli_statuses(settings: Settings, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    assert print_status(settings) == 0
    lines = capsys.readouterr().out.splitlines()
    return {
        cells[0]: cells[1]
        for cells in (line.split() for line in lines)
        if cells and cells[0] in {d.value for d in DEVICES}
    }


@pytest.mark.parametrize(
    "qpu_says", [DeviceStatus.UP, DeviceStatus.DOWN, DeviceStatus.UNREACHABLE, None]
)
def test_the_api_and_the_command_line_show_the_same_status_for_every_device(
    fleet_settings: Settings,
    sessions: sessionmaker[Session],
    account: Account,
    redis_client: Redis,
    capsys: pytest.CaptureFixture[str],
    qpu_says: DeviceStatus | None,
) -> None:
    # Given EMU_SV consuming, EMU_MPS's workers stalled, EMU_FREE without a worker, and a
    # FRESNEL worker whose QPU last said `qpu_says` (None: never checked)
    keys = RedisKeys(fleet_settings.namespace)
    state = DeviceState(redis_client, keys)
    for device in (DeviceType.EMU_SV, DeviceType.EMU_MPS, QPU):
        beat(redis_client, keys, device, f"{device.value}:1", concurrency=1, busy=0)
    state.mark_stalled(DeviceType.EMU_MPS, True)
    if qpu_says is not None:
        state.record_check(QPU, qpu_says)
    # When an operator and a user each look
    cli = cli_statuses(fleet_settings, capsys)
    api = api_statuses(fleet_settings, account)
    # Then they agree, and a QPU is UP only while it says so
    expected = {
        "EMU_SV": "UP",
        "EMU_MPS": "STALLED",
        "EMU_FREE": "DOWN",
        "FRESNEL": "UP" if qpu_says == DeviceStatus.UP else "DOWN",
    }
    assert api == expected
    assert cli == expected


def test_a_device_that_consumes_again_is_up_again(
    fleet_settings: Settings,
    sessions: sessionmaker[Session],
    account: Account,
    redis_client: Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = RedisKeys(fleet_settings.namespace)
    state = DeviceState(redis_client, keys)
    beat(redis_client, keys, DeviceType.EMU_MPS, "mps:1", concurrency=1, busy=0)
    state.mark_stalled(DeviceType.EMU_MPS, True)
    assert state.stalled_since(DeviceType.EMU_MPS) is not None
    state.mark_stalled(DeviceType.EMU_MPS, False)
    assert state.stalled_since(DeviceType.EMU_MPS) is None
    assert cli_statuses(fleet_settings, capsys)["EMU_MPS"] == "UP"
    assert api_statuses(fleet_settings, account)["EMU_MPS"] == "UP"


# --- the fewest atoms --------------------------------------------------------------------------


@pytest.fixture
def client(settings: Settings, sessions: sessionmaker[Session]) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def one_atom_batch(account: Account, device: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "project_id": account.project_id,
        "device_type": device,
        "jobs": [{"runs": 10, "sequence": plain(1)}],
    }
    body.update(fields)
    return body


@pytest.mark.parametrize("device", ["EMU_MPS", "EMU_TN"])
def test_a_one_atom_register_on_emu_mps_is_refused_naming_the_limit(
    client: TestClient, account: Account, device: str
) -> None:
    # When a user sends a one-atom job to an emu-mps device (which asserts on fewer than 2)
    response = client.post(
        "/api/v1/batches", json=one_atom_batch(account, device), headers=account.headers
    )
    # Then intake answers 422 naming the sequence and the device's minimum, writing nothing
    assert response.status_code == 422, response.text
    description = response.json()["data"]["description"]
    assert f"jobs[0].sequence: 1 atom is under {device}'s minimum of 2 atoms" in description
    listed = client.get("/api/v1/batches", headers=account.headers).json()
    assert listed["data"] == []


def test_a_one_atom_builder_on_emu_mps_is_refused_too(client: TestClient, account: Account) -> None:
    body = one_atom_batch(
        account,
        "EMU_MPS",
        sequence_builder=parametrized_sweep(1),
        jobs=[{"runs": 10, "variables": {"omega": 5.0, "duration": 400}}],
    )
    response = client.post("/api/v1/batches", json=body, headers=account.headers)
    assert response.status_code == 422, response.text
    description = response.json()["data"]["description"]
    assert "sequence_builder: 1 atom is under EMU_MPS's minimum of 2 atoms" in description


def test_emu_sv_still_runs_a_single_atom_and_emu_mps_two(
    client: TestClient, account: Account
) -> None:
    one = client.post(
        "/api/v1/batches", json=one_atom_batch(account, "EMU_SV"), headers=account.headers
    )
    assert one.status_code == 200, one.text
    two = one_atom_batch(account, "EMU_MPS", jobs=[{"runs": 10, "sequence": plain(2)}])
    assert client.post("/api/v1/batches", json=two, headers=account.headers).status_code == 200


# --- the catalog says what a device is ---------------------------------------------------------


def test_every_mirror_names_a_qpu_and_only_a_mirror_does() -> None:
    for device, entry in CATALOG.items():
        if entry.specs == SpecsSource.MIRROR:
            assert entry.mirrors is not None, device
            assert CATALOG[entry.mirrors].remote, f"{device} mirrors a device without an API"
        else:
            assert entry.mirrors is None, device
    assert CATALOG[DeviceType.EMU_FRESNEL].mirrors == DeviceType.FRESNEL


def test_the_qpu_s_behaviour_is_in_its_entry() -> None:
    qpu = CATALOG[DeviceType.FRESNEL]
    assert qpu.kind == DeviceKind.QPU
    assert qpu.remote and qpu.runs_required and qpu.dispatch_only_while_operational
    emulators = [e for e in CATALOG.values() if e.kind != DeviceKind.QPU]
    assert not any(e.runs_required or e.dispatch_only_while_operational for e in emulators)
    # emu-mps (and EMU_FRESNEL, which runs it) refuses one atom; the others take it
    assert {d for d, e in CATALOG.items() if e.min_atoms == 2} == {
        DeviceType.EMU_MPS, DeviceType.EMU_TN, DeviceType.EMU_FRESNEL,
    }  # fmt: skip


def test_the_fleet_watch_flags_a_stalled_device_and_clears_it_once_it_consumes(
    settings: Settings, redis_client: Redis
) -> None:
    # Given a message waiting for EMU_SV and a live worker reporting a free slot
    watched = settings.model_copy(update={"stall_after_s": 1e-6})
    keys = RedisKeys(watched.namespace)
    queue = keys.celery_queue(device_queues(DeviceType.EMU_SV)[0])
    redis_client.lpush(queue, b"{}")
    beat(redis_client, keys, DeviceType.EMU_SV, "sv:1", concurrency=1, busy=0)
    watch = FleetWatch(watched, redis_client, [DeviceType.EMU_SV])
    # When the watch turns while nothing is taken, then after the queue emptied
    stalled = watch.watch_once()[DeviceType.EMU_SV]
    flagged = read_fleet(redis_client, keys, [DeviceType.EMU_SV])[DeviceType.EMU_SV]
    redis_client.delete(queue)
    watch.watch_once()
    after = read_fleet(redis_client, keys, [DeviceType.EMU_SV])[DeviceType.EMU_SV]
    # Then the device was STALLED, and is UP again
    assert stalled and flagged.stalled and flagged.status == DeviceStatus.STALLED
    assert not after.stalled and after.status == DeviceStatus.UP
