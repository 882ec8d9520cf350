"""Queue positions through Redis, on real PostgreSQL and Redis: the scheduler's order
publisher (its `positions` loop, run in a thread) publishes what the API reads, answers a
request for a new order when a job is newer than the published one, publishes only the
orders someone reads, and paces itself; without a publisher the API computes positions
itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.enums import DeviceType
from core.names import RedisKeys
from scheduler.estimates import (
    ASK_WAIT_S,
    COST_SHARE,
    REFRESH_S,
    OrderBoard,
    OrderPublisher,
    QueueEstimator,
    _Published,
    compute_order,
)
from scheduler.models import Job
from scheduler.policies import make_policy
from scheduler.run_times import RunTimeModel
from scheduler.service import Loop, run_loop
from tests.conftest import Account
from tests.test_policy import submit

DEVICE = DeviceType.NOOP


@pytest.fixture
def publisher(
    settings: Settings, sessions: sessionmaker[Session], redis_client: redis.Redis
) -> Iterator[OrderPublisher]:
    """The scheduler's positions loop, running as in the scheduler (a thread of it)."""
    found = OrderPublisher(settings, sessions, redis_client)
    stop = threading.Event()
    loop = Loop("positions", found.publish_once, found.wait)
    thread = threading.Thread(target=run_loop, args=(loop, stop), daemon=True)
    thread.start()
    yield found
    stop.set()
    thread.join(timeout=5)


def jobs(session: Session, ids: list[str]) -> list[Job]:
    found = {job.id: job for job in session.query(Job).filter(Job.id.in_(ids))}
    return [found[i] for i in ids]


def local_positions(settings: Settings, sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as session:
        order = compute_order(session, DEVICE, make_policy(settings), RunTimeModel(), 0)
    return order.ahead


def test_a_published_order_reads_back_as_computed(
    settings: Settings, sessions: sessionmaker[Session], redis_client: redis.Redis,
    account: Account,
) -> None:  # fmt: skip
    # Given 5 waiting jobs and their order, published
    ids = submit(sessions, account, 5)
    with sessions() as session:
        order = compute_order(session, DEVICE, make_policy(settings),
                              RunTimeModel(constant_s=1.5), slots=3)  # fmt: skip
    board = OrderBoard(redis_client, RedisKeys(settings.namespace))
    board.publish(DEVICE, order)
    # When a request reads two of them and a job that is not waiting
    read, alive = board.read(DEVICE, [ids[3], ids[0], "not-waiting"])
    # Then it gets their positions, the jobs' expected seconds ahead and the order's meta
    assert read is not None and not alive  # (no publisher beats in this test)
    assert read.ahead == {ids[3]: 3, ids[0]: 0}
    assert read.expected_ahead == {ids[3]: 4.5, ids[0]: 0.0}
    assert (read.slots, read.complete, read.at) == (3, True, order.at)
    # and reading marked the device's order as wanted (for the publisher)
    assert board.wanted([DEVICE, DeviceType.EMU_SV]) == {DEVICE: 0}


def test_a_job_newer_than_the_published_order_asks_for_a_new_one(
    settings: Settings, sessions: sessionmaker[Session], redis_client: redis.Redis,
    account: Account, publisher: OrderPublisher,
) -> None:  # fmt: skip
    estimator = QueueEstimator(settings, redis_client)
    board = OrderBoard(redis_client, RedisKeys(settings.namespace))
    first = submit(sessions, account, 3)
    wait_for_publisher(board)
    # When the API first asks (nothing published yet), it waits for the publisher's order
    with sessions() as session:
        found = estimator.estimate(session, jobs(session, first))
    assert [found[i].queue_position for i in first] == [0, 1, 2]
    published, _ = board.read(DEVICE, first)
    assert published is not None and published.ahead == {first[0]: 0, first[1]: 1, first[2]: 2}
    # And a job submitted after that order gets its exact position from a new one at once,
    # not an approximation, nor after the periodic refresh
    later = submit(sessions, account, 1, priority="HIGH")
    started = time.monotonic()
    with sessions() as session:
        found = estimator.estimate(session, jobs(session, [*later, *first]))
    assert time.monotonic() - started < ASK_WAIT_S
    assert [found[i].queue_position for i in [*later, *first]] == [0, 1, 2, 3]
    assert local_positions(settings, sessions) == {later[0]: 0, first[0]: 1, first[1]: 2,
                                                   first[2]: 3}  # fmt: skip
    # And only the order read was published
    assert not redis_client.exists(RedisKeys(settings.namespace).queue_order(DeviceType.EMU_SV))


def test_without_a_publisher_the_api_computes_positions_itself(
    settings: Settings, sessions: sessionmaker[Session], redis_client: redis.Redis,
    account: Account,
) -> None:  # fmt: skip
    estimator = QueueEstimator(settings, redis_client)
    first = submit(sessions, account, 2, priority="LOW")
    with sessions() as session:
        found = estimator.estimate(session, jobs(session, first))
    assert [found[i].queue_position for i in first] == [0, 1]
    # a newer job than its cached order is found by computing again, not approximated
    later = submit(sessions, account, 1, priority="HIGH")
    started = time.monotonic()
    with sessions() as session:
        found = estimator.estimate(session, jobs(session, [*later, *first]))
    assert time.monotonic() - started < ASK_WAIT_S  # it did not wait for a publisher
    assert [found[i].queue_position for i in [*later, *first]] == [0, 1, 2]
    assert not redis_client.exists(RedisKeys(settings.namespace).queue_order(DEVICE))


def test_without_redis_the_api_still_answers_positions(
    settings: Settings, sessions: sessionmaker[Session], account: Account
) -> None:
    nowhere = redis.Redis(port=1, socket_connect_timeout=0.5)  # nothing listens there
    estimator = QueueEstimator(settings, nowhere)
    ids = submit(sessions, account, 3)
    with sessions() as session:
        found = estimator.estimate(session, jobs(session, ids))
    assert [found[i].queue_position for i in ids] == [0, 1, 2]
    assert found[ids[0]].estimated_start_time is None  # no live workers known


def test_the_publisher_paces_itself_by_what_its_orders_cost(
    settings: Settings, sessions: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    publisher = OrderPublisher(settings, sessions, redis_client)
    now = time.monotonic()
    # orders that cost 0.5 s in all to publish: each republished every 10 x 0.5 s (not
    # every REFRESH_S), so that publishing takes at most a tenth of the time
    publisher._published[DEVICE] = _Published(at=now - 3.0, cost_s=0.2, answers=4)
    assert COST_SHARE * 0.5 > 3.0 > REFRESH_S
    assert not publisher._due(DEVICE, asked=4, round_s=0.5)
    assert publisher._due(DEVICE, asked=4, round_s=0.2)  # (alone: 10 x 0.2 s <= 3 s)
    # a request for a new order is served once 4 x its own cost has passed
    assert publisher._due(DEVICE, asked=5, round_s=0.5)
    publisher._published[DEVICE] = _Published(at=now - 0.5, cost_s=0.2, answers=4)
    assert not publisher._due(DEVICE, asked=5, round_s=0.5)
    # cheap orders are republished every REFRESH_S
    publisher._published[DEVICE] = _Published(at=now - REFRESH_S - 0.1, cost_s=0.01, answers=4)
    assert publisher._due(DEVICE, asked=4, round_s=0.03)


def wait_for_publisher(board: OrderBoard, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not board.client.exists(board.keys.queue_order_publisher):
        assert time.monotonic() < deadline, "the publisher never said it was alive"
        time.sleep(0.02)
