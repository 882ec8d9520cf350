"""What tests/test_deploy.py reads and runs: the deploy/ files, the validators, a real Prometheus.

Every validator is a real tool; one that is missing fails the test with what to install.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from tests.metric_names import METRICS

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
KUBERNETES_DIR = DEPLOY / "kubernetes"
GRAFANA_DIR = DEPLOY / "grafana"

# The namespace of the manifests; alerts and KEDA queries keep to it.
INSTALL_NAMESPACE = "atomfleet"

# Grafana's variables, replaced by what a query for every device over a short window reads.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$device_type": ".*"}

# --------------------------------------------------------------------------- tools


def tool(name: str, install: str) -> str:
    """The path of a tool (the virtualenv's first), else a failure saying what to install."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"`{name}` is missing: {install}", pytrace=False)
    return found


DEBIAN_PROMETHEUS = "install Debian's prometheus package (apt-get install -y prometheus)"


def run(argv: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{shlex.join(result.args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )


# --------------------------------------------------------------------------- files


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def kubernetes_objects() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(KUBERNETES_DIR.glob("*.yaml")):
        found += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def objects_of(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for _, o in kubernetes_objects() if o["kind"] == kind}


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return workload["spec"]["template"]["spec"]["containers"]  # type: ignore[no-any-return]


def alert_groups() -> list[dict[str, Any]]:
    return load_yaml(PROMETHEUS_DIR / "alerts.yml")["groups"]  # type: ignore[no-any-return]


def alert_rules() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in alert_groups() for r in g["rules"]}


def dashboard() -> dict[str, Any]:
    return json.loads((GRAFANA_DIR / "atomfleet.json").read_text())  # type: ignore[no-any-return]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title and refId, expr) of every panel target."""
    return [
        (f"{p['title']} [{t['refId']}]", t["expr"])
        for p in dashboard()["panels"]
        if p["type"] != "row"
        for t in p.get("targets", [])
    ]


def keda_queries() -> dict[str, str]:
    return {
        name: trigger["metadata"]["query"]
        for name, so in objects_of("ScaledObject").items()
        for trigger in so["spec"]["triggers"]
    }


def substitute_grafana_variables(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def option(argv: list[str], name: str) -> str | None:
    """The value of `--name VALUE` in an argv."""
    return argv[argv.index(name) + 1] if name in argv else None


@dataclass(frozen=True)
class Command:
    where: str
    argv: list[str]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def dockerfiles() -> list[Path]:
    return sorted(
        p for p in (DEPLOY / "docker").glob("Dockerfile.*") if p.suffix != ".dockerignore"
    )


def atomfleet_commands() -> list[Command]:
    """Every `atomfleet ...` command the images, compose and Kubernetes run."""
    found = []
    for path in dockerfiles():
        for instruction, args in dockerfile_instructions(path):
            if instruction == "CMD":
                found.append(Command(path.name, json.loads(args)))
    for name, service in load_yaml(DEPLOY / "compose.yaml")["services"].items():
        argv = service.get("command")
        if isinstance(argv, list) and argv[0] == "atomfleet":
            found.append(Command(f"compose service {name}", argv))
    for path, obj in kubernetes_objects():
        if obj["kind"] in ("Deployment", "Job"):
            for c in containers(obj):
                argv = c.get("command", []) + c.get("args", [])
                found.append(Command(f"{path.name} {obj['metadata']['name']}", argv))
    return found


# --------------------------------------------------------------------------- Prometheus


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


LABEL_VALUES = {
    "device_type": ("EMU_MPS", "EMU_SV", "EMU_FREE", "EMU_FRESNEL", "FRESNEL"),
    "priority": ("HIGH", "MEDIUM", "LOW"),
    "route": ("/api/v1/batches", "/api/v2/jobs"),
    "method": ("POST", "GET"),
    "code": ("201", "422", "500"),
    "version": ("0.1.0",),
    "outcome": ("delivered", "rejected", "unreachable", "refused", "gone"),
    "implementation": ("CPython",),
    "major": ("3",),
    "minor": ("12",),
    "patchlevel": ("3",),
}
STATUS_VALUES = {
    "atomfleet_jobs": ("PENDING", "RUNNING", "DONE", "ERROR", "CANCELED"),
    "atomfleet_worker_slots": ("busy", "idle"),
    "atomfleet_jobs_finished_total": ("DONE", "ERROR", "CANCELED"),
    "atomfleet_worker_jobs_total": ("DONE", "ERROR"),
}
# Each waiting series (device x priority) holds 2 jobs, each running series 1; of the 6
# waiting jobs of a device, 5 are dispatchable (one held back by a project's cap).
WAITING_PER_PRIORITY, RUNNING_PER_DEVICE, DISPATCHABLE_PER_DEVICE = 2, 1, 5


def _label_sets(metric_name: str, labels: tuple[str, ...]) -> list[dict[str, str]]:
    sets: list[dict[str, str]] = [{}]
    for label in labels:
        values = STATUS_VALUES[metric_name] if label == "status" else LABEL_VALUES[label]
        sets = [{**s, label: v} for s in sets for v in values]
    return sets


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""


def exposition(process: str, scrape: int) -> str:
    """Prometheus text format of every metric `process` exports; counters grow each scrape."""
    lines = []
    for m in METRICS:
        if process not in m.exported_by:
            continue
        lines.append(f"# TYPE {m.name} {m.kind}")
        for labels in _label_sets(m.name, m.labels):
            text = _labels(labels)
            if m.kind == "histogram":
                for le, share in (("0.1", 1), ("1", 2), ("10", 3), ("+Inf", 3)):
                    lines.append(f"{m.name}_bucket{_labels({**labels, 'le': le})} {scrape * share}")
                lines.append(f"{m.name}_sum{text} {scrape * 5}")
                lines.append(f"{m.name}_count{text} {scrape * 3}")
                continue
            value: float = {
                "atomfleet_jobs_waiting": WAITING_PER_PRIORITY,
                "atomfleet_jobs_running": RUNNING_PER_DEVICE,
                "atomfleet_jobs_dispatchable": DISPATCHABLE_PER_DEVICE,
                "atomfleet_scheduler_last_loop_timestamp_seconds": time.time(),
                "atomfleet_device_stalled": 0,
            }.get(m.name, 1)
            lines.append(f"{m.name}{text} {scrape * 3 if m.kind == 'counter' else value}")
    return "\n".join(lines) + "\n"


class _Exporter(BaseHTTPRequestHandler):
    scrapes: ClassVar[dict[str, int]] = {}

    def do_GET(self) -> None:
        process = self.path.strip("/")
        self.scrapes[process] = self.scrapes.get(process, 0) + 1
        body = exposition(process, self.scrapes[process]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class LivePrometheus:
    url: str
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def assert_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"Prometheus exited: {self.log.read_text() if self.log else ''}")

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self.assert_running()
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:  # not listening yet, or 503 while it loads
                pass
            assert time.monotonic() < deadline, "Prometheus was not ready in time"
            time.sleep(0.2)

    def scalar(self, expr: str) -> float | None:
        """The value of an expression that yields at most one sample (None: no sample)."""
        found = self.query(expr)
        assert len(found) <= 1, f"{expr} yields {len(found)} samples: {found}"
        return float(found[0]["value"][1]) if found else None

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
            return json.loads(response.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        try:
            answer = self.get("/api/v1/query", query=expr)
        except urllib.error.HTTPError as e:  # 400/422: the expression fails to evaluate
            raise AssertionError(f"{expr}\n{e.read().decode()}") from e
        assert answer["status"] == "success", answer
        return answer["data"]["result"]  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ScrapeTarget:
    job: str  # Prometheus's `job` label; targets of one job share its path
    address: str  # host:port
    path: str = "/metrics"


@contextmanager
def prometheus_server(
    tmp: Path, prometheus: str, targets: list[ScrapeTarget], rule_files: list[Path] | None = None
) -> Iterator[LivePrometheus]:
    """A real Prometheus scraping `targets` every second and evaluating `rule_files` (the
    alerts by default) every second; stopped on exit. Its log is `tmp/prometheus.log`."""
    rules = [PROMETHEUS_DIR / "alerts.yml"] if rule_files is None else rule_files
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rules],
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": path,
                "static_configs": [
                    {
                        "targets": [t.address for t in targets if (t.job, t.path) == (job, path)],
                        # What Kubernetes service discovery adds (the manifests' namespace).
                        "labels": {"namespace": INSTALL_NAMESPACE},
                    }
                ],
            }
            for job, path in dict.fromkeys((t.job, t.path) for t in targets)
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp / "prometheus.log").open("w")
    server = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    live = LivePrometheus(f"http://127.0.0.1:{port}", server, tmp / "prometheus.log")
    try:
        live.wait_ready()
        yield live
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


@contextmanager
def live_prometheus(tmp: Path, prometheus: str) -> Iterator[LivePrometheus]:
    """A real Prometheus scraping a fake API, scheduler and worker every second, with the alerts."""
    _Exporter.scrapes = {}
    exporter = ThreadingHTTPServer(("127.0.0.1", 0), _Exporter)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{exporter.server_address[1]}"
    processes = ("api", "scheduler", "worker")
    targets = [ScrapeTarget(p, address, f"/{p}") for p in processes]
    try:
        with prometheus_server(tmp, prometheus, targets) as live:
            deadline = time.monotonic() + 30
            # Four scrapes of every process: enough samples for rate() and deriv().
            while min(_Exporter.scrapes.get(p, 0) for p in processes) < 4:
                live.assert_running()
                assert time.monotonic() < deadline, "Prometheus scraped too little in 30 s"
                time.sleep(0.2)
            yield live
    finally:
        exporter.shutdown()
        exporter.server_close()
