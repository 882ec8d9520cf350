"""Devices: the ones this deployment serves, their Pulser specs and their state."""

from __future__ import annotations

import redis
from fastapi import APIRouter
from starlette.responses import Response

from api.deps import ServicesDep, UserDep
from api.envelope import success
from api.schemas import DeviceOut, PublicSpec, doc
from scheduler import devices

router = APIRouter(tags=["devices"])


@router.get("/api/v1/devices", summary="List Devices", responses=doc(list[DeviceOut]))
def list_devices(svc: ServicesDep, user_id: UserDep) -> Response:
    """Each device you can use: `status` UP when a worker serves it, and its queued and
    running jobs."""
    with svc.sessions() as session:
        counts = devices.job_counts(session, list(svc.settings.devices))
    data = []
    for device in svc.settings.devices:
        try:
            workers = devices.live_workers(svc.redis, svc.keys, device)
        except redis.RedisError:
            workers = 0
        data.append(
            {
                "device_type": device.value,
                "status": "UP" if workers else "DOWN",
                "workers": workers,
                "jobs_pending": counts[device]["PENDING"],
                "jobs_running": counts[device]["RUNNING"],
            }
        )
    return success(data)


@router.get("/api/v1/devices/specs", summary="Device Specs", responses=doc(dict[str, str]))
def device_specs(svc: ServicesDep, user_id: UserDep) -> Response:
    """`{device_type: Pulser device abstract repr (a JSON string)}`."""
    return success(devices.specs(list(svc.settings.devices)))


@router.get(
    "/api/v1/devices/public-specs", summary="Public Device Specs", responses=doc(list[PublicSpec])
)
def public_specs(svc: ServicesDep) -> Response:
    """The same specs without authentication, as `[{device_type, specs}]`."""
    return success(
        [
            {"device_type": d, "specs": s}
            for d, s in devices.specs(list(svc.settings.devices)).items()
        ]
    )
