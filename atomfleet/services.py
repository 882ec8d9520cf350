"""Finds or starts the backing services for one-machine runs and tests.

Redis: the URL if it answers, else a local `redis-server`. PostgreSQL: likewise, with a
throwaway cluster. Nothing is installed here: `make services` (a step of `make run` and
`make test`) installs Debian's packages; a missing binary is a ServiceError saying what to
install. Whatever is started here is a child process, stopped by `stop()`.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import redis

from core.errors import AtomfleetError


class ServiceError(AtomfleetError):
    """A service could not be found, installed or started; the message says what to do."""


@dataclass
class Started:
    url: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    stop_commands: list[list[str]] = field(default_factory=list)

    def stop(self) -> None:
        for cmd in self.stop_commands:
            subprocess.run(cmd, check=False, capture_output=True)
        for proc in self.processes:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2).ping())
    except redis.RedisError:
        return False


def _not_installed(package: str, binary: str) -> ServiceError:
    return ServiceError(
        f"{binary} is not installed; run `make services` (as root), install the Debian package "
        f"{package!r} (sudo apt-get install {package}) or point atomfleet at a running server"
    )


def ensure_redis(url: str, data_dir: Path) -> Started:
    """`url` if a Redis answers there, else a local redis-server keeping its data in data_dir."""
    if redis_answers(url):
        return Started(url)
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise _not_installed("redis-server", "redis-server")
    parts = urlsplit(url)
    local = parts.hostname in ("127.0.0.1", "localhost", None)
    port = (parts.port or 6379) if local else free_port()
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(redis_dir.resolve()),
         "--appendonly", "yes", "--save", "", "--logfile", "redis.log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    started_url = f"redis://127.0.0.1:{port}/{(parts.path or '/0').lstrip('/') or 0}"
    deadline = time.monotonic() + 15
    while not redis_answers(started_url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise ServiceError(f"redis-server did not start; see {redis_dir / 'redis.log'}")
        time.sleep(0.1)
    return Started(started_url, processes=[proc])


def postgres_answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(_libpq(url), connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def ensure_postgres(url: str, data_dir: Path) -> Started:
    """`url` if PostgreSQL answers there, else a throwaway local cluster in data_dir."""
    if postgres_answers(url):
        return Started(url)
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        raise _not_installed("postgresql", "PostgreSQL")
    bindir = Path(bins[-1]).parent
    cluster = (data_dir / "postgres").resolve()
    cluster.mkdir(parents=True, exist_ok=True)
    port = free_port()
    as_postgres = ["su", "postgres", "-s", "/bin/sh", "-c"] if os.geteuid() == 0 else None
    if as_postgres:
        shutil.chown(cluster, "postgres", "postgres")

    def run(cmd: str) -> None:
        full = [*as_postgres, cmd] if as_postgres else ["/bin/sh", "-c", cmd]
        subprocess.run(full, check=True, capture_output=True)

    if not (cluster / "data" / "PG_VERSION").exists():
        run(f"{bindir}/initdb -D {cluster}/data -U postgres -A trust -E UTF8 --no-sync")
    options = f"-p {port} -k {cluster} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(f'{bindir}/pg_ctl -D {cluster}/data -l {cluster}/server.log -w -o "{options}" start')
    stop = f"{bindir}/pg_ctl -D {cluster}/data -m fast -w stop"
    admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    database = urlsplit(url).path.lstrip("/") or "postgres"
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database}"')
    return Started(
        f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}",
        stop_commands=[[*as_postgres, stop] if as_postgres else ["/bin/sh", "-c", stop]],
    )
