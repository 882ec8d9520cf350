"""Batch webhooks: signed (Standard Webhooks) and verifiable with the project's secret,
retried with the same webhook-id until a 2xx, never lost by a scheduler killed between the
batch's last transition and the delivery, and never sent to a private address."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.config import Settings
from core.enums import DeliveryStatus, DeviceType
from scheduler import projects
from scheduler.db import make_sessionmaker
from scheduler.models import WebhookDelivery
from scheduler.webhooks.addresses import is_public
from scheduler.webhooks.delivery import WebhookSender
from scheduler.webhooks.signing import verify
from tests.conftest import Account, make_account
from tests.fleet import TestFleet, wait_for
from tests.sequences import plain


class Receiver:
    """A local HTTP endpoint that records every POST and answers the given codes in turn
    (then 200)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []
        self.slow_released = threading.Event()  # a POST to /slow answers once this is set
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path.startswith("/slow"):
                    receiver.slow_released.wait(30)
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                code = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.base}/hooks/atomfleet?x=1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.slow_released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


def secret_of(sessions: sessionmaker[Session], project_id: str) -> str:
    with sessions() as session:
        secret = projects.describe(projects.get_project(session, project_id))["webhook_secret"]
        assert isinstance(secret, str)
        return secret


def body(account: Account, webhook: str, jobs: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "project_id": account.project_id,
        "device_type": "NOOP",
        "sequence_builder": plain(2),
        "configuration": {"noop_sleep_s": 0.01},
        "jobs": [{"runs": 1}] * jobs,
        "webhook": webhook,
        **extra,
    }


# In process: the API writes the outbox row, a WebhookSender with the settings under test
# attempts it, both on the real store.


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"devices": [DeviceType.NOOP]})


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def ended_with_webhook(client: TestClient, account: Account, webhook: str) -> str:
    """An open batch with a webhook, canceled at once: its last transition."""
    created = client.post("/api/v1/batches", json=body(account, webhook, jobs=0, open=True),
                          headers=account.headers)  # fmt: skip
    assert created.status_code == 200, created.text
    batch_id = str(created.json()["data"]["id"])
    canceled = client.patch(f"/api/v2/batches/{batch_id}/cancel", headers=account.headers)
    assert canceled.status_code == 200, canceled.text
    return batch_id


def deliveries(client: TestClient, account: Account, batch_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/batches/{batch_id}/webhooks", headers=account.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "gopher://example.com/", "ftp://example.com/x", "http://"]
)
def test_a_webhook_that_is_not_http_is_refused_at_submit(
    client: TestClient, account: Account, url: str, sessions: sessionmaker[Session]
) -> None:
    response = client.post("/api/v1/batches", json=body(account, url), headers=account.headers)
    assert response.status_code == 422
    assert "webhook" in response.text
    listed = client.get("/api/v1/batches", headers=account.headers).json()["data"]
    assert listed["total"] == 0 if isinstance(listed, dict) else listed == []


def test_a_private_address_is_refused_unless_allowed(
    client: TestClient,
    account: Account,
    settings: Settings,
    sessions: sessionmaker[Session],
    receiver: Receiver,
) -> None:
    # Given a batch whose webhook is this machine, and one whose webhook is a private network
    local = ended_with_webhook(client, account, receiver.url)
    private = ended_with_webhook(client, account, "http://10.0.0.1:8080/hook")
    # When a sender without an allow list attempts them
    WebhookSender(settings, sessions).deliver_once()
    # Then both are refused for good, and nothing reached the receiver
    for batch_id, address in ((local, "127.0.0.1"), (private, "10.0.0.1")):
        (delivery,) = deliveries(client, account, batch_id)
        assert delivery["status"] == "REFUSED"
        assert f"non-public address ({address})" in delivery["last_error"]
    assert receiver.received == []
    # And allowing 127.0.0.1 by name lets this machine's one through (a new batch), while
    # 10.0.0.1 stays refused
    allowed = settings.model_copy(update={"webhook_allow_hosts": ["127.0.0.1"]})
    again = ended_with_webhook(client, account, receiver.url)
    still_private = ended_with_webhook(client, account, "http://10.0.0.1:8080/hook")
    WebhookSender(allowed, sessions).deliver_once()
    assert deliveries(client, account, again)[0]["status"] == "DELIVERED"
    assert deliveries(client, account, still_private)[0]["status"] == "REFUSED"
    assert len(receiver.received) == 1


def test_a_slow_receiver_delays_no_other_delivery(
    client: TestClient,
    account: Account,
    settings: Settings,
    sessions: sessionmaker[Session],
    receiver: Receiver,
) -> None:
    # Given a batch whose receiver hangs until released, then one whose receiver answers
    slow = ended_with_webhook(client, account, f"{receiver.base}/slow")
    fast = ended_with_webhook(client, account, receiver.url)
    allowed = settings.model_copy(update={"webhook_allow_hosts": ["127.0.0.1"]})
    turn = threading.Thread(target=WebhookSender(allowed, sessions).deliver_once)
    turn.start()
    try:
        # Then the second is delivered while the first still waits for its receiver
        wait_for(lambda: deliveries(client, account, fast)[0]["status"] == "DELIVERED", 10,
                 "the fast receiver's delivery")  # fmt: skip
        assert deliveries(client, account, slow)[0]["status"] == "PENDING"
    finally:
        receiver.slow_released.set()
        turn.join(30)
    assert deliveries(client, account, slow)[0]["status"] == "DELIVERED"


@pytest.mark.parametrize(
    "address, public",
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # CGNAT
        ("0.0.0.0", False),
        ("::1", False),
        ("fd00::1", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("2002:a00:1::", False),  # 6to4 of 10.0.0.1
        ("224.0.0.1", False),
    ],
)
def test_only_public_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(address) is public


def test_a_rotated_secret_and_the_previous_one_both_verify(
    client: TestClient,
    account: Account,
    settings: Settings,
    sessions: sessionmaker[Session],
    receiver: Receiver,
) -> None:
    allowed = settings.model_copy(update={"webhook_allow_hosts": ["127.0.0.1"]})
    old = secret_of(sessions, account.project_id)
    with sessions.begin() as session:
        new = projects.rotate_webhook_secret(session, account.project_id).webhook_secret
    assert new and new != old
    ended_with_webhook(client, account, receiver.url)
    WebhookSender(allowed, sessions).deliver_once()
    ((headers, sent),) = receiver.received
    signed = (headers["webhook-id"], int(headers["webhook-timestamp"]), sent)
    assert verify(new, *signed, headers["webhook-signature"])
    assert verify(old, *signed, headers["webhook-signature"])
    assert not verify(old, headers["webhook-id"], int(headers["webhook-timestamp"]) + 1, sent,
                      headers["webhook-signature"])  # fmt: skip


# End to end: API, scheduler and a NOOP worker as processes; retries quick.


@pytest.fixture(scope="module")
def fleet(
    pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestFleet]:
    fleet = TestFleet(pg_url, redis_url, Path(tmp_path_factory.mktemp("webhooks")))
    fleet.env.update(
        ATOMFLEET_DEVICES='["NOOP"]',
        ATOMFLEET_WEBHOOK_ALLOW_HOSTS='["127.0.0.1"]',
        ATOMFLEET_WEBHOOK_RETRY_S=json.dumps([0.3] * 5),
    )
    with fleet.running("api", "scheduler", "worker-NOOP"):
        yield fleet


@pytest.fixture
def user(pg_engine: Engine) -> Account:
    return make_account(make_sessionmaker(pg_engine))


def fleet_deliveries(fleet: TestFleet, user: Account, batch_id: str) -> list[dict[str, Any]]:
    response = fleet.http.get(f"/api/v1/batches/{batch_id}/webhooks", headers=user.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


@pytest.mark.e2e
def test_the_end_of_a_batch_is_posted_signed_with_the_projects_secret(
    fleet: TestFleet, user: Account, receiver: Receiver, pg_engine: Engine
) -> None:
    # Given a batch of 3 jobs with a webhook
    created = fleet.http.post("/api/v1/batches", json=body(user, receiver.url, jobs=3),
                              headers=user.headers)  # fmt: skip
    assert created.status_code == 200, created.text
    batch_id = created.json()["data"]["id"]
    # When it runs to the end, one POST arrives
    wait_for(lambda: receiver.received, 30, "the webhook")
    ((headers, sent),) = receiver.received
    # Then it verifies with the project's secret, carries the ended batch and its jobs
    secret = secret_of(make_sessionmaker(pg_engine), user.project_id)
    assert verify(secret, headers["webhook-id"], int(headers["webhook-timestamp"]), sent,
                  headers["webhook-signature"])  # fmt: skip
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    payload = json.loads(sent)
    assert payload["id"] == batch_id and payload["status"] == "DONE"
    assert sorted(payload["job_ids"]) == sorted(j["id"] for j in created.json()["data"]["jobs"])
    assert "sequence_builder" not in payload
    (delivery,) = fleet_deliveries(fleet, user, batch_id)
    assert delivery["id"] == headers["webhook-id"]
    assert (delivery["status"], delivery["attempts"]) == ("DELIVERED", 1)


@pytest.mark.e2e
def test_failures_are_retried_with_the_same_id_until_a_2xx_then_never_again(
    fleet: TestFleet, user: Account, receiver: Receiver
) -> None:
    # Given a receiver that fails three times (a redirect is not followed: it is no 2xx)
    receiver.answers = [500, 302, 500]
    created = fleet.http.post("/api/v1/batches", json=body(user, receiver.url),
                              headers=user.headers)  # fmt: skip
    batch_id = created.json()["data"]["id"]
    # When the batch ends, four attempts arrive, all with the same webhook-id
    wait_for(lambda: len(receiver.received) >= 4, 30, "four attempts")
    time.sleep(2.0)  # past every retry pause: a fifth would have come by now
    assert len(receiver.received) == 4
    assert len({headers["webhook-id"] for headers, _ in receiver.received}) == 1
    assert len({sent for _, sent in receiver.received}) == 1
    (delivery,) = fleet_deliveries(fleet, user, batch_id)
    assert (delivery["status"], delivery["attempts"]) == ("DELIVERED", 4)
    assert delivery["last_status_code"] == 200


@pytest.mark.e2e
def test_a_410_stops_the_retries(fleet: TestFleet, user: Account, receiver: Receiver) -> None:
    receiver.answers = [410]
    created = fleet.http.post("/api/v1/batches", json=body(user, receiver.url),
                              headers=user.headers)  # fmt: skip
    batch_id = created.json()["data"]["id"]
    wait_for(lambda: [d["status"] for d in fleet_deliveries(fleet, user, batch_id)] == ["GONE"],
             30, "the delivery to be GONE")  # fmt: skip
    time.sleep(1.0)
    assert len(receiver.received) == 1


@pytest.mark.e2e
def test_a_scheduler_killed_before_the_delivery_still_delivers_it_once(
    fleet: TestFleet, user: Account, receiver: Receiver, pg_engine: Engine
) -> None:
    # Given the scheduler is killed outright
    fleet.kill("scheduler", signal.SIGKILL)
    fleet.process("scheduler").wait(10)
    # When a batch ends meanwhile (canceled through the API: its last transition)
    created = fleet.http.post("/api/v1/batches", json=body(user, receiver.url, jobs=2),
                              headers=user.headers)  # fmt: skip
    batch_id = created.json()["data"]["id"]
    canceled = fleet.http.patch(f"/api/v2/batches/{batch_id}/cancel", headers=user.headers)
    assert canceled.json()["data"]["status"] == "CANCELED"
    time.sleep(1.0)
    assert receiver.received == []  # nobody delivers while it is down
    with make_sessionmaker(pg_engine)() as session:
        waiting = session.scalars(
            select(WebhookDelivery.status).where(WebhookDelivery.batch_id == batch_id)
        ).all()
    assert waiting == [DeliveryStatus.PENDING]
    # Then a restarted scheduler delivers it, once
    fleet.start("scheduler")
    wait_for(lambda: receiver.received, 30, "the webhook after the restart")
    time.sleep(1.0)
    ((_, sent),) = receiver.received
    assert json.loads(sent)["status"] == "CANCELED"
