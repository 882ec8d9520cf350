"""The devices this deployment serves: their Pulser specs (with atomfleet's limits) and state."""

from __future__ import annotations

import dataclasses
import functools

from pulser.devices import MockDevice
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.catalog import Limits, SpecsSource, entry
from core.config import Settings
from core.enums import DeviceType, JobStatus
from scheduler.models import JobCount


@functools.lru_cache(maxsize=32)
def _mock_spec(device_type: DeviceType, limits: Limits) -> str:
    """MockDevice named after the device type, carrying our limits.

    A sequence built on it names its device type (so `device_type` can be left out), and
    Pulser refuses, on the client already, what intake would refuse.
    """
    device = dataclasses.replace(
        MockDevice,
        name=device_type.value,
        max_atom_num=limits.max_atoms,
        max_sequence_duration=limits.max_duration_ns,
        max_runs=limits.max_runs,
    )
    return str(device.to_abstract_repr())


def specs(settings: Settings) -> dict[str, str]:
    """`{device_type: Pulser device abstract repr}` of the devices served here."""
    found = {}
    for device in settings.devices:
        if entry(device).specs == SpecsSource.MOCK:
            found[device.value] = _mock_spec(device, settings.limits(device))
    return found


def job_counts(session: Session, devices: list[DeviceType]) -> dict[DeviceType, dict[str, int]]:
    """PENDING and RUNNING jobs per device, from the maintained counts."""
    rows = session.execute(
        select(JobCount.device_type, JobCount.status, func.sum(JobCount.n))
        .where(JobCount.status.in_([JobStatus.PENDING, JobStatus.RUNNING]))
        .group_by(JobCount.device_type, JobCount.status)
    ).all()
    counts = {d: {"PENDING": 0, "RUNNING": 0} for d in devices}
    for device, status, n in rows:
        if device in counts:
            counts[device][status.value] = int(n or 0)
    return counts
