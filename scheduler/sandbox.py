"""Pulser's validation and deserialization with a CPU-time and memory budget per request.

A small pool of processes, each a fresh interpreter (not a fork: a forked copy of a
threaded process may hang, notes/emulators.md), imports Pulser once (light, as the API
does) and serves one call at a time. Each call is stopped at `intake_cpu_budget_s` of
CPU time (a profiling timer; `RLIMIT_CPU` ends the process if C code holds on past it),
and the process's address space is capped by `RLIMIT_AS` at `intake_memory_budget_mb`
(past it allocations fail with `MemoryError`). Either way the caller gets
`BudgetExceededError` (a 422 naming the budget) and the process is replaced: its memory
goes back to the system with it; a process that grew past half its memory budget is
replaced too. The result (a Pulser `Sequence`) comes back pickled, which costs the API
about 2% of deserializing it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import queue
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from core.errors import InvalidRequestError, ServiceUnavailableError

log = logging.getLogger(__name__)
_READY = "ready"


class BudgetExceededError(InvalidRequestError):
    """A request's Pulser work went over the CPU-time or memory budget of intake."""


class _Worker:
    """One pool process: `python -m scheduler.sandbox`, a socket for a pipe.

    A fresh interpreter (fork and exec): nothing of the API's threads, locks or main
    module comes with it, as multiprocessing's spawn would re-run the main script.
    """

    def __init__(self, cpu_budget_s: float, memory_budget_mb: int) -> None:
        ours, theirs = socket.socketpair()
        root = str(Path(__file__).resolve().parent.parent)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
        }
        argv = [str(theirs.fileno()), str(cpu_budget_s), str(memory_budget_mb)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "scheduler.sandbox", *argv],
            pass_fds=[theirs.fileno()],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self.ready = False

    @property
    def exitcode(self) -> int | None:
        try:
            return self.process.wait(5)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)
        self.conn.close()


class Sandbox:
    """`processes` spawned processes running Pulser's work with a budget per call."""

    def __init__(self, processes: int, cpu_budget_s: float, memory_budget_mb: int) -> None:
        self.cpu_budget_s = cpu_budget_s
        self.memory_budget_mb = memory_budget_mb
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._closed = False
        for _ in range(processes):
            self._idle.put(self._spawn())

    def _spawn(self) -> _Worker:
        return _Worker(self.cpu_budget_s, self.memory_budget_mb)

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().stop()
            except queue.Empty:
                return

    def load_sequence(self, serialized: str, field: str) -> Any:
        """`sequences.load_sequence` in a budgeted process. A sequence that cannot be pickled
        (a parametrized one holds Pulser's decorated functions) is validated there and
        deserialized here, without validating it again."""
        from scheduler import sequences

        seq = self.call(_load_sequence, serialized, field, field=field)
        return seq if seq is not None else sequences.load_trusted(serialized, field)

    def call(self, fn: Callable[..., Any], *args: Any, field: str) -> Any:
        """`fn(*args)` in one of the processes; `BudgetExceededError` naming `field` when it
        goes over a budget. An `InvalidRequestError` it raises is raised here."""
        try:
            worker = self._idle.get(timeout=self.cpu_budget_s * 4 + 10)
        except queue.Empty:
            raise ServiceUnavailableError("every intake process is busy; try again") from None
        try:
            status, payload, retire = self._exchange(worker, fn, args, field)
        except BaseException:
            self._replace(worker)
            raise
        if retire:
            self._replace(worker)
        else:
            self._idle.put(worker)
        return self._result(status, payload, field)

    def _exchange(
        self, worker: _Worker, fn: Callable[..., Any], args: tuple[Any, ...], field: str
    ) -> tuple[str, Any, bool]:
        if not worker.ready:  # its imports take about a second, once
            with contextlib.suppress(EOFError, OSError):
                worker.ready = worker.conn.poll(60) and worker.conn.recv() == _READY
            if not worker.ready:
                log.error("an intake process did not start (exit code %s)", worker.exitcode)
                raise ServiceUnavailableError("intake could not start Pulser; try again")
        try:
            worker.conn.send((fn, args))
            # The kernel stops it at the CPU budget; a wall-clock bound covers a process
            # that waits instead of computing (it never should).
            if not worker.conn.poll(self.cpu_budget_s * 4 + 5):
                raise self._over("CPU-time", f"{self.cpu_budget_s:g} s", field)
            reply: tuple[str, Any, bool] = worker.conn.recv()
            return reply
        except (EOFError, OSError):
            code = worker.exitcode
            log.warning("an intake process ended (exit code %s); replacing it", code)
            if code in (-signal.SIGXCPU, -signal.SIGKILL):
                raise self._over("CPU-time", f"{self.cpu_budget_s:g} s", field) from None
            raise self._over("memory", f"{self.memory_budget_mb} MB", field) from None

    def _replace(self, worker: _Worker) -> None:
        worker.stop()
        if not self._closed:
            self._idle.put(self._spawn())

    def _result(self, status: str, payload: Any, field: str) -> Any:
        if status == "cpu":
            raise self._over("CPU-time", f"{self.cpu_budget_s:g} s", field)
        if status == "memory":
            raise self._over("memory", f"{self.memory_budget_mb} MB", field)
        if status == "invalid":
            raise InvalidRequestError(payload)
        if status == "error":
            raise InvalidRequestError.single(field, payload)
        return payload

    def _over(self, what: str, budget: str, field: str) -> BudgetExceededError:
        reason = f"validating and building it took more than intake's {what} budget of {budget}"
        return BudgetExceededError([(field, reason)])


def _load_sequence(serialized: str, field: str) -> Any:
    from scheduler.sequences import load_sequence

    seq = load_sequence(serialized, field)
    try:
        pickle.dumps(seq)
    except (pickle.PicklingError, TypeError, AttributeError):
        return None  # valid; the caller deserializes it
    return seq


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _serve(conn: Connection, cpu_budget_s: float, memory_budget_mb: int) -> None:
    """A pool process: import Pulser light, then serve calls until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the API's Ctrl-C is the API's to handle
    from core.lightweight import keep_light

    keep_light()
    import pulser  # noqa: F401  # once, before the budget applies

    from scheduler import sequence_schema

    sequence_schema.install()
    limit = memory_budget_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGPROF, _over_cpu)
    conn.send(_READY)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        # The profiling timer stops the call at its budget, to the millisecond; RLIMIT_CPU
        # (whole seconds) ends the process if C code holds on past it.
        resource.setrlimit(
            resource.RLIMIT_CPU, (math.ceil(_cpu_seconds() + cpu_budget_s) + 1, hard)
        )
        signal.setitimer(signal.ITIMER_PROF, cpu_budget_s)
        try:
            fn, args = pickle.loads(message)
            reply: tuple[str, Any] = ("ok", fn(*args))
        except _OverCPU:
            reply = ("cpu", None)
        except MemoryError:
            reply = ("memory", None)
        except InvalidRequestError as exc:
            reply = ("invalid", exc.problems)
        except Exception as exc:  # noqa: BLE001  # a bug or Pulser's: say it, stay up
            reply = ("error", f"{type(exc).__name__}: {exc}"[:200])
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        retire = reply[0] in ("cpu", "memory") or _rss_mb() > memory_budget_mb / 2
        try:
            data = pickle.dumps((*reply, retire))
        except MemoryError:
            data, retire = pickle.dumps(("memory", None, True)), True
        except Exception as exc:  # noqa: BLE001  # an answer that cannot cross: say so
            data = pickle.dumps(("error", f"cannot return it: {exc}"[:200], retire))
        conn.send_bytes(data)
        if retire:
            return


class _OverCPU(BaseException):
    """Raised in a pool process by its profiling timer (not an Exception: nothing in Pulser
    catches it)."""


def _over_cpu(signum: int, frame: Any) -> None:
    raise _OverCPU


if __name__ == "__main__":
    fd, cpu, memory = sys.argv[1:4]
    _serve(Connection(int(fd)), float(cpu), int(memory))
