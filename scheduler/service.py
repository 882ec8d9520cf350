"""The scheduler process: a few small named loops, each isolated from the others' errors.

- dispatch: sends backlog jobs to Redis when woken (a submission, a worker taking a
  message, a job ending or requeued);
- events: consumes the workers' event stream into the store;
- reconcile: requeues jobs lost to a dead worker or a Redis restart;
- watch: flags a device whose workers claim free slots but consume nothing;
- qpus: keeps each QPU's operational status and specs in Redis;
- timeouts: ends open batches that received no job for too long (TIMED_OUT);
- webhooks: delivers the outbox of ended batches' webhooks;
- positions: publishes the queue order of the devices whose positions the API reads;
- retention: deletes the results of jobs ended long ago (only with
  `results_retention_days`).

Each loop's work is timed into a histogram and its turns are clocked: `/healthz` answers
503 once a loop stops turning, and `/metrics` serves those with the store-derived gauges.
SIGTERM or SIGINT stops every loop at its next turn.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.enums import DeviceType
from core.metrics import new_registry
from core.metrics_http import MetricsServer
from core.redis_client import redis_client
from scheduler.collector import FleetCollector
from scheduler.db import engine_from_settings, make_sessionmaker
from scheduler.dispatch import Dispatcher, make_producer
from scheduler.estimates import WAKE_S, OrderPublisher
from scheduler.events import EventsConsumer
from scheduler.loop_clock import LoopClock
from scheduler.metrics import SchedulerMetrics
from scheduler.ops_collector import OpsCollector
from scheduler.qpu_watch import QpuWatch
from scheduler.reactions import redis_reactor
from scheduler.reconcile import Reconciler
from scheduler.retention import ResultsRetention
from scheduler.timeouts import OpenBatchTimeouts
from scheduler.watch import FleetWatch
from scheduler.webhooks.delivery import WebhookSender

log = logging.getLogger(__name__)

EVENTS_BLOCK_MS = 1000
SCRAPE_TIMEOUT_S = 5.0


@dataclass
class Loop:
    """A named loop: `step` is its work (timed, and a turn once done); `wait` blocks until
    there is work again (not timed); `gap_s` is its longest normal time between turns."""

    name: str
    step: Callable[[], object]
    wait: Callable[[], object] | None = None
    pause_s: float = 0.0
    gap_s: float = 1.0


@dataclass
class Scheduler:
    loops: list[Loop]
    clock: LoopClock
    metrics: SchedulerMetrics
    collector: FleetCollector


def build(settings: Settings, devices: list[DeviceType]) -> Scheduler:
    def client(blocks_s: float = 1.0) -> redis.Redis:
        # One connection per loop: a blocking read must not stall the others; its socket
        # waits longer than its longest blocking read.
        return redis_client(
            settings.redis_url, socket_timeout=blocks_s + 30, health_check_interval=10
        )

    metrics = SchedulerMetrics(new_registry(), devices)
    sessions = make_sessionmaker(
        engine_from_settings(settings),
        reactors=[redis_reactor(client(), settings), metrics.reactor()],
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
    webhooks = WebhookSender(settings, sessions, metrics.webhook_attempted)
    positions = OrderPublisher(settings, sessions, client(WAKE_S))
    loops = [
        Loop("dispatch", dispatcher.step, dispatcher.wait, gap_s=settings.dispatch_idle_wait_s),
        Loop(
            "events",
            lambda: metrics.events_applied.inc(consumer.handle()),
            lambda: consumer.read(block_ms=EVENTS_BLOCK_MS),
            gap_s=EVENTS_BLOCK_MS / 1000,
        ),
        Loop(
            "reconcile",
            reconciler.reconcile_once,
            pause_s=settings.reconcile_interval_s,
            gap_s=settings.reconcile_interval_s,
        ),
        Loop("watch", watch.watch_once, pause_s=watch.interval_s, gap_s=watch.interval_s),
        Loop(
            "qpus",
            qpus.watch_once,
            pause_s=settings.qpu_poll_s,
            gap_s=settings.qpu_poll_s + settings.qpu_unreachable_after_s,
        ),
        Loop(
            "timeouts",
            timeouts.time_out_once,
            pause_s=timeouts.interval_s,
            gap_s=timeouts.interval_s,
        ),
        # A turn's deliveries run at once; each may wait for its receiver's timeout.
        Loop(
            "webhooks",
            webhooks.deliver_once,
            pause_s=webhooks.interval_s,
            gap_s=webhooks.interval_s + 4 * settings.webhook_timeout_s,
        ),
        # A turn computes each wanted order: a device of 10,000 waiting jobs takes ~0.1-0.3 s.
        Loop("positions", positions.publish_once, positions.wait, gap_s=WAKE_S + 10.0),
    ]
    retention = retention_loop(settings, sessions, metrics)
    if retention is not None:
        loops.append(retention)
    clock = LoopClock({loop.name: loop.gap_s for loop in loops})
    # A scrape gives up on Redis long before Prometheus gives up on the scrape (10 s).
    scrape_client = redis_client(
        settings.redis_url, socket_timeout=SCRAPE_TIMEOUT_S, socket_connect_timeout=2
    )
    collector = FleetCollector(sessions, scrape_client, dispatcher.keys, devices, clock)
    metrics.registry.register(collector)
    metrics.registry.register(OpsCollector(sessions, scrape_client, devices))
    return Scheduler(loops, clock, metrics, collector)


def retention_loop(
    settings: Settings, sessions: sessionmaker[Session], metrics: SchedulerMetrics
) -> Loop | None:
    """The results retention's loop, counting what it deletes; None when it is off."""
    if not settings.results_retention_days:
        return None
    retention = ResultsRetention(settings, sessions, metrics.results_purged.inc)
    # A turn stops after its budget once a transaction ends (the clock adds its margin).
    return Loop(
        "retention",
        retention.purge_once,
        pause_s=retention.interval_s,
        gap_s=retention.interval_s + retention.turn_budget_s,
    )


def run_loop(
    loop: Loop,
    stop: threading.Event,
    clock: LoopClock | None = None,
    metrics: SchedulerMetrics | None = None,
) -> None:
    while not stop.is_set():
        try:
            started = time.perf_counter()
            loop.step()
            if metrics is not None:
                metrics.observe_loop(loop.name, time.perf_counter() - started)
            if clock is not None:
                clock.turned(loop.name)
            if loop.wait is not None:
                loop.wait()
        except Exception:
            log.exception("scheduler loop %s failed; retrying", loop.name)
            stop.wait(1.0)
        if loop.pause_s:
            stop.wait(loop.pause_s)


def serve(settings: Settings, devices: list[DeviceType]) -> None:
    """Run the scheduler until SIGTERM/SIGINT; `/metrics` and `/healthz` on
    `scheduler_metrics_port` (0: not served)."""
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("scheduler stopping (signal %d)", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    scheduler = _retry_start(settings, devices, stop)
    server = None
    if settings.scheduler_metrics_port:
        server = MetricsServer(
            settings.metrics_host,
            settings.scheduler_metrics_port,
            scheduler.metrics.registry,
            scheduler.clock.health,
        ).start()
        log.info("scheduler metrics on port %d (/metrics, /healthz)", server.port)
    threads = [
        threading.Thread(
            target=run_loop,
            args=(loop, stop, scheduler.clock, scheduler.metrics),
            name=loop.name,
            daemon=True,
        )
        for loop in scheduler.loops
    ]
    for thread in threads:
        thread.start()
    log.info("scheduler running for %s", ", ".join(d.value for d in devices))
    while not stop.is_set():
        stop.wait(0.5)
    for thread in threads:
        thread.join(timeout=5)
    if server is not None:
        server.close()


def _retry_start(settings: Settings, devices: list[DeviceType], stop: threading.Event) -> Scheduler:
    while True:
        try:
            return build(settings, devices)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("waiting for Redis at %s: %s", settings.redis_url, exc)
            if stop.wait(1.0):
                raise SystemExit(0) from exc
