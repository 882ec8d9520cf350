"""The shape of a sequence, counted in its JSON before Pulser sees it, and Pulser's schema
validation one operation at a time."""

from __future__ import annotations

import json
import time

import pytest

from api.envelope import MAX_DESCRIPTION_CHARS, failure
from core.catalog import Limits
from core.errors import InvalidRequestError
from scheduler import sequence_structure
from scheduler.sequence_bounds import SequenceShape
from scheduler.sequences import load_sequence
from tests.sequences import parametrized_sweep, plain

LIMITS = Limits(max_atoms=50, max_duration_ns=100_000, max_runs=1000)


def with_operations(serialized: str, extra: list[dict[str, object]]) -> str:
    data = json.loads(serialized)
    data["operations"].extend(extra)
    return json.dumps(data)


def pulses(n: int, duration: int = 1) -> list[dict[str, object]]:
    wave = {"kind": "constant", "duration": duration, "value": 1.0}
    pulse = {"op": "pulse", "channel": "ryd", "protocol": "min-delay", "amplitude": wave,
             "detuning": wave, "phase": 0.0, "post_phase_shift": 0.0}  # fmt: skip
    return [pulse] * n


def bad_phase_shifts(n: int) -> list[dict[str, object]]:
    return [
        {"op": "phase_shift", "phi": 1.0, "targets": [{"bad": i}], "basis": "ground-rydberg"}
        for i in range(n)
    ]


def refusal(serialized: str, limits: Limits = LIMITS) -> list[str]:
    shape = SequenceShape(serialized, "jobs[0].sequence")
    with pytest.raises(InvalidRequestError) as raised:
        shape.check_structure(limits, "EMU_MPS")
    return raised.value.messages


def test_a_plain_and_a_parametrized_sequence_are_counted_and_within_the_limits() -> None:
    plain_shape = sequence_structure.measure(json.loads(plain(3)))
    sweep = sequence_structure.measure(json.loads(parametrized_sweep(3)))
    assert (plain_shape.operations, plain_shape.channels, plain_shape.variables) == (1, 1, 0)
    assert (sweep.variables, sweep.variable_values, sweep.traps) == (2, 2, 16)
    assert sweep.expression_nodes >= 4 and sweep.expression_depth >= 1
    for serialized in (plain(3), parametrized_sweep(3)):
        SequenceShape(serialized, "s").check_structure(LIMITS, "EMU_MPS")


def test_100000_one_ns_pulses_are_refused_naming_the_operation_limit_in_milliseconds() -> None:
    serialized = with_operations(plain(3), pulses(100_000))
    started = time.process_time()
    messages = refusal(serialized)
    assert time.process_time() - started < 1.0  # parsing the JSON, counting, not Pulser
    assert messages == [
        "jobs[0].sequence.operations: 100001 operations, the limit for EMU_MPS is 1000"
    ]


def test_each_bound_is_named() -> None:
    data = json.loads(parametrized_sweep(3))
    data["channels"].update({f"c{i}": "rydberg_global" for i in range(20)})
    data["layout"]["coordinates"] = [[float(i), 0.0] for i in range(2000)]
    data["variables"].update({f"v{i}": {"type": "float", "value": [0.0] * 200} for i in range(100)})
    nested: dict[str, object] = {"variable": "omega"}
    for _ in range(40):
        nested = {"expression": "neg", "lhs": nested}
    data["operations"][0]["amplitude"]["stop"] = nested
    messages = refusal(json.dumps(data))
    assert messages == [
        "jobs[0].sequence.channels: 21 channels, the limit for EMU_MPS is 16",
        "jobs[0].sequence.layout: 2000 layout traps, the limit for EMU_MPS is 1000",
        "jobs[0].sequence.variables: 102 variables, the limit for EMU_MPS is 100",
        "jobs[0].sequence.variables: 20002 variable values, the limit for EMU_MPS is 10000",
    ]
    # Then, the sizes within the limits, the expressions (which take a walk)
    small = json.loads(parametrized_sweep(3))
    small["operations"][0]["amplitude"]["stop"] = nested
    assert refusal(json.dumps(small)) == [
        "jobs[0].sequence.operations: 41 levels of nested expressions, the limit for EMU_MPS is 32"
    ]
    many_nodes = LIMITS.__class__(**{**LIMITS.__dict__, "max_expression_nodes": 3})
    assert any("expression nodes" in m for m in refusal(parametrized_sweep(3), many_nodes))


def test_the_samples_of_every_channel_count_together() -> None:
    # 2 channels of 80,000 ns each: under the duration limit, over 100,000 samples
    data = json.loads(with_operations(plain(3), pulses(2, 40_000)))
    data["channels"]["other"] = "rydberg_global"
    data["operations"].extend({**op, "channel": "other"} for op in pulses(2, 40_000))
    shape = SequenceShape(json.dumps(data), "s")
    footprint = shape.footprint({})
    assert footprint.total_ns == 300 + 160_000 and footprint.longest_channel_ns < 100_000
    limits = LIMITS.merged({"max_samples": 100_000})
    with pytest.raises(InvalidRequestError, match="the limit for EMU_MPS is 100000"):
        sequence_structure.check_samples(footprint.total_ns, limits, "EMU_MPS", "s")


@pytest.mark.parametrize("n", [1_000, 20_000])
def test_invalid_operations_are_refused_at_the_first_one_in_linear_time(n: int) -> None:
    # Given a plain sequence and n phase shifts whose targets the schema rejects (Pulser's
    # own validation took 20-30 s for 1,000 of them, and grew faster than n)
    serialized = with_operations(plain(3), bad_phase_shifts(n))
    started = time.process_time()
    with pytest.raises(InvalidRequestError) as raised:
        load_sequence(serialized, "jobs[0].sequence")
    assert time.process_time() - started < 1.0
    # Then the message names the first bad operation and quotes it alone
    (message,) = raised.value.messages
    assert message.startswith(
        "jobs[0].sequence: not a valid Pulser sequence: operations[1].targets[0]: "
    )
    assert len(message) < 300


def test_valid_sequences_still_load_and_invalid_documents_are_still_refused() -> None:
    assert load_sequence(plain(3), "s").get_duration() == 300
    assert load_sequence(parametrized_sweep(3), "s").is_parametrized()
    data = json.loads(plain(3))
    del data["measurement"]  # not an operation: the rest of the document is validated too
    with pytest.raises(InvalidRequestError, match="not a valid Pulser sequence"):
        load_sequence(json.dumps(data), "s")


def test_an_error_answer_quotes_at_most_an_excerpt() -> None:
    response = failure(422, ["jobs[0].sequence: " + "x" * 100_000])
    (item,) = json.loads(response.body)["data"]["description"]
    assert len(item) == MAX_DESCRIPTION_CHARS and item.endswith("…")
