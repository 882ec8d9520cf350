"""What a Pulser sequence would cost, read from its abstract-repr JSON before Pulser builds it.

Pulser materializes every waveform as one sample per nanosecond (~24 bytes each), both when
it deserializes a built sequence and when it builds a parametrized one, so a 4 KB request
asking for a 10^9 ns pulse would take tens of GB. Here the JSON is walked instead: each
operation's duration is evaluated (variables and expressions included, for each job's
values), and per channel summed. A channel's operations run one after another, so the
longest channel sum is a lower bound of the sequence's duration: over the device's limit,
the job can never be valid and is refused before anything is built. Under it, building
costs at most (channels x limit) samples, and Pulser (or the worker) checks the exact
duration.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from core.catalog import Limits
from core.errors import InvalidRequestError
from scheduler import sequence_structure

MAX_EXPRESSION_DEPTH = 64
_WAVEFORM_KINDS = frozenset(
    {
        "constant",
        "ramp",
        "blackman",
        "blackman_max",
        "kaiser",
        "kaiser_max",
        "interpolated",
        "custom",
        "composite",
    }
)
_BINARY: dict[str, Callable[[float, float], float]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "mod": lambda a, b: math.fmod(a, b),
    "pow": lambda a, b: math.pow(a, b),
}
_UNARY: dict[str, Callable[[float], float]] = {
    "neg": lambda a: -a,
    "abs": abs,
    "floor": math.floor,
    "ceil": math.ceil,
    "round": round,
    "sqrt": math.sqrt,
    "exp": math.exp,
    "log2": math.log2,
    "log": math.log,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "tanh": math.tanh,
}
Value = float | list[float]


class Unbounded(ValueError):
    """A duration that cannot be evaluated to a finite number."""


@dataclass(frozen=True)
class Footprint:
    longest_channel_ns: float  # a lower bound of the sequence's duration
    longest_op_ns: float
    total_ns: float = 0.0  # every channel's together: the waveform samples Pulser holds


class SequenceShape:
    """The parts of one serialized sequence that size its cost, parsed once.

    `footprint(values)` then evaluates them for one job's variables (microseconds).
    """

    def __init__(self, serialized: str, field: str) -> None:
        self.field = field
        try:
            data = json.loads(serialized)
        except (ValueError, RecursionError) as exc:
            raise InvalidRequestError.single(field, f"not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidRequestError.single(field, "not a Pulser sequence (a JSON object)")
        self._data = data
        self._checked: set[tuple[Limits, str]] = set()
        register = data.get("register", [])
        self.atoms = len(register) if isinstance(register, list | dict) else 0
        self.defaults = _defaults(data.get("variables"))

    def check_structure(self, limits: Limits, device: str) -> None:
        """422 when the sequence's shape is over `limits` (`sequence_structure`); done before
        anything walks its operations, and once per limits."""
        if (limits, device) in self._checked:
            return
        sequence_structure.check(self._data, limits, device, self.field)
        self._checked.add((limits, device))

    @cached_property
    def _durations(self) -> list[tuple[str, Any]]:
        """(channel, duration expression) of each operation, collected on first use."""
        durations: list[tuple[str, Any]] = []
        operations = self._data.get("operations", [])
        for op in operations if isinstance(operations, list) else []:
            if isinstance(op, dict):
                _collect(op, durations)
        return durations

    @cached_property
    def variables_used(self) -> frozenset[str]:
        return frozenset(name for _, expr in self._durations for name in _variables_in(expr))

    def footprint(self, values: Mapping[str, Any], fixed_only: bool = False) -> Footprint:
        """The durations with these variable values; `Unbounded` when one cannot be known.

        `fixed_only`: only the operations that use no variable (those Pulser builds when
        it deserializes a parametrized sequence).
        """
        env = {**self.defaults, **values}
        per_channel: dict[str, float] = {}
        longest_op = 0.0
        for channel, expr in self._durations:
            if fixed_only and _variables_in(expr):
                continue
            duration = _duration(expr, env)
            longest_op = max(longest_op, duration)
            per_channel[channel] = per_channel.get(channel, 0.0) + duration
        return Footprint(
            max(per_channel.values(), default=0.0), longest_op, sum(per_channel.values())
        )

    def key(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """Jobs with the same key have the same footprint (evaluate it once)."""
        return tuple(_freeze(values.get(name)) for name in sorted(self.variables_used))


def _collect(op: dict[str, Any], durations: list[tuple[str, Any]]) -> None:
    channel = str(op.get("channel", op.get("dmm_name", "")))
    kind = op.get("op")
    if kind == "delay":
        durations.append((channel, op.get("time", 0)))
    elif kind == "add_eom_pulse":
        durations.append((channel, op.get("duration", 0)))
    elif kind in ("pulse", "pulse_arbitrary_phase"):
        # Amplitude and detuning (and phase) last the same: the longest of them counts.
        waves = [op.get(k) for k in ("amplitude", "detuning", "phase") if k in op]
        durations.append((channel, ("max", [_waveform_duration(w) for w in waves])))
    elif kind == "add_dmm_detuning":
        durations.append((channel, _waveform_duration(op.get("waveform"))))


def _defaults(variables: Any) -> dict[str, Any]:
    if not isinstance(variables, dict):
        return {}
    found = {}
    for name, spec in variables.items():
        value = spec.get("value") if isinstance(spec, dict) else None
        if isinstance(value, list):
            found[name] = value[0] if len(value) == 1 else value
    return found


def _waveform_duration(wave: Any) -> Any:
    """An expression (in our small tree form) of a waveform's duration."""
    if not isinstance(wave, dict) or wave.get("kind") not in _WAVEFORM_KINDS:
        return 0
    kind = wave["kind"]
    if kind == "composite":
        parts = wave.get("waveforms", [])
        return ("sum", [_waveform_duration(w) for w in parts if isinstance(w, dict)])
    if kind == "custom":
        samples = wave.get("samples", [])
        return len(samples) if isinstance(samples, list) else 0
    if kind in ("blackman_max", "kaiser_max"):
        # Pulser picks the duration from the area and the peak (area / (mean · peak)).
        return (kind, wave.get("area", 0), wave.get("max_val", 1), wave.get("beta", 14.0))
    return wave.get("duration", 0)


def _duration(expr: Any, env: Mapping[str, Any]) -> float:
    if isinstance(expr, tuple):
        head = expr[0]
        if head == "max":
            return max((_duration(e, env) for e in expr[1]), default=0.0)
        if head == "sum":
            return sum(_duration(e, env) for e in expr[1])
        return _from_max_value(head, *(_scalar(e, env) for e in expr[1:]))
    return _nonnegative(_scalar(expr, env))


def _from_max_value(kind: str, area: float, max_val: float, beta: float) -> float:
    if kind == "blackman_max":
        mean = 0.42
    else:
        if not 0 <= beta <= 1000:
            raise Unbounded(f"kaiser beta {beta} out of range")
        mean = _kaiser_mean(beta)
    if max_val == 0 or mean <= 0:
        raise Unbounded("a waveform with a zero peak value")
    return _nonnegative(abs(area) * 1000.0 / (abs(max_val) * mean)) + 16


def _kaiser_mean(beta: float) -> float:
    # The mean of a unit-peak Kaiser window, as Pulser estimates it (100 points).
    import numpy as np

    return float(np.sum(np.kaiser(100, beta)) / 100)


def _nonnegative(value: float) -> float:
    if not math.isfinite(value):
        raise Unbounded(f"duration {value}")
    return max(0.0, value)


def _scalar(expr: Any, env: Mapping[str, Any]) -> float:
    value = _evaluate(expr, env, 0)
    if isinstance(value, list):
        if len(value) != 1:
            raise Unbounded("an array where a number is expected")
        value = value[0]
    return value


def _evaluate(expr: Any, env: Mapping[str, Any], depth: int) -> Value:
    if depth > MAX_EXPRESSION_DEPTH:
        raise Unbounded("expression nested too deeply")
    if isinstance(expr, bool):
        raise Unbounded("a boolean where a number is expected")
    if isinstance(expr, int | float):
        return _finite(expr)
    if isinstance(expr, list):
        return [_finite(_scalar(item, env)) for item in expr]
    if not isinstance(expr, dict):
        raise Unbounded(f"not a number: {expr!r:.40}")
    if "variable" in expr:
        value = env.get(expr["variable"])
        if value is None:
            raise Unbounded(f"unknown variable {expr['variable']!r:.40}")
        return [_finite(v) for v in value] if isinstance(value, list) else _finite(value)
    op = expr.get("expression")
    try:
        if op in _UNARY:
            return _map1(_UNARY[op], _evaluate(expr.get("lhs"), env, depth + 1))
        lhs = _evaluate(expr.get("lhs"), env, depth + 1)
        rhs = _evaluate(expr.get("rhs"), env, depth + 1)
        if op == "index":
            items = lhs if isinstance(lhs, list) else [lhs]
            indices = rhs if isinstance(rhs, list) else [rhs]
            return [items[int(i)] for i in indices]
        if op in _BINARY:
            return _map2(_BINARY[op], lhs, rhs)
    except (ArithmeticError, ValueError, IndexError, TypeError) as exc:
        raise Unbounded(f"{op}: {exc}") from exc
    raise Unbounded(f"unknown expression {op!r:.40}")


def _map1(fn: Callable[[float], float], a: Value) -> Value:
    return [_finite(fn(x)) for x in a] if isinstance(a, list) else _finite(fn(a))


def _map2(fn: Callable[[float, float], float], a: Value, b: Value) -> Value:
    if isinstance(a, list) or isinstance(b, list):
        xs = a if isinstance(a, list) else [a] * len(b)  # type: ignore[arg-type]
        ys = b if isinstance(b, list) else [b] * len(xs)
        if len(xs) != len(ys):
            raise Unbounded("arrays of different lengths")
        return [_finite(fn(x, y)) for x, y in zip(xs, ys, strict=True)]
    return _finite(fn(a, b))


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unbounded(f"not a number: {value!r:.40}")
    try:
        number = float(value)
    except OverflowError as exc:
        raise Unbounded("a number too large") from exc
    if not math.isfinite(number):
        raise Unbounded(f"{number}")
    return number


def _variables_in(expr: Any) -> set[str]:
    if isinstance(expr, tuple):
        return set().union(*(_variables_in(e) for e in expr[1:]))
    if isinstance(expr, list):
        return set().union(*(_variables_in(e) for e in expr)) if expr else set()
    if isinstance(expr, dict):
        if "variable" in expr:
            return {str(expr["variable"])}
        return _variables_in(expr.get("lhs")) | _variables_in(expr.get("rhs"))
    return set()


def _freeze(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
