"""`/oauth/token` against a real API process: the same work whether or not the user exists,
argon2id hashes (older scrypt ones upgraded on login), failed logins limited per user and
per address, and hashing that never holds the API's other requests."""

from __future__ import annotations

import hashlib
import secrets
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler import accounts
from scheduler.models import User
from tests.conftest import Account
from tests.fleet import TestFleet

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"


@pytest.fixture
def api(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[TestFleet]:
    fleet = TestFleet(pg_url, redis_url, tmp_path / "fleet")
    with fleet.running("api"):
        yield fleet


def new_user(sessions: sessionmaker[Session], name: str, password: str = PASSWORD) -> None:
    with sessions.begin() as session:
        accounts.create_user(session, name, password)


def login(
    client: httpx.Client, user: str, password: str, address: str = "192.0.2.1"
) -> httpx.Response:
    return client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": user, "password": password},
        headers={"X-Forwarded-For": address},
    )


def timed_login(client: httpx.Client, user: str, address: str) -> float:
    start = time.perf_counter()
    response = login(client, user, "wrong password", address)
    took = time.perf_counter() - start
    assert response.status_code == 401, response.text
    return took


def test_a_known_and_an_unknown_user_take_the_same_time(
    api: TestFleet, sessions: sessionmaker[Session]
) -> None:
    # Given a user with a password, and a name that no user has
    new_user(sessions, "alice")
    timed_login(api.http, "warm-up", "192.0.2.10")
    # When each is tried 20 times with a wrong password, interleaved
    known, unknown = [], []
    for i in range(20):
        known.append(timed_login(api.http, "alice", f"192.0.2.{20 + i % 2}"))
        unknown.append(timed_login(api.http, "mallory", f"192.0.2.{30 + i % 2}"))
    # Then the medians differ by under 20%
    a, b = statistics.median(known), statistics.median(unknown)
    print(f"wrong password: known user p50 {a * 1000:.1f} ms, unknown p50 {b * 1000:.1f} ms")
    assert abs(a - b) / max(a, b) < 0.20


def test_the_21st_failed_login_for_one_user_within_a_minute_is_a_429(
    api: TestFleet, sessions: sessionmaker[Session]
) -> None:
    # Given a user, tried 20 times with wrong passwords from 20 addresses
    new_user(sessions, "bob")
    for i in range(20):
        assert login(api.http, "bob", f"guess {i}", f"198.51.100.{i}").status_code == 401
    # When the 21st attempt comes, even with the right password from a new address
    refused = login(api.http, "bob", PASSWORD, "198.51.100.200")
    # Then it is a 429 with Retry-After, in OAuth's error shape
    assert refused.status_code == 429, refused.text
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "failed logins for this user" in refused.json()["error_description"]
    # and another user is not affected
    new_user(sessions, "carol")
    assert login(api.http, "carol", PASSWORD, "198.51.100.200").status_code == 200


def test_the_61st_failed_login_from_one_address_is_a_429(api: TestFleet) -> None:
    # Given 60 failed logins from one address, each for another user name
    for i in range(60):
        assert login(api.http, f"nobody-{i}", "x", "203.0.113.50").status_code == 401
    # When it tries once more, Then 429; another address may still try
    refused = login(api.http, "nobody-else", "x", "203.0.113.50")
    assert refused.status_code == 429
    assert "client address" in refused.json()["error_description"]
    assert login(api.http, "nobody-else", "x", "203.0.113.51").status_code == 401


def test_an_old_scrypt_hash_is_upgraded_to_argon2id_on_the_next_login(
    api: TestFleet, sessions: sessionmaker[Session]
) -> None:
    # Given a user whose password was stored by an older atomfleet (scrypt, N=2^14)
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**14, r=8, p=1)
    with sessions.begin() as session:
        session.add(User(name="dave", password_hash=f"scrypt${salt.hex()}${digest.hex()}"))

    def stored() -> str:
        with sessions() as session:
            value = session.scalar(select(User.password_hash).where(User.name == "dave"))
            assert value is not None
            return value

    # When the user logs in, Then it works and the stored hash is now argon2id
    assert login(api.http, "dave", PASSWORD).status_code == 200
    assert stored().startswith("$argon2id$")
    # and the same password still logs in, a wrong one does not
    assert login(api.http, "dave", PASSWORD).status_code == 200
    assert login(api.http, "dave", "scrypt").status_code == 401


def test_logins_do_not_hold_a_concurrent_get(
    api: TestFleet, sessions: sessionmaker[Session], account: Account
) -> None:
    # Given the time of an authenticated list alone
    new_user(sessions, "erin")
    for _ in range(5):
        api.http.get("/api/v1/batches", headers=account.headers)

    def list_times(n: int) -> list[float]:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            assert api.http.get("/api/v1/batches", headers=account.headers).status_code == 200
            times.append(time.perf_counter() - start)
        return times

    alone = list_times(20)
    # When four clients log in back to back (right passwords: nothing is limited)
    stop = threading.Event()
    logins = [0]

    def keep_logging_in() -> None:
        with httpx.Client(base_url=api.base, timeout=30) as own:
            while not stop.is_set():
                assert login(own, "erin", PASSWORD).status_code == 200
                logins[0] += 1

    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(keep_logging_in) for _ in range(4)]
        time.sleep(0.5)
        before = logins[0]
        during = list_times(20)
        made = logins[0] - before
        stop.set()
        for future in running:
            future.result()
    # Then the list is not queued behind them: its median stays within a few tens of ms
    a, b = statistics.median(alone), statistics.median(during)
    print(f"GET p50 alone {a * 1000:.1f} ms, during {made} logins {b * 1000:.1f} ms")
    assert made >= 4
    assert b < a + 0.100


def test_a_burst_beyond_the_hashing_queue_is_refused_at_once_not_queued(
    api: TestFleet, sessions: sessionmaker[Session]
) -> None:
    # Given 2 hashing threads and 8 waiting places (the defaults)
    new_user(sessions, "frank")
    # When 40 logins arrive at once
    with ThreadPoolExecutor(40) as pool:
        answers = list(
            pool.map(lambda i: login(api.http, "frank", PASSWORD, f"192.0.2.{100 + i}"), range(40))
        )
    codes = [a.status_code for a in answers]
    print("burst of 40 logins:", {c: codes.count(c) for c in set(codes)})
    # Then some are served, and those beyond the queue get 503 with Retry-After
    assert codes.count(200) >= 10
    assert set(codes) <= {200, 503}
    busy = [a for a in answers if a.status_code == 503]
    assert all(a.headers["Retry-After"] == "1" for a in busy)
