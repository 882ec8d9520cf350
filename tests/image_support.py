"""What tests/test_images.py reads and runs: which image each deployed command runs in, the
lock script, a throwaway database and the image's processes."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import signal
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from tests import deploy_support as d
from tests.image_build import Stage

DOCKER_DIR = d.DEPLOY / "docker"
# Kinds whose pods run containers, and where their pod template is.
POD_TEMPLATES = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


def lock_script() -> ModuleType:
    """deploy/docker/lock.py, the one place that knows what each lock is made of."""
    spec = importlib.util.spec_from_file_location("atomfleet_lock", DOCKER_DIR / "lock.py")
    assert spec and spec.loader, "deploy/docker/lock.py is missing"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wheel_packages() -> list[str]:
    config = tomllib.loads((d.ROOT / "pyproject.toml").read_text())
    return list(config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])


def dockerfile_of(reference: str) -> Path | None:
    """Our Dockerfile that builds an image reference, None for another image: the image's
    name, less any registry, tag and `atomfleet-` prefix, names it (`atomfleet-api:dev`,
    `registry.example.com/atomfleet/api:0.1.0`: deploy/docker/Dockerfile.api)."""
    name = reference.split("@")[0].rsplit("/", 1)[-1].split(":")[0].removeprefix("atomfleet-")
    path = DOCKER_DIR / f"Dockerfile.{name}"
    return path if path.is_file() else None


def image_cmd(dockerfile: Path) -> list[str]:
    cmds = [a for i, a in d.dockerfile_instructions(dockerfile) if i == "CMD"]
    assert cmds, f"{dockerfile.name} has no CMD"
    return list(json.loads(cmds[-1]))


@dataclass(frozen=True)
class Deployed:
    where: str
    image: str  # the image reference deploy/ names
    dockerfile: Path | None
    argv: list[str]


def _pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec: Any = obj
    for key in POD_TEMPLATES.get(obj.get("kind", ""), ("-",)):
        spec = spec.get(key) if isinstance(spec, dict) else None
    return [spec] if isinstance(spec, dict) else []


def _compose_argv(value: Any) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else list(value)


def deployed() -> list[Deployed]:
    """Every command compose and Kubernetes run in a container: its command (the image's
    CMD when it names none), its healthcheck, exec probes and lifecycle hooks."""
    found = []
    compose = d.load_yaml(d.DEPLOY / "compose.yaml")
    for name, service in compose["services"].items():
        image = service.get("image", "")
        dockerfile = dockerfile_of(image)
        where = f"compose service {name}"
        if "command" in service:
            argv = _compose_argv(service["command"])
        else:
            argv = image_cmd(dockerfile) if dockerfile else []
        found.append(Deployed(where, image, dockerfile, argv))
        test = (service.get("healthcheck") or {}).get("test")
        if test and test[0] in ("CMD", "CMD-SHELL"):
            argv = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
            found.append(Deployed(f"{where} healthcheck", image, dockerfile, argv))
    for path, obj in d.kubernetes_objects():
        for pod in _pod_specs(obj):
            for c in pod.get("initContainers", []) + pod.get("containers", []):
                dockerfile = dockerfile_of(c["image"])
                where = f"{path.name} {obj['metadata']['name']} container {c['name']}"
                argv = c.get("command") or (image_cmd(dockerfile) if dockerfile else [])
                found.append(Deployed(where, c["image"], dockerfile, argv + c.get("args", [])))
                hooks = [(p, c.get(p)) for p in PROBES]
                hooks += [(h, c.get("lifecycle", {}).get(h)) for h in ("postStart", "preStop")]
                for hook, spec in hooks:
                    if spec and "exec" in spec:
                        found.append(
                            Deployed(
                                f"{where} {hook}", c["image"], dockerfile, spec["exec"]["command"]
                            )
                        )
    return found


@contextmanager
def throwaway_database(session_url: str) -> Iterator[str]:
    """A new empty database on the test session's PostgreSQL server, dropped afterwards."""
    server = make_url(session_url)
    name = f"atomfleet_image_{uuid.uuid4().hex[:8]}"
    admin_url = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def table_names(database_url: str) -> set[str]:
    url = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in rows}


def run_in(
    image: Stage, argv: list[str], env: dict[str, str], timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    """`argv` as the image runs it: its programs, its environment, its working directory."""
    return subprocess.run(
        image.argv(argv),
        env=env,
        cwd=image.path("."),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@contextmanager
def running(image: Stage, argv: list[str], env: dict[str, str], log: Path) -> Iterator[Any]:
    """`argv` started in the image, its output in `log`; its process group stopped after."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            image.argv(argv),
            env=env,
            cwd=image.path("."),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
                if proc.poll() is not None:
                    break
                os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=wait_s)
                except subprocess.TimeoutExpired:
                    continue


def healthcheck_passes(image: Stage, env: dict[str, str]) -> bool:
    """Whether the image's HEALTHCHECK command exits 0, as Docker runs it."""
    timeout = float(image.healthcheck_options.get("timeout", "30s").removesuffix("s"))
    try:
        return run_in(image, image.healthcheck, env, timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def wait_healthy(image: Stage, env: dict[str, str], proc: Any, log: Path, limit_s: float) -> None:
    """Until the HEALTHCHECK passes; fails if the process exits first or `limit_s` passes
    (a guard against hanging, far above Docker's start period)."""
    deadline = time.monotonic() + limit_s
    while not healthcheck_passes(image, env):
        assert proc.poll() is None, f"{proc.args} exited {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"never healthy:\n{log.read_text()}"
        time.sleep(1)
