"""The scheduler process: a few small named loops, each isolated from the others' errors.

- dispatch: sends backlog jobs to Redis when woken (a submission, a worker taking a
  message, a job ending or requeued);
- events: consumes the workers' event stream into the store;
- reconcile: requeues jobs lost to a dead worker or a Redis restart;
- watch: flags a device whose workers claim free slots but consume nothing;
- qpus: keeps each QPU's operational status and specs in Redis;
- timeouts: ends open batches that received no job for too long (TIMED_OUT);
- webhooks: delivers the outbox of ended batches' webhooks.

SIGTERM or SIGINT stops every loop at its next turn.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import redis

from core.config import Settings
from core.enums import DeviceType
from scheduler.db import engine_from_settings, make_sessionmaker
from scheduler.dispatch import Dispatcher, make_producer
from scheduler.events import EventsConsumer
from scheduler.qpu_watch import QpuWatch
from scheduler.reactions import redis_reactor
from scheduler.reconcile import Reconciler
from scheduler.timeouts import OpenBatchTimeouts
from scheduler.watch import FleetWatch
from scheduler.webhooks.delivery import WebhookSender

log = logging.getLogger(__name__)


@dataclass
class Loop:
    name: str
    step: Callable[[], object]
    pause_s: float = 0.0


def build_loops(settings: Settings, devices: list[DeviceType]) -> list[Loop]:
    def client(blocks_s: float = 1.0) -> redis.Redis:
        # One connection per loop: a blocking read must not stall the others; its socket
        # waits longer than its longest blocking read.
        return redis.Redis.from_url(
            settings.redis_url, socket_timeout=blocks_s + 30, health_check_interval=10
        )

    sessions = make_sessionmaker(
        engine_from_settings(settings),
        reactors=[redis_reactor(client(), settings)],
        half_life_s=settings.fair_share_half_life_s,
    )
    dispatcher = Dispatcher(
        settings,
        sessions,
        client(settings.dispatch_idle_wait_s),
        make_producer(settings),
        devices,
    )
    consumer = EventsConsumer(
        client(), dispatcher.keys, sessions, consumer=f"scheduler-{socket.gethostname()}"
    )
    consumer.ensure_group()
    # Lost jobs are judged once the events before them are applied.
    reconciler = Reconciler(settings, sessions, client(), devices, ready=consumer.caught_up)
    watch = FleetWatch(settings, client(), devices)
    qpus = QpuWatch(settings, client())
    timeouts = OpenBatchTimeouts(settings, sessions)
    webhooks = WebhookSender(settings, sessions)
    return [
        Loop("dispatch", dispatcher.run_once),
        Loop("events", consumer.consume_once),
        Loop("reconcile", reconciler.reconcile_once, pause_s=settings.reconcile_interval_s),
        Loop("watch", watch.watch_once, pause_s=watch.interval_s),
        Loop("qpus", qpus.watch_once, pause_s=settings.qpu_poll_s),
        Loop("timeouts", timeouts.time_out_once, pause_s=timeouts.interval_s),
        Loop("webhooks", webhooks.deliver_once, pause_s=webhooks.interval_s),
    ]


def run_loop(loop: Loop, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            loop.step()
        except Exception:
            log.exception("scheduler loop %s failed; retrying", loop.name)
            stop.wait(1.0)
        if loop.pause_s:
            stop.wait(loop.pause_s)


def serve(settings: Settings, devices: list[DeviceType]) -> None:
    """Run the scheduler until SIGTERM/SIGINT."""
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("scheduler stopping (signal %d)", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    loops = _retry_start(settings, devices, stop)
    threads = [
        threading.Thread(target=run_loop, args=(loop, stop), name=loop.name, daemon=True)
        for loop in loops
    ]
    for thread in threads:
        thread.start()
    log.info("scheduler running for %s", ", ".join(d.value for d in devices))
    while not stop.is_set():
        stop.wait(0.5)
    for thread in threads:
        thread.join(timeout=5)


def _retry_start(
    settings: Settings, devices: list[DeviceType], stop: threading.Event
) -> list[Loop]:
    while True:
        try:
            return build_loops(settings, devices)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("waiting for Redis at %s: %s", settings.redis_url, exc)
            if stop.wait(1.0):
                raise SystemExit(0) from exc
