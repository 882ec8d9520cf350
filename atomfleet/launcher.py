"""`atomfleet run`: services, migrations, API, scheduler, a simulated QPU unless a real one is
configured, and one worker per device type served on this machine, then a demo batch per
device with live progress bars, until Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from atomfleet.demo import DEMO_DEVICES, demo_request, demo_sequence
from atomfleet.services import ServiceError, ensure_redis, free_port
from core.catalog import entry
from core.config import Settings
from core.enums import TERMINAL_JOB_STATUSES, DeviceType


class Fleet:
    """The child processes of a one-machine run; stopping it stops all of them.

    It is their supervisor too: a child started with `restart=True` (the workers) is
    started again when it exits, at most once every `RESTART_PAUSE_S` (a worker whose
    consumer stopped exits on purpose so that this happens).
    """

    RESTART_PAUSE_S = 2.0

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._args: dict[str, tuple[str, ...]] = {}
        self._restart: set[str] = set()
        self._started_at: dict[str, float] = {}
        self.restarts = 0

    def start(self, name: str, *args: str, restart: bool = False) -> None:
        self._args[name] = args or (name,)
        if restart:
            self._restart.add(name)
        self._spawn(name)

    def _spawn(self, name: str) -> None:
        with open(self.log_dir / f"{name}.log", "ab") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                [sys.executable, "-m", "atomfleet", *self._args[name]],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.children.append((name, proc))
        self._started_at[name] = time.monotonic()

    def current(self, name: str) -> subprocess.Popen[bytes]:
        return next(proc for n, proc in reversed(self.children) if n == name)

    def supervise(self) -> list[str]:
        """Restart the restartable children that exited; returns their names."""
        restarted = []
        for name in sorted(self._restart):
            proc = self.current(name)
            if proc.poll() is None:
                continue
            if time.monotonic() - self._started_at[name] < self.RESTART_PAUSE_S:
                continue
            self._spawn(name)
            self.restarts += 1
            restarted.append(name)
        return restarted

    def dead(self) -> list[str]:
        """Children that exited and are not restarted."""
        return [
            name
            for name in dict.fromkeys(n for n, _ in self.children)
            if name not in self._restart and self.current(name).poll() is not None
        ]

    def stop(self) -> None:
        self._restart.clear()
        for _, proc in self.children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _, proc in self.children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Client:
    """A minimal HTTP client of our own API (standard library only)."""

    def __init__(self, base: str, token: str = "") -> None:
        self.base = base
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        url = path if path.startswith("http") else self.base + path
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token and not path.startswith("http"):
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=30) as resp:
            payload = json.loads(resp.read())
        return payload.get("data", payload) if isinstance(payload, dict) else payload


def run(settings: Settings, demo: bool = True) -> int:
    data_dir = settings.data_dir.resolve()
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"atomfleet: data and logs in {data_dir}")
    try:
        redis_service = ensure_redis(settings.redis_url, data_dir)
    except ServiceError as exc:
        print(f"atomfleet: {exc}", file=sys.stderr)
        return 1
    env = {
        **os.environ,
        "ATOMFLEET_REDIS_URL": redis_service.url,
        "ATOMFLEET_DATA_DIR": str(data_dir),
        # One machine: the API and the scheduler may use the embedded SQLite store and
        # the secret generated into the data dir; metrics listen on this machine only.
        "ATOMFLEET_SINGLE_MACHINE": "1",
        "ATOMFLEET_METRICS_HOST": os.environ.get("ATOMFLEET_METRICS_HOST", "127.0.0.1"),
        "PYTHONUNBUFFERED": "1",
    }
    simulator_port = 0
    devices = list(settings.devices)
    if not settings.qpus:  # no real QPU configured: serve a simulated FRESNEL
        simulator_port = free_port()
        simulated = {DeviceType.FRESNEL: f"http://127.0.0.1:{simulator_port}"}
        env["ATOMFLEET_QPUS"] = json.dumps(simulated)
        devices = Settings(qpus=simulated).devices  # FRESNEL, unless ATOMFLEET_DEVICES omits it
    print(f"atomfleet: Redis at {redis_service.url}")
    print(f"atomfleet: database at {settings.resolved_database_url()}")
    fleet = Fleet(env, log_dir)
    # Ctrl-C, SIGTERM from a supervisor and SIGHUP from a closed terminal stop every child
    # (SIGINT may arrive ignored when started in the background).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    try:
        return _run(settings, env, fleet, devices, simulator_port, demo)
    except KeyboardInterrupt:
        return 0
    finally:
        # The terminal may be gone, or the pipe we print to closed (`make run | tee` and
        # Ctrl-C kills tee first): stop the children before saying anything.
        _say("\natomfleet: stopping…")
        fleet.stop()
        redis_service.stop()
        _say("atomfleet: stopped")


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _say(text: str) -> None:
    """Print, unless stdout is gone; from then on, print nowhere."""
    try:
        print(text, flush=True)
    except (BrokenPipeError, OSError):
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115


def _run(
    settings: Settings,
    env: dict[str, str],
    fleet: Fleet,
    devices: list[DeviceType],
    simulator_port: int,
    demo: bool,
) -> int:
    subprocess.run([sys.executable, "-m", "atomfleet", "migrate"], env=env, check=True)
    boot = subprocess.run(
        [sys.executable, "-m", "atomfleet", "admin", "bootstrap",
         "--user", f"demo-{int(time.time())}", "--project", "demo"],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    account = json.loads(boot.stdout.strip().splitlines()[-1])
    base = f"http://{settings.api_host}:{settings.api_port}"
    if simulator_port:
        fleet.start("qpu-simulator", "qpu-simulator", "--port", str(simulator_port))
        print(f"atomfleet: a simulated FRESNEL QPU on http://127.0.0.1:{simulator_port}")
    ports = metrics_ports(settings, len(devices))
    fleet.start("api")
    fleet.start("scheduler", "scheduler", "--metrics-port", str(ports[0]))
    for device, port in zip(devices, ports[1:], strict=True):
        fleet.start(
            f"worker-{device}", "worker", "--device", device, "--metrics-port", str(port),
            restart=True,
        )  # fmt: skip
    client = Client(base, account["token"])
    _wait_healthy(client, fleet)
    print(f"atomfleet: API on {base} (docs: {base}/docs, metrics: {base}/metrics)")
    print(
        f"atomfleet: scheduler metrics on :{ports[0]}, workers' on "
        f"{', '.join(f':{p}' for p in ports[1:])} (/metrics, /healthz)"
    )
    print(f"atomfleet: workers for {', '.join(devices)}")
    print(f"atomfleet: demo token {account['token']} for project {account['project_id']}")
    if demo:
        _demo(client, account["project_id"], fleet, [d for d in DEMO_DEVICES if d in devices])
    print("atomfleet: serving; press Ctrl-C to stop")
    while not fleet.dead():
        for name in fleet.supervise():
            print(f"atomfleet: {name} exited; started it again (see {fleet.log_dir})")
        time.sleep(1)
    print(f"atomfleet: {', '.join(fleet.dead())} exited; see {fleet.log_dir}", file=sys.stderr)
    return 1


def metrics_ports(settings: Settings, workers: int) -> list[int]:
    """The scheduler's port, then one per worker: the configured ones where free (the
    scheduler's, then the workers' and the next ones), else any free port."""
    wanted = [settings.scheduler_metrics_port] + [
        settings.worker_metrics_port + i for i in range(workers)
    ]
    found: list[int] = []
    for port in wanted:
        found.append(port if port and port not in found and _port_free(port) else free_port())
    return found


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_healthy(client: Client, fleet: Fleet, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.call("GET", "/readyz")
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            if fleet.dead() or time.monotonic() > deadline:
                raise SystemExit(f"atomfleet: the API did not start; see {fleet.log_dir}") from None
            time.sleep(0.3)


def _demo(client: Client, project_id: str, fleet: Fleet, devices: list[DeviceType]) -> None:
    sequence = demo_sequence()
    deadline = time.monotonic() + 60
    for qpu in (d for d in devices if entry(d).remote):
        while qpu not in client.call("GET", "/api/v1/devices/specs"):
            if time.monotonic() > deadline:  # the scheduler reads the QPU's specs every second
                raise SystemExit(f"atomfleet: the {qpu} QPU did not answer; see the logs")
            time.sleep(0.3)
    batches = []
    for device in devices:
        batch = client.call("POST", "/api/v1/batches", demo_request(project_id, device, sequence))
        batches.append(batch)
        print(f"atomfleet: submitted batch {batch['id']} ({len(batch['jobs'])} jobs) to {device}")
    jobs = [(b["device_type"], job) for b in batches for job in b["jobs"]]
    board = ProgressBoard(sys.stdout.isatty())
    while True:
        states = [client.call("GET", f"/api/v2/jobs/{job['id']}") for _, job in jobs]
        board.draw([(device, state) for (device, _), state in zip(jobs, states, strict=True)])
        if all(s["status"] in TERMINAL_JOB_STATUSES for s in states):
            break
        if fleet.dead():
            raise SystemExit(f"atomfleet: {', '.join(fleet.dead())} exited; see {fleet.log_dir}")
        fleet.supervise()
        time.sleep(0.3)
    for b in batches:
        batch = client.call("GET", f"/api/v2/batches/{b['id']}")
        print(f"\n{batch['device_type']}: batch {batch['status']} {batch['jobs_count_per_status']}")
        for job in b["jobs"]:
            link = client.call("GET", f"/api/v1/jobs/{job['id']}/results_link")["results_link"]
            if not link:
                state = client.call("GET", f"/api/v2/jobs/{job['id']}")
                print(f"  {job['variables']}: {state['status']} {state.get('errors') or ''}")
                continue
            counter = client.call("GET", link)["counter"]
            top = sorted(counter.items(), key=lambda kv: -kv[1])[:4]
            shown = "  ".join(f"{bits}:{n}" for bits, n in top)
            print(f"  {job['variables']}  top bitstrings  {shown}")
    print()


class ProgressBoard:
    """Progress bars per job: redrawn in place on a terminal, else printed on change."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.drawn = 0
        self.last: list[str] = []

    def draw(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        lines = [self._line(device, job) for device, job in rows]
        if self.tty:
            if self.drawn:
                sys.stdout.write(f"\x1b[{self.drawn}F")
            sys.stdout.write("".join(f"\x1b[2K{line}\n" for line in lines))
            self.drawn = len(lines)
        else:
            for line, old in zip(lines, self.last or [""] * len(lines), strict=True):
                if line != old:
                    print(line)
        self.last = lines
        sys.stdout.flush()

    @staticmethod
    def _line(device: str, job: dict[str, Any]) -> str:
        progress = int(job.get("progress") or 0)
        filled = progress * 30 // 100
        bar = "█" * filled + "·" * (30 - filled)
        variables = ", ".join(f"{k}={v}" for k, v in (job.get("variables") or {}).items())
        return f"{device:<9} {job['id'][:8]} [{bar}] {progress:3d}% {job['status']:<8} {variables}"
