"""What an attacker or a careless client sends, against a real `atomfleet api` process.

Every case answers a 4xx naming the field, writes nothing, keeps the process's memory
flat and its connection usable; the process never loads torch or matplotlib.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pulser import Pulse, Sequence
from pulser.devices import MockDevice
from pulser.register import Register
from sqlalchemy import Engine, func, select

from scheduler.db import make_sessionmaker
from scheduler.models import Batch, Job
from tests.conftest import Account, make_account
from tests.fleet import TestFleet
from tests.sequences import parametrized_sweep

pytestmark = pytest.mark.e2e

CAP = 4 * 1024 * 1024  # the API's body cap in these tests


@pytest.fixture(scope="module")
def api(
    pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestFleet]:
    fleet = TestFleet(pg_url, redis_url, Path(tmp_path_factory.mktemp("hostile")))
    fleet.env["ATOMFLEET_MAX_BODY_BYTES"] = str(CAP)
    with fleet.running("api"):
        yield fleet


@pytest.fixture(scope="module")
def user(pg_engine: Engine) -> Account:
    return make_account(make_sessionmaker(pg_engine))


def memory_kib(api: TestFleet) -> tuple[int, int]:
    """(current RSS, peak RSS) of the API process, in KiB."""
    status = Path(f"/proc/{api.process('api').pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def rows(pg_engine: Engine, user: Account) -> tuple[int, int]:
    with make_sessionmaker(pg_engine)() as session:
        batches = select(func.count()).select_from(Batch).where(Batch.user_id == user.user_id)
        jobs = select(func.count()).select_from(Job).where(Job.user_id == user.user_id)
        return session.scalar(batches) or 0, session.scalar(jobs) or 0


def create(api: TestFleet, user: Account, **fields: Any) -> httpx.Response:
    body = {
        "project_id": user.project_id,
        "device_type": "EMU_SV",
        "sequence_builder": parametrized_sweep(3),
        "jobs": [{"runs": 10, "variables": {"omega": 5.0, "duration": 300}}],
        **fields,
    }
    return api.http.post("/api/v1/batches", json=body, headers=user.headers)


def description(response: httpx.Response) -> str:
    return " | ".join(response.json()["data"]["description"])


# --- bounded work: a few bytes must not buy gigabytes ---------------------------------------


@pytest.mark.parametrize(
    "duration", [10**9, 10**8, 2 * 10**5], ids=["1e9 ns", "1e8 ns", "just over the limit"]
)
def test_a_huge_duration_variable_is_refused_before_anything_is_built(
    api: TestFleet, user: Account, pg_engine: Engine, duration: int
) -> None:
    # Given a 4 KB request whose job asks for a pulse of `duration` ns on EMU_SV (100 us max)
    before = memory_kib(api)
    # When it is submitted
    started = time.monotonic()
    response = create(
        api, user, jobs=[{"runs": 10, "variables": {"omega": 5.0, "duration": duration}}]
    )
    # Then it is a 422 naming the job's variables and the limit, and nothing moved
    assert response.status_code == 422, response.text
    assert "jobs[0].variables: the sequence lasts at least" in description(response)
    assert "EMU_SV's limit of 100000 ns" in description(response)
    assert time.monotonic() - started < 5  # refused, not built (building 1e8 ns took 6 s)
    assert memory_kib(api)[1] - before[1] < 50 * 1024  # peak grew by less than 50 MB
    assert rows(pg_engine, user) == (0, 0)


def _long_sequence(duration: int) -> str:
    seq = Sequence(Register.rectangle(1, 2, spacing=6.0, prefix="q"), MockDevice)
    seq.declare_channel("ryd", "rydberg_global")
    seq.add(Pulse.ConstantPulse(100, 1.0, 0.0, 0.0), "ryd")
    text = seq.to_abstract_repr()
    return text.replace('"duration": 100', f'"duration": {duration}')


def test_a_built_sequence_with_a_huge_pulse_is_refused_before_it_is_deserialized(
    api: TestFleet, user: Account, pg_engine: Engine
) -> None:
    before = memory_kib(api)
    response = create(
        api, user, sequence_builder=None, jobs=[{"runs": 10, "sequence": _long_sequence(10**9)}]
    )
    assert response.status_code == 422, response.text
    assert "jobs[0].sequence: the sequence lasts at least 1000000000 ns" in description(response)
    assert memory_kib(api)[1] - before[1] < 50 * 1024
    assert rows(pg_engine, user) == (0, 0)


def test_a_waveform_whose_duration_comes_from_a_tiny_peak_is_refused(
    api: TestFleet, user: Account
) -> None:
    # A Blackman waveform of area 1 and peak 1e-9 would last ~2.4e12 ns.
    seq = json.loads(_long_sequence(100))
    pulse = next(op for op in seq["operations"] if op["op"] == "pulse")
    pulse["amplitude"] = {"kind": "blackman_max", "max_val": 1e-9, "area": 1.0}
    response = create(api, user, sequence_builder=None,
                      jobs=[{"runs": 10, "sequence": json.dumps(seq)}])  # fmt: skip
    assert response.status_code == 422, response.text
    assert "jobs[0].sequence: the sequence lasts at least" in description(response)


def test_too_many_atoms_and_too_many_jobs_are_refused_by_name(
    api: TestFleet, user: Account
) -> None:
    wide = Sequence(Register.rectangle(3, 8, spacing=6.0, prefix="q"), MockDevice)  # 24 atoms
    wide.declare_channel("ryd", "rydberg_global")
    wide.add(Pulse.ConstantPulse(100, 1.0, 0.0, 0.0), "ryd")
    response = create(api, user, sequence_builder=wide.to_abstract_repr(), jobs=[{"runs": 5}])
    assert response.status_code == 422
    assert "sequence_builder: 24 atoms is over EMU_SV's limit of 20" in description(response)
    many = create(
        api, user, jobs=[{"runs": 1, "variables": {"omega": 5.0, "duration": 300}}] * 10_001
    )
    assert many.status_code == 422
    assert "jobs: 10001 jobs is over the limit of 10000 jobs per batch" in description(many)


def test_a_gzip_bomb_is_refused_with_flat_memory_while_other_requests_are_served(
    api: TestFleet, user: Account, pg_engine: Engine
) -> None:
    # Given 1 GiB of JSON-ish zeros compressed to about 1 MB
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"0" * (16 * 1024 * 1024)
    bomb = b"".join(deflate.compress(chunk) for _ in range(64)) + deflate.flush()
    assert len(bomb) < 2 * 1024 * 1024
    before = memory_kib(api)
    latencies: list[float] = []
    stop = threading.Event()

    def meanwhile() -> None:
        with httpx.Client(base_url=api.base, timeout=30) as other:
            while not stop.is_set():
                started = time.monotonic()
                assert other.get("/healthz").status_code == 200
                latencies.append(time.monotonic() - started)

    watcher = threading.Thread(target=meanwhile)
    watcher.start()
    while not latencies:  # the other client is being served before the bomb arrives
        time.sleep(0.01)
    try:
        # When it is posted as a Create Batch body
        response = api.http.post(
            "/api/v1/batches",
            content=bomb,
            headers={
                **user.headers,
                "Content-Encoding": "gzip",
                "Content-Type": "application/json",
            },
        )
        served_before = len(latencies)
        time.sleep(0.2)  # and after it
    finally:
        stop.set()
        watcher.join()
    assert len(latencies) > served_before
    # Then it is a 413 naming the cap, the API inflated at most about one cap's worth, and
    # the other client was served in under a second throughout
    assert response.status_code == 413, response.text
    assert f"body: over the limit of {CAP} bytes" in description(response)
    assert memory_kib(api)[1] - before[1] < 3 * CAP // 1024 + 20 * 1024
    assert latencies and max(latencies) < 1.0, latencies
    assert rows(pg_engine, user) == (0, 0)


def test_a_plain_body_over_the_cap_is_refused_while_it_streams(
    api: TestFleet, user: Account
) -> None:
    declared = api.http.post("/api/v1/batches", content=b" " * (CAP + 1), headers=user.headers)
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(CAP // 65536 + 2):
            yield b" " * 65536

    streamed = httpx.post(f"{api.base}/api/v1/batches", content=chunks(), headers=user.headers)
    assert streamed.status_code == 413
    small = api.http.patch(
        f"/api/v1/batches/{'0' * 8}-0000-0000-0000-{'0' * 12}/tags",
        content=b"[" + b'"x",' * 400_000 + b'"x"]',
        headers=user.headers,
    )
    assert small.status_code == 413  # other routes get the small cap (1 MiB)


@pytest.mark.parametrize(
    ("fragment", "field"),
    [
        ('"configuration": {"dt": NaN}', "configuration"),
        ('"configuration": {"a": [1, Infinity]}', "configuration"),
        ('"jobs": [{"runs": 10, "variables": {"omega": -Infinity, "duration": 300}}]', "jobs[0]"),
    ],
)
def test_nan_and_infinity_are_refused_and_nothing_is_written(
    api: TestFleet, user: Account, pg_engine: Engine, fragment: str, field: str
) -> None:
    """JSON has no NaN or Infinity, but parsers accept them: never stored, never a 500."""
    before = rows(pg_engine, user)
    body = {"project_id": user.project_id, "device_type": "EMU_SV",
            "sequence_builder": parametrized_sweep(3),
            "jobs": [{"runs": 10, "variables": {"omega": 5.0, "duration": 300}}]}  # fmt: skip
    key = fragment.split(":", 1)[0].strip('"')
    body.pop(key, None)
    raw = json.dumps(body)[:-1] + ", " + fragment + "}"
    response = api.http.post(
        "/api/v1/batches",
        content=raw.encode(),
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert description(response).startswith(field), description(response)
    assert rows(pg_engine, user) == before


# --- malformed input: 4xx with the field named, and the connection still usable --------------

MISSING = "00000000-0000-0000-0000-000000000000"
MALFORMED: list[tuple[str, str, str, Any, int, str]] = [
    ("NUL in a batch id", "GET", "/api/v2/batches/ab%00cd", None, 404, ""),
    ("NUL in a job id", "PATCH", "/api/v2/jobs/%00/cancel", None, 404, ""),
    ("NUL in a filter", "GET", "/api/v2/jobs?user_id=a%00b", None, 422, "user_id"),
    ("NUL in a tag filter", "GET", "/api/v1/batches?tag=%00", None, 422, "tag"),
    ("not an id", "GET", "/api/v2/jobs?batch_id=nope", None, 422, "batch_id"),
    ("min_jobs past 32 bits", "GET", "/api/v1/batches?min_jobs=2147483648", None, 422, "min_jobs"),
    ("min_runs past 32 bits", "GET", "/api/v2/jobs?min_runs=99999999999", None, 422, "min_runs"),
    ("max_runs past 32 bits", "GET", "/api/v2/jobs?max_runs=2147483648", None, 422, "max_runs"),
    ("offset past 63 bits", "GET", "/api/v2/jobs?offset=9223372036854775808", None, 422, "offset"),
    ("a Unix time for a date", "GET", "/api/v2/jobs?start_date=0.5", None, 422, "start_date"),
    ("a naive date", "GET", "/api/v2/jobs?start_date=2026-01-01T00:00:00", None, 200, ""),
    ("a year past 9999", "GET", "/api/v2/jobs?end_date=99999-01-01", None, 422, "end_date"),
    ("order_by unknown", "GET", "/api/v2/jobs?order_by=nope", None, 422, "order_by"),
    ("NUL in a tag", "PATCH", f"/api/v1/batches/{MISSING}/tags", ["a\x00"], 422, "[0]"),
    ("a lone surrogate in a tag", "PATCH", f"/api/v1/batches/{MISSING}/tags", "RAW:[\"\\ud800\"]",
     422, "[0]"),
    ("a 201-character tag", "PATCH", f"/api/v1/batches/{MISSING}/tags", ["x" * 201], 422, "[0]"),
    ("tags not strings", "PATCH", f"/api/v1/batches/{MISSING}/tags", [1, 2], 422, "[0]"),
    ("a non-ASCII signature", "GET",
     f"/api/v1/results/{MISSING}?expires=9999999999&signature=%C3%A9", None, 422, "signature"),
    ("a signature that does not match", "GET",
     f"/api/v1/results/{MISSING}?expires=9999999999&signature=abcd", None, 404, ""),
    ("cancel unknown batch ids", "PATCH", "/api/v1/batches/cancel", {"batch_ids": ["x\x00"]},
     422, "batch_ids"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [m[1:] for m in MALFORMED],
    ids=[m[0] for m in MALFORMED],
)
def test_malformed_input_is_a_4xx_naming_the_field_and_the_connection_survives(
    api: TestFleet, user: Account, method: str, path: str, body: Any, status: int, field: str
) -> None:
    kwargs: dict[str, Any] = {"headers": dict(user.headers)}
    if isinstance(body, str) and body.startswith("RAW:"):
        kwargs["content"] = body.removeprefix("RAW:").encode()
        kwargs["headers"]["Content-Type"] = "application/json"
    elif body is not None:
        kwargs["json"] = body
    response = api.http.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    if field:
        assert any(d.startswith(f"{field}") for d in response.json()["data"]["description"])
    # the same connection serves the next request
    assert api.http.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("form", "error"),
    [
        (b"grant_type=password&username=\xff\xfe&password=x", "invalid_request"),
        (b"grant_type=password&username=a%00b&password=x", "invalid_request"),
        (b"grant_type=client_credentials", "unsupported_grant_type"),
    ],
    ids=["not UTF-8", "NUL", "another grant"],
)
def test_a_malformed_token_request_is_a_400(api: TestFleet, form: bytes, error: str) -> None:
    response = api.http.post(
        "/oauth/token",
        content=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert api.http.get("/healthz").status_code == 200


def test_the_api_process_loads_neither_torch_nor_matplotlib(api: TestFleet) -> None:
    maps = Path(f"/proc/{api.process('api').pid}/maps").read_text()
    assert "libtorch" not in maps
    assert "matplotlib" not in maps  # its compiled modules (ft2font, _path) are never loaded
    assert memory_kib(api)[0] < 200 * 1024
