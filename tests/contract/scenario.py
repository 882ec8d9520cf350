"""What a researcher does with the real pasqal-cloud SDK (0.22 + pulser-pasqal, or 0.24),
run by that client's own Python against a running atomfleet. Exits non-zero on the first
broken expectation, printing it. Environment: ATOMFLEET_URL, ATOMFLEET_TOKEN, ATOMFLEET_PROJECT.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
import warnings
from importlib.metadata import version
from pathlib import Path

warnings.simplefilter("ignore", DeprecationWarning)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pasqal_cloud.authentication import TokenProvider  # noqa: E402
from pasqal_cloud.utils.filters import (  # noqa: E402
    BatchFilters,
    CancelJobFilters,
    JobFilters,
    PaginationParams,
    RebatchFilters,
)

from tests.sequences import parametrized_sweep  # noqa: E402

SDK_VERSION = version("pasqal-cloud")
LEGACY = SDK_VERSION.startswith("0.22")
if LEGACY:
    from pasqal_cloud import SDK as Client
    from pasqal_cloud import Endpoints
    from pulser_pasqal import EmuMPSBackend as MPSBackend
    from pulser_pasqal import PasqalCloud as Connection
else:
    from pasqal_cloud import PasqalCloudConnection as Connection
    from pasqal_cloud import RemoteMPSBackend as MPSBackend
    from pasqal_cloud.endpoints import Endpoints
    from pasqal_cloud.pasqal_cloud_client import PasqalCloudClient as Client


class StaticToken(TokenProvider):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self) -> str:
        return self.token


def check(condition: object, message: str) -> None:
    if not condition:
        print(f"FAILED [{SDK_VERSION}]: {message}", flush=True)
        sys.exit(1)


def step(name: str) -> None:
    print(f"[{SDK_VERSION}] {name}", flush=True)


BASE = os.environ["ATOMFLEET_URL"]
KW = {
    "token_provider": StaticToken(os.environ["ATOMFLEET_TOKEN"]),
    "endpoints": Endpoints(core=BASE, account=BASE + "/account"),
    "project_id": os.environ["ATOMFLEET_PROJECT"],
}
SEQ = parametrized_sweep(3)
VARS = [{"omega": 4.0 + i, "duration": 300} for i in range(3)]


def main() -> None:
    sdk = Client(**KW)

    step("create_batch(wait=True) and read results")
    batch = sdk.create_batch(
        SEQ, jobs=[{"runs": 20, "variables": v} for v in VARS], device_type="EMU_SV", wait=True
    )
    check(batch.status == "DONE", f"batch ended {batch.status}")
    jobs = batch.ordered_jobs
    check(len(jobs) == 3, f"{len(jobs)} jobs")
    for job in jobs:
        check(job.status == "DONE", f"job {job.id} is {job.status}")
        check(sum(job.result.values()) == 20, f"counts {job.result}")
        check(job.full_result["serialised_results"], "no serialised_results")
    check(sdk.get_job(jobs[0].id).sequence, "a job shows its sequence")

    step("pulser backend: open_batch with several run() calls")
    import pulser

    seq = pulser.Sequence.from_abstract_repr(SEQ)
    backend = MPSBackend(seq, Connection(**KW))
    with backend.open_batch():
        first = backend.run(job_params=[{"runs": 15, "variables": VARS[0]}], wait=False)
        second = backend.run(job_params=[{"runs": 15, "variables": VARS[1]}], wait=False)
    for remote in (first, second):
        deadline = time.monotonic() + 180
        while str(remote.get_batch_status()).split(".")[-1] not in ("DONE", "ERROR"):
            check(time.monotonic() < deadline, "open batch did not finish")
            time.sleep(1)
        counts = remote.results[-1].final_bitstrings
        check(sum(counts.values()) == 15, f"open batch counts {counts}")
    check(first.batch_id == second.batch_id, "both runs went into one batch")
    closed = sdk.get_batch(first.batch_id)
    check(not closed.open, "open_batch() closes the batch on exit")
    check(len(closed.ordered_jobs) == 2, "two jobs in the open batch")

    step("add jobs, retry a job, close")
    open_batch = sdk.create_batch(
        SEQ, jobs=[{"runs": 5, "variables": VARS[0]}], device_type="EMU_TN", open=True
    )
    open_batch.add_jobs([{"runs": 6, "variables": VARS[1]}])
    original = open_batch.ordered_jobs[0]
    open_batch.retry(original)
    listed = sdk.get_jobs(filters=JobFilters(batch_id=open_batch.id)).results
    retried = [j for j in listed if j.parent_id == original.id]
    check(len(listed) == 3 and len(retried) == 1, f"retry: {[j.parent_id for j in listed]}")
    open_batch.close()
    check(sdk.get_batch(open_batch.id).open is False, "closed")
    try:
        sdk.add_jobs(open_batch.id, [{"runs": 5, "variables": VARS[0]}])
        check(False, "adding jobs to a closed batch must fail")
    except BaseException as exc:  # the SDK's errors derive from BaseException
        check("409" in str(exc) or "closed" in str(exc).lower(), f"unexpected error {exc!r}")

    step("cancel a job, a batch, several batches, a batch's jobs")
    pending = [
        sdk.create_batch(
            SEQ, jobs=[{"runs": 5 + i, "variables": v} for i, v in enumerate(VARS)],
            device_type="EMU_TN",
        )
        for _ in range(4)
    ]  # fmt: skip
    job = sdk.cancel_job(pending[0].ordered_jobs[0].id)
    check(job.status == "CANCELED", f"job {job.status}")
    canceled = sdk.cancel_batch(pending[0].id)
    check(canceled.status == "CANCELED", f"batch {canceled.status}")
    bulk = sdk.cancel_batches([pending[1].id, pending[2].id, pending[0].id])
    check(len(bulk.batches) == 2, f"bulk canceled {len(bulk.batches)}")
    check(uuid.UUID(pending[0].id) in bulk.errors, f"bulk errors {bulk.errors}")
    some = sdk.cancel_jobs(pending[3].id, CancelJobFilters(min_runs=6))
    check(len(some.jobs) == 2, f"cancel_jobs {len(some.jobs)}")

    step("rebatch and tags")
    again = sdk.rebatch(batch.id, RebatchFilters(status="DONE"))
    check(again.parent_id == batch.id and again.id != batch.id, "rebatch parent")
    check(len(again.ordered_jobs) == 3, "rebatch jobs")
    tag = f"tag-{uuid.uuid4().hex[:8]}"
    tagged = sdk.set_batch_tags(batch.id, [tag, "other"])
    check(tag in (tagged.tags or []), f"tags {tagged.tags}")

    step("get_batches and get_jobs with filters, over more than 100 items")
    page_tag = f"page-{uuid.uuid4().hex[:8]}"
    for _ in range(101):
        sdk.create_batch(SEQ, jobs=[{"runs": 5, "variables": VARS[0]}], device_type="EMU_TN",
                         tags=[page_tag])  # fmt: skip
    first_page = sdk.get_batches(
        filters=BatchFilters(tag=page_tag), pagination_params=PaginationParams(offset=0, limit=100)
    )
    check(first_page.total == 101 and len(first_page.results) == 100, f"{first_page.total}")
    rest = sdk.get_batches(
        filters=BatchFilters(tag=page_tag), pagination_params=PaginationParams(offset=100)
    )
    check(len(rest.results) == 1, f"second page {len(rest.results)}")
    check(sdk.get_batches(filters=BatchFilters(tag=tag)).results[0].id == batch.id, "tag filter")
    big = sdk.create_batch(
        SEQ, jobs=[{"runs": 5, "variables": VARS[0]} for _ in range(120)], device_type="EMU_TN"
    )
    found = sdk.get_jobs(
        filters=JobFilters(batch_id=big.id, status="PENDING"),
        pagination_params=PaginationParams(offset=100, limit=100),
    )
    check(found.total == 120 and len(found.results) == 20, f"jobs page {found.total}")
    check(len(sdk.get_batch(big.id).ordered_jobs) == 120, "ordered_jobs pages through all")

    step("pulser's QPUBackend on FRESNEL (no device_type: the sequence's device says it)")
    connection = Connection(**KW)
    fresnel = connection.fetch_available_devices()["FRESNEL"]
    on_qpu = pulser.Sequence.from_abstract_repr(SEQ).switch_device(fresnel, strict=True)
    qpu_results = pulser.QPUBackend(on_qpu, connection).run(
        job_params=[{"runs": 30, "variables": VARS[0]}], wait=True
    )
    counts = dict(qpu_results.results[0].final_bitstrings)
    check(sum(counts.values()) == 30, f"QPU counts {counts}")
    check(all(len(bits) == 3 for bits in counts), f"QPU bitstrings {counts}")

    step("device specs")
    specs = sdk.get_device_specs_dict()
    check({"EMU_MPS", "EMU_SV", "EMU_FREE", "FRESNEL"} <= set(specs), f"specs {set(specs)}")
    from pulser.json.abstract_repr.deserializer import deserialize_device

    for text in specs.values():
        deserialize_device(text)

    print(f"[{SDK_VERSION}] all good", flush=True)


if __name__ == "__main__":
    main()
