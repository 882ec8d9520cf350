"""`atomfleet api` behind a TLS-terminating proxy: the proxy's X-Forwarded-Proto makes results
links https when the proxy is trusted (ATOMFLEET_FORWARDED_ALLOW_IPS), and only then.

The proxy is played by a client on 127.0.0.2 (another loopback address), so that it is not
the address uvicorn trusts by default (127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from core.enums import DeviceType, EventKind
from scheduler.db import make_sessionmaker
from tests.conftest import Account, make_account
from tests.fleet import TestFleet
from tests.metrics_support import report, submit

pytestmark = pytest.mark.e2e

PROXY, STRANGER = "127.0.0.2", "127.0.0.3"


@pytest.fixture
def api(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[TestFleet]:
    fleet = TestFleet(pg_url, redis_url, tmp_path / "fleet")
    fleet.env["ATOMFLEET_FORWARDED_ALLOW_IPS"] = PROXY
    with fleet.running("api"):
        yield fleet


def link_from(api: TestFleet, source: str, account: Account, job: str) -> str:
    """The results link as a client at `source` gets it, saying the original request was https."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=api.base, transport=transport, timeout=30) as client:
        response = client.get(
            f"/api/v1/jobs/{job}/results_link",
            headers={**account.headers, "X-Forwarded-Proto": "https"},
        )
    assert response.status_code == 200, response.text
    url: str = response.json()["data"]["results_link"]
    return url


def test_links_are_https_behind_a_trusted_tls_proxy_and_a_stranger_cannot_say_so(
    api: TestFleet, pg_engine: Engine
) -> None:
    # Given a DONE job, and no ATOMFLEET_PUBLIC_URL (links take the request's own URL)
    sessions = make_sessionmaker(pg_engine)
    account = make_account(sessions)
    [job] = submit(sessions, account, DeviceType.EMU_SV, "MEDIUM", 1)
    report(sessions, job, EventKind.DONE)
    # When the trusted proxy forwards a request that came in over https
    # Then the link is https
    assert link_from(api, PROXY, account, job).startswith(f"https://127.0.0.1:{api.port}/")
    # and a client the API does not trust cannot make it so
    assert link_from(api, STRANGER, account, job).startswith(f"http://127.0.0.1:{api.port}/")
