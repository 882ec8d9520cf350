"""Process metrics on every process: the API, the scheduler and a prefork worker, each a
real process scraped over HTTP. A worker's are its parent and its pool children summed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from atomfleet.services import free_port
from core.process_metrics import ProcessTreeCollector, descendants, read_stat
from tests.fleet import TestFleet, wait_for
from tests.metrics_support import Scrape

pytestmark = pytest.mark.e2e

PROCESS_GAUGES = (
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
)


def scraped(url: str) -> Scrape | None:
    try:
        response = httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None
    return Scrape(response.text) if response.status_code == 200 else None


def rss_bytes(pid: int) -> int:
    stat = read_stat(pid)
    assert stat is not None, pid
    return stat.rss_pages * os.sysconf("SC_PAGE_SIZE")


def assert_sane(found: Scrape, started: float, process: str) -> None:
    names = found.names()
    for name in (*PROCESS_GAUGES, "process_cpu_seconds_total", "python_info"):
        assert name in names, f"{process} has no {name}"
    assert 10 * 2**20 < found.value("process_resident_memory_bytes") < 8 * 2**30, process
    assert found.value("process_virtual_memory_bytes") >= found.value(
        "process_resident_memory_bytes"
    )
    assert 0 < found.value("process_cpu_seconds_total") < time.time() - started + 60, process
    assert 3 <= found.value("process_open_fds") <= found.value("process_max_fds"), process
    assert started - 5 <= found.value("process_start_time_seconds") <= time.time() + 1, process
    assert found.value("python_info", implementation="CPython") == 1, process


def test_the_api_scheduler_and_worker_serve_their_process_metrics(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    # Given a real API, scheduler and prefork NOOP worker (2 children)
    fleet = TestFleet(pg_url, redis_url, tmp_path / "fleet")
    scheduler_port, worker_port = free_port(), free_port()
    started = time.time()
    fleet.start("api")
    fleet.start_process("scheduler", "scheduler", "--metrics-port", str(scheduler_port))
    fleet.start_process(
        "worker", "worker", "--device", "NOOP", "--concurrency", "2",
        "--metrics-port", str(worker_port),
    )  # fmt: skip
    try:
        fleet.wait_ready()
        urls = {
            "api": f"{fleet.base}/metrics",
            "scheduler": f"http://127.0.0.1:{scheduler_port}/metrics",
            "worker": f"http://127.0.0.1:{worker_port}/metrics",
        }
        found = {
            p: wait_for(lambda u=u: scraped(u), 90, f"the {p}'s metrics")  # type: ignore[misc]
            for p, u in urls.items()
        }
        # Then each process serves sane process metrics and exactly the documented list
        for process, scrape in found.items():
            assert_sane(scrape, started, process)
            scrape.assert_exports_exactly_the_list(process)  # type: ignore[arg-type]
        # And the worker's memory is its parent's and its pool children's together: more
        # than the parent alone, within what the tree holds at this moment
        wait_for(
            lambda: len(descendants(fleet.process("worker").pid)) >= 2, 60, "the pool children"
        )
        parent = fleet.process("worker").pid
        tree = [parent, *(p.pid for p in descendants(parent))]
        worker = Scrape(httpx.get(urls["worker"], timeout=5).text)
        rss = worker.value("process_resident_memory_bytes")
        assert rss > rss_bytes(parent) * 1.5, (rss, rss_bytes(parent))
        assert rss <= 1.5 * sum(rss_bytes(pid) for pid in tree)
        assert worker.value("process_open_fds") > len(os.listdir(f"/proc/{parent}/fd"))
    except BaseException:
        print(fleet.logs())
        raise
    finally:
        fleet.stop()


def test_the_tree_collector_counts_children_that_exited(tmp_path: Path) -> None:
    """CPU spent by a child that has exited (and was reaped) stays in the counter."""
    collector = ProcessTreeCollector()

    def cpu() -> float:
        [family] = [f for f in collector.collect() if f.name == "process_cpu_seconds"]
        return float(family.samples[0].value)

    before = cpu()
    pid = os.fork()
    if pid == 0:  # a child that burns 0.3 s of CPU, then exits
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass
        os._exit(0)
    os.waitpid(pid, 0)
    assert cpu() - before >= 0.25
