"""Timeouts on every PostgreSQL connection, so that a hung database fails requests fast.

A database that stops answering without refusing (a stopped server, a lost network path)
otherwise holds each request for as long as it hangs. Three bounds, from settings:

- connect: libpq's `connect_timeout` (psycopg applies it to the whole handshake);
- statement: PostgreSQL's `statement_timeout`, which a live but slow server applies itself,
  and a watchdog for a server that answers nothing at all: a statement still waiting a
  moment after that timeout (or a pool's liveness ping after PING_DEADLINE_S) has its socket
  shut down, which fails it at once with a disconnect error (503 in the API);
- pool: how long a caller waits for a pooled connection (`pool_timeout`).

A COMMIT is never cut: the client cannot tell whether a cut commit took effect, and a
request must not answer 5xx after a write. A commit to a hung server waits for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event

log = logging.getLogger(__name__)

PING_DEADLINE_S = 1.0  # a pooled connection's `SELECT 1` before it is handed out
GRACE_S = 0.5  # the server's own statement_timeout answers first when it can
WATCH_EVERY_S = 0.1


@dataclass(frozen=True)
class DbTimeouts:
    connect_s: int = 3
    statement_s: float = 4.0  # 0: none
    pool_s: float = 3.0

    def engine_options(self) -> dict[str, Any]:
        """create_engine() keyword arguments for a PostgreSQL (psycopg) URL."""
        connect_args: dict[str, Any] = {"connect_timeout": self.connect_s}
        if self.statement_s:
            connect_args["options"] = f"-c statement_timeout={int(self.statement_s * 1000)}"
        return {"connect_args": connect_args, "pool_timeout": self.pool_s}


class Watchdog:
    """Shuts down the socket of a connection whose statement outlives its deadline."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[int, tuple[float, Any]] = {}
        self._thread: threading.Thread | None = None
        self.cuts = 0

    def arm(self, dbapi_connection: Any, limit_s: float) -> None:
        with self._lock:
            self._inflight[id(dbapi_connection)] = (time.monotonic() + limit_s, dbapi_connection)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="db-deadlines", daemon=True
                )
                self._thread.start()

    def disarm(self, dbapi_connection: Any) -> None:
        with self._lock:
            self._inflight.pop(id(dbapi_connection), None)

    def _watch(self) -> None:
        while True:
            time.sleep(WATCH_EVERY_S)
            now = time.monotonic()
            with self._lock:
                late = [(k, c) for k, (due, c) in self._inflight.items() if due <= now]
                for key, _ in late:
                    del self._inflight[key]
            for _, conn in late:
                self._cut(conn)

    def _cut(self, dbapi_connection: Any) -> None:
        try:
            fd = os.dup(dbapi_connection.fileno())
        except Exception:  # noqa: BLE001  # already closed: nothing to cut
            return
        log.warning("the database did not answer in time: cutting its connection")
        self.cuts += 1
        # Shuts down the socket itself (every descriptor of it): psycopg's wait wakes at
        # once and fails with a disconnect, which invalidates the connection.
        with socket.socket(fileno=fd) as sock, contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def install(engine: Engine, timeouts: DbTimeouts) -> Watchdog:
    """Bound the statements and liveness pings of `engine` (a PostgreSQL engine)."""
    watchdog = Watchdog()
    if timeouts.statement_s:
        limit_s = timeouts.statement_s + GRACE_S

        @event.listens_for(engine, "before_cursor_execute")
        def _before(conn: Any, *_: Any) -> None:
            watchdog.arm(conn.connection.dbapi_connection, limit_s)

        @event.listens_for(engine, "after_cursor_execute")
        def _after(conn: Any, *_: Any) -> None:
            watchdog.disarm(conn.connection.dbapi_connection)

        @event.listens_for(engine, "handle_error")
        def _error(context: Any) -> None:
            if context.connection is not None and not context.connection.invalidated:
                watchdog.disarm(context.connection.connection.dbapi_connection)

    dialect = engine.dialect
    ping = dialect.do_ping

    def do_ping(dbapi_connection: Any) -> bool:
        watchdog.arm(dbapi_connection, min(PING_DEADLINE_S, float(timeouts.connect_s)))
        try:
            return ping(dbapi_connection)
        finally:
            watchdog.disarm(dbapi_connection)

    dialect.do_ping = do_ping  # type: ignore[method-assign]
    return watchdog
