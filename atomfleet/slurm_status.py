"""The SLURM part of `atomfleet status`: each SLURM-routed device's controller health and
its jobs in flight, as the SLURM workers publish them in Redis (core.slurm_state)."""

from __future__ import annotations

import time

import redis

from core.config import Settings
from core.enums import DeviceType
from core.slurm_state import SlurmState


def slurm_lines(client: redis.Redis, settings: Settings, devices: list[DeviceType]) -> list[str]:
    """Lines to print; none when no device is routed to SLURM."""
    routed = [d for d in devices if d in settings.slurm_devices] + [
        d for d in settings.slurm_devices if d not in devices
    ]
    if not routed:
        return []
    state = SlurmState(client, settings.namespace)
    now = time.time()
    lines = ["", "SLURM jobs in flight:"]
    for device in routed:
        health = state.health(device)
        if health is None:
            said = "no worker has checked it yet"
        elif health.up:
            said = "controller UP"
        else:
            said = f"controller DOWN for {int(now - health.since)}s: {health.error}"
        jobs = state.in_flight(device)
        lines.append(
            f"{device.value} on {settings.slurm_devices[device]}: {said}; {len(jobs)} in flight"
        )
        for sub in jobs:
            lines.append(
                f"  job {sub.job_id} attempt {sub.attempt}: SLURM job {sub.slurm_job_id} "
                f"on {sub.cluster}, {sub.state}, submitted {int(now - sub.submitted_at)}s ago"
            )
    return lines
