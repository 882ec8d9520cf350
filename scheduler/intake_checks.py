"""Intake's checks on a sequence's JSON, made before Pulser deserializes or builds it."""

from __future__ import annotations

from typing import Any

from core.catalog import Limits
from core.enums import DeviceType
from core.errors import InvalidRequestError
from scheduler import sequence_structure
from scheduler.sequence_bounds import Footprint, SequenceShape, Unbounded


def check_shape(
    shape: SequenceShape,
    limits: Limits,
    device_type: DeviceType,
    values: Any,
    field_name: str | None = None,
    fixed_only: bool = False,
) -> Footprint:
    """Refuse a sequence that is certainly over the device's limits, before building it:
    its shape (operations, channels, layout traps, variables, expressions), its atoms, then
    its duration and waveform samples with these variable `values`."""
    shape.check_structure(limits, device_type.value)
    if shape.atoms > limits.max_atoms:
        raise InvalidRequestError.single(
            shape.field,
            f"{shape.atoms} atoms is over {device_type.value}'s limit of {limits.max_atoms}",
        )
    where = field_name or shape.field
    try:
        footprint = shape.footprint(values, fixed_only=fixed_only)
    except Unbounded as exc:
        raise InvalidRequestError.single(
            where, f"cannot bound the sequence's duration: {exc}"
        ) from exc
    if footprint.longest_channel_ns > limits.max_duration_ns:
        raise InvalidRequestError.single(
            where,
            f"the sequence lasts at least {footprint.longest_channel_ns:.0f} ns, over "
            f"{device_type.value}'s limit of {limits.max_duration_ns} ns",
        )
    sequence_structure.check_samples(footprint.total_ns, limits, device_type.value, where)
    return footprint
