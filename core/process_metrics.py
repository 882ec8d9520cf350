"""Process metrics (CPU, memory, file descriptors) in every process's registry.

The API and the scheduler are one process each: prometheus_client's own `ProcessCollector`
and `PlatformCollector` serve them. A Celery prefork worker is a parent and its pool
children, and the children do the work: `ProcessTreeCollector` serves the same
`process_*` names for the whole tree, summed from each live process's `/proc` entry:

- `process_cpu_seconds_total`: the parent's own CPU, plus what its exited (reaped)
  children used (`cutime`/`cstime` of `/proc/<parent>/stat`), plus each live
  descendant's own CPU: a pool child replaced after `max_tasks_per_child` does not make
  the counter go back.
- `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`:
  the sums over the live tree (shared pages counted once per process, as `ps` does).
- `process_max_fds`, `process_start_time_seconds`: the parent's.

Without `/proc` (not Linux) nothing is served, as prometheus_client's collector does.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

PROC = Path("/proc")


def register_process_metrics(registry: CollectorRegistry, tree: bool = False) -> None:
    """The process and platform collectors; `tree`: the whole process tree (a prefork
    worker's parent), else this process only."""
    if tree:
        registry.register(ProcessTreeCollector())
    else:
        ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    cpu_s: float  # utime + stime
    children_cpu_s: float  # cutime + cstime: of the children it has reaped
    start_ticks: int
    vsize: int
    rss_pages: int


def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def read_stat(pid: int, proc: Path = PROC) -> ProcStat | None:
    """`/proc/<pid>/stat`, or None when the process is gone."""
    try:
        raw = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    ticks = _ticks()
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        cpu_s=(int(fields[11]) + int(fields[12])) / ticks,
        children_cpu_s=(int(fields[13]) + int(fields[14])) / ticks,
        start_ticks=int(fields[19]),
        vsize=int(fields[20]),
        rss_pages=int(fields[21]),
    )


def descendants(root: int, proc: Path = PROC) -> list[ProcStat]:
    """Every live process under `root` (children, their children, ...), not `root` itself."""
    by_parent: dict[int, list[ProcStat]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = read_stat(int(entry.name), proc)
        if stat is not None:
            by_parent.setdefault(stat.ppid, []).append(stat)
    found: list[ProcStat] = []
    todo = [root]
    while todo:
        for child in by_parent.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


def open_fds(pid: int, proc: Path = PROC) -> int:
    try:
        return len(os.listdir(proc / str(pid) / "fd"))
    except OSError:  # gone, or not ours to read
        return 0


def max_fds(pid: int, proc: Path = PROC) -> float | None:
    try:
        for line in (proc / str(pid) / "limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return float(line.split()[3])
    except (OSError, IndexError, ValueError):
        return None
    return None


def boot_time(proc: Path = PROC) -> float:
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


class ProcessTreeCollector(Collector):
    """The `process_*` metrics of this process and every live descendant, summed."""

    def __init__(self, pid: int | None = None, proc: Path = PROC) -> None:
        self.pid = pid
        self.proc = proc
        self.page_size = os.sysconf("SC_PAGE_SIZE")

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        root = self.pid or os.getpid()
        parent = read_stat(root, self.proc)
        if parent is None:
            return
        tree = [parent, *descendants(root, self.proc)]
        cpu, rss, vsz, fds, start, limit = self._families()
        cpu.add_metric([], parent.children_cpu_s + sum(p.cpu_s for p in tree))
        rss.add_metric([], float(sum(p.rss_pages for p in tree) * self.page_size))
        vsz.add_metric([], float(sum(p.vsize for p in tree)))
        fds.add_metric([], float(sum(open_fds(p.pid, self.proc) for p in tree)))
        with contextlib.suppress(OSError):
            start.add_metric([], boot_time(self.proc) + parent.start_ticks / _ticks())
        most = max_fds(root, self.proc)
        if most is not None:
            limit.add_metric([], most)
        yield from (cpu, rss, vsz, fds, start, limit)

    @staticmethod
    def _families() -> tuple[
        CounterMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
    ]:
        return (
            CounterMetricFamily(
                "process_cpu_seconds_total",
                "User and system CPU of the worker and its pool children, exited ones included.",
            ),
            GaugeMetricFamily(
                "process_resident_memory_bytes",
                "Resident memory of the worker and its live pool children, summed.",
            ),
            GaugeMetricFamily(
                "process_virtual_memory_bytes",
                "Virtual memory of the worker and its live pool children, summed.",
            ),
            GaugeMetricFamily(
                "process_open_fds",
                "Open file descriptors of the worker and its live pool children, summed.",
            ),
            GaugeMetricFamily(
                "process_start_time_seconds", "Start of the worker's parent, in Unix time."
            ),
            GaugeMetricFamily("process_max_fds", "The parent's limit of open file descriptors."),
        )
