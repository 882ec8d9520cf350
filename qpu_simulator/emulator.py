"""emu-sv in its own spawned process: the server's event loop never computes, and never forks.

Why a process and not a thread: a running emulation must stop when its job is canceled,
and only a process can be stopped mid-run. Why `spawn`: torch's OpenMP runtime is not
fork-safe (notes/emulators.md §7), and a fresh interpreter owes nothing to the server's
state. The process is started once and reused (importing emu-sv costs ~2 s); a cancel
kills it and starts the next one at once, so that it is warm for the next job.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import warnings
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from qpu_simulator.errors import EmulationError

log = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class EmulationRequest:
    sequence: str  # abstract repr of a built sequence, bound to the served device
    nb_run: int


@dataclass(frozen=True)
class EmulationReply:
    counter: dict[str, int] | None = None
    error: str | None = None


class EmulatorWorker:
    """One emulator process, one emulation at a time (the QPU runs one job at a time)."""

    def __init__(self, torch_threads: int = 1) -> None:
        self._torch_threads = torch_threads
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None

    def start(self) -> None:
        """Spawn the process unless it is alive; it imports emu-sv while the server serves."""
        if self._process is not None and self._process.is_alive():
            return
        self.stop()
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(
            target=_serve, args=(child, self._torch_threads), name="qpu-emulator", daemon=True
        )
        process.start()
        child.close()
        self._process, self._conn = process, parent

    def stop(self) -> None:
        """Kill the process, whatever it is doing."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is not None:
            process.kill()
            process.join(_STOP_TIMEOUT_S)  # SIGKILL: the join returns within milliseconds
            if process.exitcode is not None:
                process.close()
        if conn is not None:
            conn.close()

    async def run(self, sequence: str, nb_run: int) -> dict[str, int]:
        """The counts of `nb_run` shots; raises EmulationError if the emulation fails.

        Cancelling the caller kills the emulation and starts a fresh process.
        """
        self.start()
        process, conn = self._process, self._conn
        assert process is not None and conn is not None
        # In a thread: a large sequence fills the pipe until the process, maybe still
        # importing, reads it.
        sending = asyncio.ensure_future(
            asyncio.to_thread(conn.send, EmulationRequest(sequence, nb_run))
        )
        try:
            await asyncio.shield(sending)
            await _readable(conn)
            reply = conn.recv()
        except asyncio.CancelledError:
            process.kill()  # ends a send in flight too: the pipe is closed only after it
            await asyncio.wait([sending])
            self.stop()
            self.start()
            raise
        except (EOFError, OSError) as exc:
            self.stop()
            raise EmulationError("the emulator process died") from exc
        if not isinstance(reply, EmulationReply) or reply.counter is None:
            error = reply.error if isinstance(reply, EmulationReply) else repr(reply)
            raise EmulationError(error or "the emulator returned nothing")
        return reply.counter


async def _readable(conn: Connection) -> None:
    """Wait, without a thread, until `conn` has data or its other end is gone."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def _wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(conn.fileno(), _wake)
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())


def _serve(conn: Connection, torch_threads: int) -> None:
    """The emulator process: import once, then emulate each request until the pipe closes."""
    # Ctrl-C reaches the whole process group; the server stops this process itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import emu_sv  # noqa: F401 - imported once, before the first job
    import torch

    torch.set_num_threads(torch_threads)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the server is gone
        try:
            reply = EmulationReply(counter=emulate(request.sequence, request.nb_run))
        except Exception as exc:  # noqa: BLE001 - any failure ends the job in ERROR
            reply = EmulationReply(error=f"{type(exc).__name__}: {exc}")
        conn.send(reply)


def emulate(sequence: str, nb_run: int) -> dict[str, int]:
    """Counts of `nb_run` shots of a built sequence, by emu-sv (bitstrings in register order)."""
    from emu_sv import SVBackend, SVConfig
    from pulser import Sequence
    from pulser.backend import BitStrings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = Sequence.from_abstract_repr(sequence)
        config = SVConfig(observables=[BitStrings(num_shots=nb_run)], log_level=logging.WARN)
        results = SVBackend(seq, config=config).run()
    return {str(bits): int(count) for bits, count in results.final_bitstrings.items()}
