"""Public Device Specs from memory, through a real `atomfleet api` process over HTTP.

Times `GET /api/v1/devices/public-specs` (no token) beside `/healthz` in the same run,
alternating, keep-alive, and the same with `If-None-Match` (a 304). Then, as the issue
measured it, an authenticated list (`GET /api/v1/batches`) alone and while eight anonymous
clients call public-specs as fast as they can (the rate limit is lifted for the benchmark).
Target: public-specs p50 <= 5 ms.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import httpx

from bench.common import account, fleet, machine, p, services, stop, summary, wait_healthy

TARGET_MS = 5.0
SPECS = "/api/v1/devices/public-specs"


def timed(client: httpx.Client, path: str, headers: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    response = client.get(path, headers=headers)
    took = time.perf_counter() - start
    assert response.status_code in (200, 304), response.text[:300]
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--anonymous-clients", type=int, default=8)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with services() as svc:
        url = svc.new_database()
        caller = account(url)
        procs, base = fleet(url, svc.redis_url, ATOMFLEET_RATE_LIMIT_PUBLIC_SPECS="1000000/minute")
        procs.start("api")
        try:
            with httpx.Client(base_url=base, timeout=60) as client:
                wait_healthy(client)
                etag = client.get(SPECS).headers["etag"]
                specs, health, not_modified = [], [], []
                for _ in range(args.rounds):
                    specs.append(timed(client, SPECS))
                    health.append(timed(client, "/healthz"))
                    not_modified.append(timed(client, SPECS, {"If-None-Match": etag}))
                size = len(client.get(SPECS).content)
                print(f"public-specs ({size:,d} bytes), {args.rounds} calls each, alternating:")
                print(f"  /healthz              {summary(health)}")
                print(f"  public-specs          {summary(specs)}")
                print(f"  public-specs (304)    {summary(not_modified)}")
                alone = [timed(client, "/api/v1/batches", caller.headers) for _ in range(50)]
                stop_at = threading.Event()
                anonymous_calls = [0]

                def anonymous() -> None:
                    with httpx.Client(base_url=base, timeout=60) as own:
                        while not stop_at.is_set():
                            own.get(SPECS)
                            anonymous_calls[0] += 1

                threads = [
                    threading.Thread(target=anonymous) for _ in range(args.anonymous_clients)
                ]
                for thread in threads:
                    thread.start()
                time.sleep(1.0)
                started, calls_before = time.perf_counter(), anonymous_calls[0]
                loaded = [timed(client, "/api/v1/batches", caller.headers) for _ in range(50)]
                rate = (anonymous_calls[0] - calls_before) / (time.perf_counter() - started)
                stop_at.set()
                for thread in threads:
                    thread.join()
                print("authenticated GET /api/v1/batches, 50 calls:")
                print(f"  alone                 {summary(alone)}")
                print(
                    f"  beside {args.anonymous_clients} anonymous     {summary(loaded)}  "
                    f"(they made ~{rate:.0f} public-specs calls/s)"
                )
                p50 = statistics.median(specs) * 1000
                verdict = "ok" if p50 <= TARGET_MS else "OVER TARGET"
                print(
                    f"public-specs p50 {p50:.1f} ms (target <= {TARGET_MS:.0f} ms, /healthz "
                    f"p50 {statistics.median(health) * 1000:.1f} ms, p95 "
                    f"{p(specs, 0.95) * 1000:.1f} ms): {verdict}"
                )
        finally:
            stop(procs, svc.redis_url)
            svc.drop(url)


if __name__ == "__main__":
    main()
