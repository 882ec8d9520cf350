"""End to end: a real Prometheus scrapes a running fleet (API, scheduler, a NOOP and an
EMU_SV worker) every second while batches run; every dashboard query, alert and KEDA
query evaluates on what the fleet really exports, and the key series hold the store's
values.

Prometheus is Debian's package (`make tools`); a missing one fails the test with how to
install it, it is never skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from atomfleet.services import free_port
from scheduler.db import make_sessionmaker
from tests import deploy_support as d
from tests.conftest import Account, make_account
from tests.fleet import TERMINAL, TestFleet, wait_for
from tests.metrics_support import Scrape
from tests.sequences import parametrized_sweep, plain

pytestmark = pytest.mark.e2e

NOOP_JOBS = 30
SV_JOBS = 2


class Running:
    """The fleet's processes and where each serves its metrics."""

    def __init__(self, fleet: TestFleet) -> None:
        self.fleet = fleet
        self.ports = {
            "scheduler": free_port(),
            "worker-NOOP": free_port(),
            "worker-EMU_SV": free_port(),
        }

    def start(self) -> None:
        self.fleet.start("api")
        self.fleet.start_process(
            "scheduler", "scheduler", "--metrics-port", str(self.ports["scheduler"])
        )
        for device, concurrency in (("NOOP", "2"), ("EMU_SV", "1")):
            name = f"worker-{device}"
            self.fleet.start_process(
                name, "worker", "--device", device, "--concurrency", concurrency,
                "--metrics-port", str(self.ports[name]),
            )  # fmt: skip

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def targets(self) -> list[d.ScrapeTarget]:
        return [
            d.ScrapeTarget("atomfleet-api", f"127.0.0.1:{self.fleet.port}"),
            d.ScrapeTarget("atomfleet-scheduler", f"127.0.0.1:{self.ports['scheduler']}"),
            d.ScrapeTarget("atomfleet-worker", f"127.0.0.1:{self.ports['worker-NOOP']}"),
            d.ScrapeTarget("atomfleet-worker", f"127.0.0.1:{self.ports['worker-EMU_SV']}"),
        ]


@pytest.fixture
def running(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[Running]:
    fleet = TestFleet(pg_url, redis_url, tmp_path / "fleet")
    fleet.env["ATOMFLEET_DEVICES"] = '["NOOP", "EMU_SV"]'
    processes = Running(fleet)
    processes.start()
    try:
        fleet.wait_ready()
        for name in ("scheduler", "worker-NOOP", "worker-EMU_SV"):
            wait_for(lambda n=name: _ok(f"{processes.url(n)}/healthz"), 90, f"{name} healthy")
        yield processes
    except BaseException:
        print(fleet.logs())
        raise
    finally:
        fleet.stop()


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _submit(fleet: TestFleet, user: Account, body: dict[str, Any]) -> dict[str, Any]:
    response = fleet.http.post(
        "/api/v1/batches", json={"project_id": user.project_id, **body}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def test_prometheus_reads_the_running_fleet_and_every_panel_and_alert_evaluates(
    running: Running, pg_engine: Engine, tmp_path: Path
) -> None:
    prometheus = d.tool("prometheus", d.DEBIAN_PROMETHEUS)
    fleet = running.fleet
    (tmp_path / "prometheus").mkdir()
    with d.prometheus_server(tmp_path / "prometheus", prometheus, running.targets()) as live:
        # Given Prometheus scraping every process of the fleet every second
        wait_for(
            lambda: live.assert_running() or live.scalar("count(up == 1)") == 4,
            30,
            "Prometheus to scrape the 4 processes",
        )
        # When a batch of NOOP jobs and one of EMU_SV jobs run
        user = make_account(make_sessionmaker(pg_engine))
        noop = _submit(
            fleet,
            user,
            {
                "device_type": "NOOP",
                "queue_priority": "HIGH",
                "sequence_builder": plain(3),
                "jobs": [{"runs": 5}] * NOOP_JOBS,
            },
        )
        sv = _submit(
            fleet,
            user,
            {
                "device_type": "EMU_SV",
                "sequence_builder": parametrized_sweep(3),
                "jobs": [{"runs": 5, "variables": {"omega": 5.0, "duration": 300}}] * SV_JOBS,
            },
        )

        def ended(batch: dict[str, Any]) -> bool:
            read = fleet.http.get(f"/api/v2/batches/{batch['id']}", headers=user.headers)
            return read.json()["data"]["status"] in TERMINAL

        wait_for(lambda: ended(noop) and ended(sv), 120, "both batches to end")
        # Then Prometheus holds what the store holds: every job DONE, none waiting or running
        finished = 'sum(atomfleet_jobs_finished_total{device_type="%s",status="DONE"})'
        expected = {
            finished % "NOOP": NOOP_JOBS,
            finished % "EMU_SV": SV_JOBS,
            'sum(atomfleet_jobs_waiting{device_type=~"NOOP|EMU_SV"})': 0,
            'sum(atomfleet_jobs_running{device_type=~"NOOP|EMU_SV"})': 0,
            'sum(atomfleet_jobs{device_type="NOOP",status="DONE"})': NOOP_JOBS,
            'sum(atomfleet_worker_jobs_total{device_type="NOOP",status="DONE"})': NOOP_JOBS,
            'sum(atomfleet_workers{device_type="NOOP"})': 1,
            'sum(atomfleet_workers{device_type="EMU_SV"})': 1,
            'sum(atomfleet_worker_slots{device_type="NOOP"})': 2,
            'sum(atomfleet_job_queue_wait_seconds_count{device_type="NOOP"})': NOOP_JOBS,
            'sum(atomfleet_job_run_seconds_count{device_type="NOOP"})': NOOP_JOBS,
            'sum(atomfleet_jobs_submitted_total{device_type="NOOP",priority="HIGH"})': NOOP_JOBS,
            "sum(atomfleet_events_backlog)": 0,
            'sum(atomfleet_http_requests_total{route="/api/v1/batches",method="POST",'
            'code="200"})': 2,
            "count(count by (job) (atomfleet_build_info))": 3,
        }

        def holds() -> dict[str, float | None]:
            found = {expr: live.scalar(expr) for expr in expected}
            return {e: v for e, v in found.items() if v != expected[e]}

        wait_for(lambda: not holds(), 30, "Prometheus to hold the fleet's values")
        assert (live.scalar("max(atomfleet_events_applied_total)") or 0) >= NOOP_JOBS
        assert live.scalar("time() - max(atomfleet_scheduler_last_loop_timestamp_seconds)") < 60
        devices = live.get(
            "/api/v1/label/device_type/values", **{"match[]": "atomfleet_jobs_waiting"}
        )
        assert {"NOOP", "EMU_SV"} <= set(devices["data"]), "the dashboard's device variable"
        # And every dashboard query, alert and autoscaling query evaluates on real series
        for _, expr in d.dashboard_queries():
            live.query(d.substitute_grafana_variables(expr))  # raises on an evaluation error
        for rule in d.alert_rules().values():
            live.query(rule["expr"])
        for name, query in d.keda_queries().items():
            [sample] = live.query(query)
            assert float(sample["value"][1]) == 0, f"{name}: nothing waits or runs"

        # And the rule groups evaluated cleanly, none of them firing on a healthy fleet
        def evaluated() -> list[dict[str, Any]]:
            groups = live.get("/api/v1/rules")["data"]["groups"]
            rules: list[dict[str, Any]] = [r for g in groups for r in g["rules"]]
            return rules if all(r.get("lastEvaluation", "").startswith("2") for r in rules) else []

        rules = wait_for(evaluated, 10, "the alert rules to be evaluated")
        assert {r["name"]: (r["health"], r.get("lastError") or "") for r in rules} == {
            name: ("ok", "") for name in d.alert_rules()
        }
        assert [r["name"] for r in rules if r["state"] == "firing"] == []
    # And each process exports exactly its list of metrics
    for name, process in (("scheduler", "scheduler"), ("worker-NOOP", "worker")):
        Scrape(httpx.get(f"{running.url(name)}/metrics").text).assert_exports_exactly_the_list(
            process  # type: ignore[arg-type]
        )
    Scrape(fleet.http.get("/metrics").text).assert_exports_exactly_the_list("api")
