"""What the QPU checks before accepting a job: Pulser's own checks, as a real QPU runs them.

Besides the device's limits (`with_new_device(strict=True)` rebuilds the sequence on the
served device, so every channel, duration and register limit is checked again), these are
the checks of Pulser's `mimic_qpu` mode and of Pulser-myQLM's client: a built sequence, a
register with coordinates and from a layout, at least one pulse, nb_run within max_runs.
"""

from __future__ import annotations

from typing import Any

from pulser import Sequence
from pulser.backend.abc import Backend
from pulser.devices import Device

from qpu_simulator.errors import InvalidSubmissionError

_MAX_REASON = 300


def validated_sequence(nb_run: int, pulser_sequence: str, device: Device) -> str:
    """The sequence bound to `device`, serialized for the emulator; raises if it cannot run.

    Costs a few milliseconds (schema validation and a rebuild): run it off the event loop.
    """
    if nb_run < 1:
        raise InvalidSubmissionError("nb_run", f"must be at least 1, got {nb_run}")
    if device.max_runs is not None and nb_run > device.max_runs:
        raise InvalidSubmissionError(
            "nb_run", f"{nb_run} is over {device.name}'s max_runs of {device.max_runs}"
        )
    seq = _deserialized(pulser_sequence)
    if seq.is_parametrized():
        names = ", ".join(seq.declared_variables)
        raise InvalidSubmissionError(
            "pulser_sequence",
            f"the sequence is parametrized (variables: {names}); build it before submitting",
        )
    if seq.is_register_mappable():
        raise InvalidSubmissionError(
            "pulser_sequence",
            "the register is mappable; give every qubit its coordinates before submitting",
        )
    try:
        bound = seq.with_new_device(device, strict=True)
        Backend.validate_sequence(bound, mimic_qpu=True)
    except (ValueError, TypeError) as exc:
        raise InvalidSubmissionError(
            "pulser_sequence", f"the sequence cannot run on {device.name}: {_short(exc)}"
        ) from exc
    return str(bound.to_abstract_repr(skip_validation=True))


def _deserialized(pulser_sequence: str) -> Any:
    try:
        return Sequence.from_abstract_repr(pulser_sequence)
    except Exception as exc:
        # Pulser raises JSON, schema, type and value errors of many kinds here; all of them
        # mean the same thing to the caller.
        raise InvalidSubmissionError(
            "pulser_sequence", f"not a valid Pulser abstract representation: {_short(exc)}"
        ) from exc


def _short(exc: Exception) -> str:
    """The first line of an error, bounded: schema errors quote the whole document."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"
