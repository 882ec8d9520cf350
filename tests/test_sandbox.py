"""Intake's process pool: Pulser's work within a CPU-time and memory budget per call."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import InvalidRequestError
from scheduler.sandbox import BudgetExceededError, Sandbox
from tests import sandbox_tasks
from tests.sequences import plain
from tests.test_sequence_structure import bad_phase_shifts, with_operations


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    pool = Sandbox(processes=1, cpu_budget_s=1.0, memory_budget_mb=512)
    yield pool
    pool.close()


def pids(pool: Sandbox) -> set[int]:
    return {w.process.pid for w in list(pool._idle.queue)}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_sequence_comes_back_deserialized_and_the_process_is_reused(sandbox: Sandbox) -> None:
    seq = sandbox.load_sequence(plain(3), "jobs[0].sequence")
    before = pids(sandbox)
    assert seq.get_duration() == 300
    assert sandbox.call(sandbox_tasks.echo, 7, field="x") == 7
    assert pids(sandbox) == before


def test_an_invalid_sequence_is_a_422_from_the_process(sandbox: Sandbox) -> None:
    serialized = with_operations(plain(3), bad_phase_shifts(1000))
    with pytest.raises(InvalidRequestError) as raised:
        sandbox.load_sequence(serialized, "jobs[0].sequence")
    assert not isinstance(raised.value, BudgetExceededError)
    assert "operations[1].targets[0]" in raised.value.messages[0]


@pytest.mark.parametrize(
    "task", [sandbox_tasks.spin, sandbox_tasks.spin_in_c], ids=["python", "one C call"]
)
def test_a_call_over_the_cpu_budget_is_stopped_and_its_process_replaced(
    sandbox: Sandbox, task: object
) -> None:
    sandbox.call(sandbox_tasks.echo, 0, field="x")  # started
    (before,) = pids(sandbox)
    with pytest.raises(BudgetExceededError) as raised:
        sandbox.call(task, field="jobs[0].sequence")  # type: ignore[arg-type]
    assert raised.value.messages == [
        "jobs[0].sequence: validating and building it took more than intake's CPU-time budget "
        "of 1 s"
    ]
    assert pids(sandbox) != {before}
    assert sandbox.call(sandbox_tasks.echo, 1, field="x") == 1  # the new one serves


def test_a_call_over_the_memory_budget_fails_and_the_memory_goes_back(sandbox: Sandbox) -> None:
    sandbox.call(sandbox_tasks.echo, 0, field="x")
    (before,) = pids(sandbox)
    with pytest.raises(BudgetExceededError, match="memory budget of 512 MB"):
        sandbox.call(sandbox_tasks.hog, field="jobs[0].sequence")
    assert not Path(f"/proc/{before}").exists()  # ended: its memory is the system's again
    assert sandbox.call(sandbox_tasks.echo, 2, field="x") == 2
    (after,) = pids(sandbox)
    assert rss_mb(after) < 256
