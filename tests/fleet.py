"""A real fleet for end-to-end tests: API, scheduler and Celery workers as child processes."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from atomfleet.launcher import Fleet
from atomfleet.services import free_port

TERMINAL = {"DONE", "ERROR", "CANCELED"}


class TestFleet:
    """Processes sharing one database, one Redis namespace and fast failure detection."""

    __test__ = False

    def __init__(self, database_url: str, redis_url: str, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "ATOMFLEET_DATABASE_URL": database_url,
            "ATOMFLEET_REDIS_URL": redis_url,
            "ATOMFLEET_NAMESPACE": f"e2e-{uuid.uuid4().hex[:8]}",
            "ATOMFLEET_DATA_DIR": str(workdir),
            "ATOMFLEET_SECRET_KEY": "e2e-secret",
            "ATOMFLEET_API_PORT": str(self.port),
            "ATOMFLEET_LEASE_TTL_S": "3",
            "ATOMFLEET_RECONCILE_INTERVAL_S": "1",
            "ATOMFLEET_LOST_GRACE_S": "2",
            "ATOMFLEET_PROGRESS_INTERVAL_S": "0.2",
            # Several fleets and workers share this machine: metrics only where a test
            # asks for them (`start_process(..., "--metrics-port", port)`).
            "ATOMFLEET_SCHEDULER_METRICS_PORT": "0",
            "ATOMFLEET_WORKER_METRICS_PORT": "0",
            "ATOMFLEET_METRICS_HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
        }
        workdir.mkdir(parents=True, exist_ok=True)
        self.processes = Fleet(self.env, workdir)
        self.http = httpx.Client(base_url=self.base, timeout=30)

    def start(self, *names: str) -> None:
        for name in names:
            if name.startswith("worker-"):
                self.processes.start(name, "worker", "--device", name.removeprefix("worker-"))
            else:
                self.processes.start(name)

    def start_process(self, name: str, *args: str) -> None:
        """Start `atomfleet ARGS...` as `name` (e.g. a worker with its metrics port)."""
        self.processes.start(name, *args)

    def process(self, name: str) -> Any:
        return self.processes.current(name)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a process and all its children (a Celery worker's pool too)."""
        proc = self.process(name)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def wait_ready(self, timeout_s: float = 60) -> None:
        def healthy() -> bool:
            try:
                return self.http.get("/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout_s, "the API to answer")

    def stop(self) -> None:
        self.http.close()
        self.processes.stop()

    @contextmanager
    def running(self, *names: str) -> Iterator[TestFleet]:
        """Start `names`, wait for the API, and stop everything on leaving; a failure
        inside prints the processes' logs first."""
        self.start(*names)
        try:
            self.wait_ready()
            yield self
        except BaseException:
            print(self.logs())
            raise
        finally:
            self.stop()

    def logs(self) -> str:
        out = []
        for name, _ in self.processes.children:
            path = self.processes.log_dir / f"{name}.log"
            if path.exists():
                out.append(f"--- {name} ---\n" + path.read_text()[-3000:])
        return "\n".join(out)


def wait_for(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)
