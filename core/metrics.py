"""What every process's metrics share: one registry per process, the build info, the labels.

Conventions (STYLE rule 11): `atomfleet_<what>_<unit>`, counters end in `_total`, labels
are only `device_type`, `priority`, `status`, `route`, `method`, `code` (and `version` on
the build info): never an id. Each process builds its own registry rather than using
prometheus_client's global one, so that several apps in one test process stay apart.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable

import prometheus_client
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from core.enums import QueuePriority
from core.process_metrics import register_process_metrics

PREFIX = "atomfleet_"
PRIORITY_OF_RANK = {p.rank: p.value for p in QueuePriority}
# Buckets of a job's durations: from a NOOP job's milliseconds to a day in the queue or
# six hours on an emulator.
JOB_SECONDS = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
    3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600,
)  # fmt: skip


def version() -> str:
    try:
        return importlib.metadata.version("atomfleet")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "0.0.0+unknown"


class BuildInfo(Collector):
    """`atomfleet_build_info{version} 1`: which versions run (a rollout shows two)."""

    def __init__(self) -> None:
        self.version = version()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            f"{PREFIX}build_info", "Always 1; its label is the running version.", labels=["version"]
        )
        family.add_metric([self.version], 1)
        yield family


def new_registry(process_tree: bool = False) -> CollectorRegistry:
    """A process's registry, with its build info and its process metrics (CPU, memory, file
    descriptors: `core.process_metrics`; `process_tree`: summed over this process and its
    descendants, for a prefork worker's parent).

    The `_created` series of counters and histograms are turned off: they would be
    extra series whose names are not in the list of metrics, and nobody queries them.
    """
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=True)
    registry.register(BuildInfo())
    register_process_metrics(registry, tree=process_tree)
    return registry


def priority_label(rank: int) -> str:
    """The `priority` label of a priority rank: HIGH, MEDIUM or LOW."""
    return PRIORITY_OF_RANK[rank]
