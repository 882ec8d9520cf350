"""Devices: the ones this deployment serves, their Pulser specs and their state."""

from __future__ import annotations

import dataclasses

import redis
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from api.deps import ServicesDep, UserDep
from api.envelope import success
from api.rate_limit import limited
from api.schemas import DeviceOut, PublicSpec, doc
from core.catalog import entry
from scheduler import devices
from scheduler.fleet_state import DeviceFleet, read_fleet

router = APIRouter(tags=["devices"])


@router.get("/api/v1/devices", summary="List Devices", responses=doc(list[DeviceOut]))
def list_devices(svc: ServicesDep, user_id: UserDep) -> Response:
    """Each device you can use: its status (UP while a worker consumes its queues and, for a
    QPU, the QPU says UP; STALLED while its workers claim free slots but take nothing; else
    DOWN), its waiting and running jobs, and the limits a job must fit."""
    with svc.sessions() as session:
        counts = devices.job_counts(session, list(svc.settings.devices))
    try:
        fleet = read_fleet(svc.redis, svc.keys, svc.settings.devices)
    except redis.RedisError:
        fleet = {}  # Redis does not answer: no worker can be seen, every device is DOWN
    data = []
    for device in svc.settings.devices:
        state = fleet.get(device, DeviceFleet())
        data.append(
            {
                "device_type": device.value,
                "kind": entry(device).kind.value,
                "status": state.status.value,
                "workers": state.workers,
                "slots": state.slots,
                "jobs_pending": counts[device]["PENDING"],
                "jobs_running": counts[device]["RUNNING"],
                "limits": dataclasses.asdict(svc.specs.limits(device)),
            }
        )
    return success(data)


@router.get(
    "/api/v1/devices/specs",
    summary="Device Specs",
    responses={
        **doc(dict[str, str]),
        304: {"description": "Not Modified: the If-None-Match ETag is current"},
    },
)
def device_specs(request: Request, svc: ServicesDep, user_id: UserDep) -> Response:
    """`{device_type: Pulser device abstract repr (a JSON string)}`: for emulators, Pulser's
    MockDevice carrying atomfleet's limits; for a QPU, its own specs (absent until it has
    answered); for EMU_FRESNEL, the FRESNEL QPU's."""
    return svc.specs_cache.by_device().response(request)


@router.get(
    "/api/v1/devices/public-specs",
    summary="Public Device Specs",
    responses={
        **doc(list[PublicSpec], errors=(429,)),
        304: {"description": "Not Modified: the If-None-Match ETag is current"},
    },
    dependencies=[Depends(limited("public_specs"))],
)
def public_specs(request: Request, svc: ServicesDep) -> Response:
    """The same specs without authentication, as `[{device_type, specs}]`, from memory
    (rebuilt when a QPU's specs change) with an ETag: `If-None-Match` gets a 304. Limited
    per client address (ATOMFLEET_RATE_LIMIT_PUBLIC_SPECS, 429 with Retry-After beyond)."""
    return svc.specs_cache.public().response(request)
