"""How well the run-time model predicts emulation times on a mixed workload (`make bench`).

A real fleet (API, scheduler, one EMU_SV and one EMU_FREE worker) runs a training workload
of adiabatic sweeps mixing atom counts (2-8), sequence durations (0.4-6 us) and runs
(20-1000). The model (scheduler.run_times, fit from the store as the scheduler fits it)
then predicts a second, fresh workload before it runs; the bench prints the median absolute
error against the measured run times, beside the error of the constant predictor (the
median run time) the model improves on, per device.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import httpx
import psycopg

from atomfleet.examples import parametrized_sweep
from bench.common import ROOT, account, fleet, machine, services, wait_healthy  # noqa: F401
from core.enums import DeviceType
from scheduler.db import make_engine, make_sessionmaker
from scheduler.run_times import RunTimeModel, RunTimes

DEVICES = (DeviceType.EMU_SV, DeviceType.EMU_FREE)
ATOMS = (2, 3, 4, 6, 8)
DURATIONS = (200, 500, 1000, 2000, 3000)  # ns per ramp; the sequence is twice that
RUNS = (20, 200, 1000)


def workload(rng: random.Random, jobs: int) -> list[tuple[int, int, int]]:
    """(atoms, duration, runs) triples, every atom count equally often."""
    return [(ATOMS[i % len(ATOMS)], rng.choice(DURATIONS), rng.choice(RUNS)) for i in range(jobs)]


def submit(
    client: httpx.Client, user: object, device: DeviceType, mix: list[tuple[int, int, int]]
) -> list[str]:
    """One batch per atom count; returns the job ids in `mix` order."""
    ids: dict[int, list[str]] = {}
    for atoms in sorted({a for a, _, _ in mix}):
        mine = [(d, r) for a, d, r in mix if a == atoms]
        body = {
            "project_id": user.project_id,  # type: ignore[attr-defined]
            "device_type": device.value,
            "sequence_builder": parametrized_sweep(atoms),
            "jobs": [{"runs": r, "variables": {"omega": 5.0, "duration": d}} for d, r in mine],
        }
        response = client.post("/api/v1/batches", json=body, headers=user.headers)  # type: ignore[attr-defined]
        assert response.status_code == 200, response.text[:300]
        ids[atoms] = [job["id"] for job in response.json()["data"]["jobs"]]
    return [ids[a].pop(0) for a, _, _ in mix]


def wait_done(db: psycopg.Connection, job_ids: list[str], timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = db.execute(
            "SELECT count(*) FILTER (WHERE status = 'DONE'), "
            "count(*) FILTER (WHERE status IN ('ERROR', 'CANCELED', 'TIMED_OUT')) "
            "FROM jobs WHERE id = ANY(%s)",
            (job_ids,),
        ).fetchone()
        assert row is not None
        if row[1]:
            raise SystemExit(f"{row[1]} jobs did not succeed")
        if row[0] == len(job_ids):
            return
        time.sleep(0.5)
    raise SystemExit("the workload did not finish in time")


def measured(db: psycopg.Connection, job_ids: list[str]) -> dict[str, float]:
    rows = db.execute(
        "SELECT id, extract(epoch FROM end_timestamp - start_timestamp) FROM jobs "
        "WHERE id = ANY(%s)",
        (job_ids,),
    ).fetchall()
    return {job_id: float(seconds) for job_id, seconds in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=40, help="training jobs per device")
    parser.add_argument("--test", type=int, default=20, help="predicted jobs per device")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"machine: {machine()}")
    with services() as svc:
        url = svc.new_database()
        user = account(url)
        procs, base = fleet(url, svc.redis_url, ATOMFLEET_DEVICES='["EMU_SV", "EMU_FREE"]')
        procs.start("api")
        procs.start("scheduler")
        for device in DEVICES:
            procs.start(f"worker-{device.value}", "worker", "--device", device.value,
                        "--concurrency", "1", "--loglevel", "WARNING")  # fmt: skip
        libpq = url.replace("postgresql+psycopg://", "postgresql://")
        engine = make_engine(url)
        try:
            with (
                httpx.Client(base_url=base, timeout=120) as client,
                psycopg.connect(libpq, autocommit=True) as db,
            ):
                wait_healthy(client)
                train = {d: submit(client, user, d, workload(rng, args.train)) for d in DEVICES}
                wait_done(db, [j for ids in train.values() for j in ids])
                with make_sessionmaker(engine)() as session:
                    models = {d: RunTimes().model(session, d) for d in DEVICES}
                mixes = {d: workload(rng, args.test) for d in DEVICES}
                tests = {d: submit(client, user, d, mixes[d]) for d in DEVICES}
                wait_done(db, [j for ids in tests.values() for j in ids])
                print(f"run-time model, {args.train} training and {args.test} predicted jobs "
                      f"per device (atoms {ATOMS}, runs {RUNS}, sweeps of 0.4-6 us):")  # fmt: skip
                for device in DEVICES:
                    report(device, models[device], mixes[device], measured(db, tests[device]),
                           tests[device])  # fmt: skip
        finally:
            engine.dispose()
            procs.stop()
            svc.drop(url)


def report(
    device: DeviceType,
    model: RunTimeModel,
    mix: list[tuple[int, int, int]],
    actual: dict[str, float],
    job_ids: list[str],
) -> None:
    errors, relative, constant = [], [], []
    for (atoms, duration, runs), job_id in zip(mix, job_ids, strict=True):
        predicted = model.predict(runs, 2 * duration, atoms)
        assert predicted is not None and model.constant_s is not None
        errors.append(abs(predicted - actual[job_id]))
        relative.append(abs(predicted - actual[job_id]) / actual[job_id])
        constant.append(abs(model.constant_s - actual[job_id]))
    spread = f"{min(actual.values()):.2f}-{max(actual.values()):.2f} s"
    print(f"  {device.value:9} measured {spread}; median abs error: model "
          f"{statistics.median(errors):.3f} s ({statistics.median(relative):.0%}), median "
          f"predictor {statistics.median(constant):.3f} s = "
          f"{statistics.median(errors) / statistics.median(constant):.2f}x of it")  # fmt: skip


if __name__ == "__main__":
    main()
