"""Engine and session factories for the store (PostgreSQL in production, SQLite embedded)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from scheduler.db_timeouts import DbTimeouts, install
from scheduler.ledger import Reactor, StoreSession
from scheduler.webhooks import outbox  # noqa: F401  (its outbox writer listens to commits)


def make_engine(url: str, timeouts: DbTimeouts | None = None) -> Engine:
    """An engine on `url`; on PostgreSQL with `timeouts`, bounded connects, statements and
    pool waits (scheduler/db_timeouts.py)."""
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    elif timeouts is not None:
        kwargs.update(timeouts.engine_options())
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    elif timeouts is not None:
        install(engine, timeouts)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while the scheduler writes; foreign keys are off by default.
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_sessionmaker(
    engine: Engine, reactors: Sequence[Reactor] = (), half_life_s: float | None = None
) -> sessionmaker[Session]:
    """Sessions whose ledger writes its job counts (and the projects' decayed usage, with
    this half-life) at each commit, then calls `reactors`."""
    info: dict[str, object] = {"reactors": list(reactors)}
    if half_life_s is not None:
        info["half_life_s"] = half_life_s
    return sessionmaker(engine, class_=StoreSession, expire_on_commit=False, info=info)


def engine_from_settings(settings: Settings, statement_timeout: bool = True) -> Engine:
    """The store's engine with the configured database timeouts (`statement_timeout=False`
    for migrations, whose statements may rightly run long)."""
    url = settings.resolved_database_url()
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    timeouts = DbTimeouts(
        connect_s=settings.db_connect_timeout_s,
        statement_s=settings.db_statement_timeout_s if statement_timeout else 0,
        pool_s=settings.db_pool_timeout_s,
    )
    return make_engine(url, timeouts)
