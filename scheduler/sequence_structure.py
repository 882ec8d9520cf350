"""The shape of a sequence's abstract-repr JSON, counted before Pulser sees any of it.

Pulser's JSON-schema validation and deserialization cost grows with the number of
operations (super-linearly for an invalid document: 1,000 bad operations took 20-30 s
and 600-900 MB), with the layout's traps and with the expressions. One linear walk over
the parsed JSON counts each of these; `check` compares them with the device's limits
(`core.catalog.Limits`) and refuses the sequence with a 422 naming the bound, in
milliseconds, before anything else is done with it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from core.catalog import Limits
from core.errors import InvalidRequestError


@dataclass(frozen=True)
class Structure:
    operations: int
    channels: int
    traps: int  # of the layout the register was taken from (0: none)
    variables: int
    variable_values: int  # all variables' sizes together
    expression_depth: int = 0  # the deepest nesting of expressions
    expression_nodes: int = 0  # expressions and variable references, everywhere


def counts(data: dict[str, Any]) -> Structure:
    """The sizes read at the top of a parsed sequence (no walk; expressions not counted)."""
    operations = data.get("operations")
    channels = data.get("channels")
    layout = data.get("layout")
    coordinates = layout.get("coordinates") if isinstance(layout, dict) else None
    variables = data.get("variables")
    values = 0
    for spec in variables.values() if isinstance(variables, dict) else ():
        value = spec.get("value") if isinstance(spec, dict) else None
        values += len(value) if isinstance(value, list) else 1
    return Structure(
        operations=len(operations) if isinstance(operations, list) else 0,
        channels=len(channels) if isinstance(channels, dict) else 0,
        traps=len(coordinates) if isinstance(coordinates, list) else 0,
        variables=len(variables) if isinstance(variables, dict) else 0,
        variable_values=values,
    )


def measure(data: dict[str, Any]) -> Structure:
    """Every count, expressions included (one walk, linear in the document's size)."""
    depth, nodes = _expressions(data)
    return replace(counts(data), expression_depth=depth, expression_nodes=nodes)


def _expressions(data: Any) -> tuple[int, int]:
    """(deepest expression nesting, number of expression and variable nodes), iteratively.
    A list of numbers (samples, coordinates) holds no expression: it is not walked."""
    deepest = nodes = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if "expression" in item or "variable" in item:
                depth += 1
                nodes += 1
                deepest = max(deepest, depth)
            stack.extend((value, depth) for value in item.values())
        elif isinstance(item, list) and item and not isinstance(item[0], int | float):
            stack.extend((value, depth) for value in item)
    return deepest, nodes


# (what is counted, the limit's field, the JSON field named, the unit in the message)
_COUNTS = (
    ("operations", "max_operations", "operations", "operations"),
    ("channels", "max_channels", "channels", "channels"),
    ("traps", "max_traps", "layout", "layout traps"),
    ("variables", "max_variables", "variables", "variables"),
    ("variable_values", "max_variable_values", "variables", "variable values"),
)
_EXPRESSIONS = (  # the operations hold the expressions
    ("expression_depth", "max_expression_depth", "operations", "levels of nested expressions"),
    ("expression_nodes", "max_expression_nodes", "operations", "expression nodes"),
)


def check(data: dict[str, Any], limits: Limits, device: str, field: str) -> None:
    """422 naming every bound the parsed sequence `data` is over (`sequence.operations:
    100001 operations, the limit for EMU_MPS is 1000`): the sizes first, then (only when
    they are within the limits) the expressions, which take a walk."""
    _refuse(counts(data), _COUNTS, limits, device, field)
    _refuse(measure(data), _EXPRESSIONS, limits, device, field)


def _refuse(
    structure: Structure,
    bounds: tuple[tuple[str, str, str, str], ...],
    limits: Limits,
    device: str,
    field: str,
) -> None:
    problems = []
    for name, limit_name, where, unit in bounds:
        count = getattr(structure, name)
        limit = getattr(limits, limit_name)
        if count > limit:
            problems.append(
                (f"{field}.{where}", f"{count} {unit}, the limit for {device} is {limit}")
            )
    if problems:
        raise InvalidRequestError(problems)


def check_samples(total_ns: float, limits: Limits, device: str, field: str) -> None:
    """The waveform samples Pulser would hold: one per nanosecond of every operation on every
    channel (a custom waveform's samples one each)."""
    if total_ns > limits.max_samples:
        raise InvalidRequestError.single(
            field,
            f"at least {total_ns:.0f} waveform samples (1 per ns on every channel), the limit "
            f"for {device} is {limits.max_samples}",
        )
