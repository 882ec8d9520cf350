"""`atomfleet status`: the fleet at a glance, for an operator's terminal.

Read from the store and Redis directly (`scheduler.fleet_state`, what the scheduler's
`/metrics` reads), so it works while the API is down, and needs no token.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import redis
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from atomfleet.slurm_status import slurm_lines
from core.config import Settings
from core.enums import DeviceType, JobStatus
from core.metrics import priority_label
from core.names import RedisKeys
from core.redis_client import redis_client
from scheduler.db import engine_from_settings, make_sessionmaker
from scheduler.fleet_state import (
    RANKS,
    DeviceFleet,
    StoreState,
    events_backlog,
    read_fleet,
    read_store,
)

COLUMNS = (
    ("device", 13), ("state", 8), ("workers", 8), ("slots busy/all", 15),
    *((f"wait {priority_label(r)}", 12) for r in RANKS), ("running", 8), ("oldest waiting", 0),
)  # fmt: skip


def print_status(settings: Settings) -> int:
    """Print the status; 1 (with the reason on stderr) when the store or Redis cannot be read."""
    url = make_url(settings.resolved_database_url()).render_as_string(hide_password=True)
    redis_url = make_url(settings.redis_url).render_as_string(hide_password=True)
    engine = engine_from_settings(settings)
    try:
        with make_sessionmaker(engine)() as session:
            store = read_store(session, settings.devices)
    except SQLAlchemyError as exc:
        print(f"atomfleet status: cannot read the store at {url}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    devices = sorted(set(settings.devices) | store.devices())
    keys = RedisKeys(settings.namespace)
    client = redis_client(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        fleet = read_fleet(client, keys, devices)
        backlog = events_backlog(client, keys)
        slurm = slurm_lines(client, settings, devices)
    except redis.RedisError as exc:
        print(f"atomfleet status: cannot read Redis at {redis_url}: {exc}",
              file=sys.stderr)  # fmt: skip
        return 1
    finally:
        client.close()
    now = datetime.now(UTC)
    print(f"atomfleet status at {now:%Y-%m-%d %H:%M:%S} UTC")
    print(f"store {url}, Redis {redis_url}, namespace {settings.namespace}\n")
    print(_row([name for name, _ in COLUMNS]))
    for device in devices:
        print(_row(_cells(device, store, fleet[device], now)))
    print(f"\nbatches open (PENDING or RUNNING): {store.batches_open}")
    print(f"worker events not yet applied: {backlog}")
    for line in slurm:
        print(line)
    return 0


def _cells(device: DeviceType, store: StoreState, fleet: DeviceFleet, now: datetime) -> list[str]:
    oldest = store.oldest_waiting.get(device)
    return [
        device.value,
        fleet.status.value,
        str(fleet.workers),
        f"{fleet.busy}/{fleet.slots}",
        *(str(store.waiting(device, rank)) for rank in RANKS),
        str(store.by_status(device, JobStatus.RUNNING)),
        duration((now - oldest).total_seconds()) if oldest else "-",
    ]


def _row(cells: list[str]) -> str:
    return "".join(
        (cell + " ").ljust(width) if width else cell
        for cell, (_, width) in zip(cells, COLUMNS, strict=True)
    ).rstrip()


def duration(seconds: float) -> str:
    """`45s`, `12m 03s`, `5h 07m`, `3d 04h`: what an operator reads at a glance."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"
