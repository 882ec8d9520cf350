"""`atomfleet_api_ready`: 1 while this API process could serve (its `/readyz` would say 200).

Read at scrape time with the same checks as `/readyz` (the database and Redis answer), so
an alert sees an API replica that is up but cannot serve, and, with the series absent, a
replica that is not scraped at all (alert AtomfleetApiDown).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


class ReadyCollector(Collector):
    def __init__(self, problems: Callable[[], list[str]]) -> None:
        self.problems = problems

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        try:
            found = self.problems()
        except Exception as exc:  # noqa: BLE001  # a failing check means not ready
            found = [str(exc)]
        if found:
            log.warning("metrics: the API is not ready: %s", "; ".join(found))
        family = self._family()
        family.add_metric([], 0 if found else 1)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "atomfleet_api_ready",
            "1 while this API process's database and Redis answer (its /readyz is 200).",
        )
