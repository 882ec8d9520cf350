"""Pulser sequences at intake: deserialize, check variables, build, and read device limits.

Deserializing with schema validation is the expensive step (~6 ms): it happens once per
batch for the builder. Each job is then checked and built from that one object.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from typing import Any

from pulser import Sequence
from pulser.backend import Backend, BitStrings, EmulationConfig
from pulser.devices._device_datacls import BaseDevice
from pulser.parametrized import Variable

from core.catalog import Limits
from core.errors import InvalidRequestError
from scheduler import sequence_schema


def _reason(exc: BaseException) -> str:
    """The first line of Pulser's message, clipped: jsonschema's quotes the whole document."""
    text = str(exc).strip().splitlines()
    return sequence_schema.clip(text[0]) if text else type(exc).__name__


def load_sequence(serialized: str, field: str) -> Sequence[Any]:
    """A sequence from its abstract repr, or a 422 naming `field`."""
    sequence_schema.install()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Sequence.from_abstract_repr(serialized)
    except Exception as exc:  # pulser raises many types (schema, value, type, key errors)
        raise InvalidRequestError.single(
            field, f"not a valid Pulser sequence: {_reason(exc)}"
        ) from exc


def load_trusted(serialized: str, field: str) -> Sequence[Any]:
    """A sequence already validated (by a sandbox process), deserialized without validating
    it again."""
    with sequence_schema.trusted():
        return load_sequence(serialized, field)


def variable_problems(
    declared: Mapping[str, Variable], values: Mapping[str, Any], field: str
) -> list[tuple[str, str]]:
    """What is wrong with `values` for a sequence declaring `declared` (empty if nothing)."""
    problems = [(field, f"unknown variable {name!r}") for name in values if name not in declared]
    problems += [(field, f"missing variable {name!r}") for name in declared if name not in values]
    for name, var in declared.items():
        if name in values:
            reason = _value_problem(var, values[name])
            if reason:
                problems.append((f"{field}.{name}", reason))
    return problems


def _value_problem(var: Variable, value: Any) -> str | None:
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and len(items) != var.size:
        return f"expected {var.size} value(s), got {len(items)}"
    if not isinstance(value, list) and var.size != 1:
        return f"expected a list of {var.size} values"
    kind = "an integer" if var.dtype is int else "a number"
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | float):
            return f"expected {kind}, got {json.dumps(item)[:40]}"
        try:
            number = float(item)
        except OverflowError:
            return f"expected {kind} that fits a float"
        if not math.isfinite(number):
            return f"expected {kind}, got {item}"
        if var.dtype is int and not number.is_integer():
            return f"expected an integer, got {item}"
    return None


def build(builder: Sequence[Any], values: Mapping[str, Any], field: str) -> Sequence[Any]:
    """The sequence built with `values`; device limits are enforced here by Pulser."""
    if not builder.is_parametrized():
        return builder
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return builder.build(**values)
    except Exception as exc:
        raise InvalidRequestError.single(field, _reason(exc)) from exc


def build_serialized(serialized: str, values: Mapping[str, Any] | None) -> str:
    """The abstract repr of the built sequence (what a job's `sequence` field shows)."""
    seq = load_sequence(serialized, "sequence")
    if not seq.is_parametrized():
        return serialized
    built = build(seq, values or {}, "variables")
    return built.to_abstract_repr(skip_validation=True)


def on_device(seq: Sequence[Any], device: BaseDevice, field: str) -> Sequence[Any]:
    """`seq` moved onto `device`'s specs (its calls replayed there); 422 when it does not fit."""
    if seq.device == device:
        return seq
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return seq.switch_device(device, strict=True)
    except Exception as exc:
        raise InvalidRequestError.single(
            field, f"does not fit {device.name}'s specs: {_reason(exc)}"
        ) from exc


def check_runnable_on_hardware(seq: Sequence[Any], field: str) -> None:
    """What a QPU refuses that Pulser's device checks let through (a register not from a
    layout, an empty sequence...), checked as Pulser's backends do with `mimic_qpu`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Backend.validate_sequence(seq, mimic_qpu=True)
    except Exception as exc:
        raise InvalidRequestError.single(field, f"not runnable on the QPU: {_reason(exc)}") from exc


def serialize(seq: Sequence[Any]) -> str:
    return str(seq.to_abstract_repr(skip_validation=True))


def max_runs(seq: Sequence[Any]) -> int | None:
    limit = seq.device.max_runs
    return int(limit) if limit is not None else None


def device_name(serialized: str) -> str:
    """The name of the device a serialized sequence embeds (read from its JSON)."""
    try:
        device = json.loads(serialized).get("device")
    except (ValueError, AttributeError, RecursionError):
        device = None
    name = device.get("name") if isinstance(device, dict) else device
    return name if isinstance(name, str) else ""


def load_emulation_config(serialized: str, field: str) -> EmulationConfig[Any]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return EmulationConfig.from_abstract_repr(serialized)
    except Exception as exc:
        raise InvalidRequestError.single(
            field, f"not a valid Pulser EmulationConfig: {_reason(exc)}"
        ) from exc


def configured_shots(config: EmulationConfig[Any] | None, default: int) -> int:
    """Shots an emulation takes when a job gives no `runs`: its BitStrings', else the default."""
    if config is None:
        return default
    for obs in config.observables:
        if isinstance(obs, BitStrings) and obs.num_shots is not None:
            return int(obs.num_shots)
    return int(config.default_num_shots or default)


# Noise that makes emu-sv and QuTiP hold a density matrix (4^N amplitudes).
_DISSIPATIVE = frozenset({"dephasing", "relaxation", "depolarizing", "eff_noise", "leakage"})


def is_noisy(config: EmulationConfig[Any]) -> bool:
    noise = config._backend_options.get("noise_model")
    types = getattr(noise, "noise_types", ()) or ()
    return bool(_DISSIPATIVE.intersection(types))


def config_problems(
    config: EmulationConfig[Any], limits: Limits, field: str
) -> list[tuple[str, str]]:
    """What in an emulation configuration is over the device's limits."""
    options = config._backend_options
    problems = []
    trajectories = options.get("n_trajectories")
    if isinstance(trajectories, int) and trajectories > limits.max_trajectories:
        problems.append(
            (f"{field}.n_trajectories", f"{trajectories} is over the limit of "
             f"{limits.max_trajectories}")
        )  # fmt: skip
    bond = options.get("max_bond_dim")
    if limits.max_bond_dim is not None and isinstance(bond, int) and bond > limits.max_bond_dim:
        problems.append(
            (f"{field}.max_bond_dim", f"{bond} is over the limit of {limits.max_bond_dim}")
        )
    dt = options.get("dt")
    if isinstance(dt, int | float) and not dt >= 1:
        problems.append((f"{field}.dt", f"{dt} ns is under the smallest time step, 1 ns"))
    shots = [options.get("default_num_shots")]
    shots += [o.num_shots for o in config.observables if isinstance(o, BitStrings)]
    for value in shots:
        if isinstance(value, int) and value > limits.max_runs:
            problems.append(
                (f"{field}.num_shots", f"{value} is over the limit of {limits.max_runs}")
            )
    return problems
