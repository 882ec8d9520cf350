"""Intake's checks on a sequence: on its JSON, before Pulser deserializes or builds it, then
on the built sequence (`build_problems` runs in the sandbox: Pulser's builds have a budget).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pulser import Sequence
from pulser.backend import EmulationConfig
from pulser.devices._device_datacls import BaseDevice

from core.catalog import Limits
from core.enums import DeviceType
from core.errors import InvalidRequestError
from scheduler import sequence_structure, sequences
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


@dataclass(frozen=True)
class BuiltChecks:
    """What a built sequence is checked against (crosses to the sandbox's processes)."""

    target: BaseDevice | None
    limits: Limits
    device_type: DeviceType
    config: EmulationConfig[Any] | None


def check_built(seq: Sequence[Any], checks: BuiltChecks, field_name: str) -> None:
    """The exact checks on a built sequence that Pulser's device may not make."""
    if checks.target is not None:
        sequences.check_runnable_on_hardware(seq, field_name)
    duration = int(seq.get_duration(include_fall_time=True))
    device = checks.device_type.value
    if duration > checks.limits.max_duration_ns:
        raise InvalidRequestError.single(
            field_name,
            f"the sequence lasts {duration} ns, over {device}'s limit of "
            f"{checks.limits.max_duration_ns} ns",
        )
    if checks.config is not None and sequences.is_noisy(checks.config):
        noisy = checks.limits.max_atoms_noisy
        atoms = len(seq.register.qubit_ids)
        if noisy is not None and atoms > noisy:
            raise InvalidRequestError.single(
                field_name,
                f"{atoms} atoms is over {device}'s limit of {noisy} with this "
                "noise model (a density matrix)",
            )


def build_problems(
    builder: Sequence[Any],
    builds: list[tuple[str, Mapping[str, Any]]],
    checks: BuiltChecks,
) -> list[tuple[str, str]]:
    """Build `builder` with each (field, variable values) and check it; the first problem."""
    for field_name, values in builds:
        try:
            check_built(sequences.build(builder, values, field_name), checks, field_name)
        except InvalidRequestError as exc:
            return exc.problems
    return []


def build_problems_of(
    serialized: str, builds: list[tuple[str, Mapping[str, Any]]], checks: BuiltChecks
) -> list[tuple[str, str]]:
    """`build_problems` of a builder given as its (validated) abstract repr, moved onto the
    target's specs as intake does: what a sandbox process runs."""
    builder = sequences.load_trusted(serialized, "sequence_builder")
    if checks.target is not None:
        builder = sequences.on_device(builder, checks.target, "sequence_builder")
    return build_problems(builder, builds, checks)
