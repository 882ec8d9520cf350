"""What a researcher's SDK (0.22 + pulser-pasqal, or 0.24) does with a batch whose results the
retention deleted: the batch and its jobs read as before, and a result read fails with the
server's 410 (never a crash while listing). Exits non-zero on the first broken expectation.
Environment: ATOMFLEET_URL, ATOMFLEET_TOKEN, ATOMFLEET_PROJECT, ATOMFLEET_BATCH.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

warnings.simplefilter("ignore", DeprecationWarning)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pasqal_cloud.utils.filters import JobFilters  # noqa: E402

from tests.contract.scenario import KW, SDK_VERSION, Client, check, step  # noqa: E402


def main() -> None:
    sdk = Client(**KW)
    batch_id = os.environ["ATOMFLEET_BATCH"]

    step("a purged batch and its jobs read as before")
    batch = sdk.get_batch(batch_id)
    check(batch.status == "DONE", f"batch {batch.status}")
    jobs = batch.ordered_jobs
    check([j.status for j in jobs] == ["DONE", "DONE"], f"jobs {[j.status for j in jobs]}")
    listed = sdk.get_jobs(filters=JobFilters(batch_id=batch_id)).results
    check(len(listed) == 2, f"get_jobs listed {len(listed)}")

    step("its result read fails with the server's 410")
    try:
        result = jobs[0].result
        check(False, f"a purged result was read: {result}")
    except Exception as exc:  # requests.HTTPError, whatever the SDK wraps it in
        response = getattr(exc, "response", None)
        check(response is not None and response.status_code == 410, f"unexpected {exc!r}")
        check("results retention" in response.text, f"no reason given: {response.text}")

    print(f"[{SDK_VERSION}] all good", flush=True)


if __name__ == "__main__":
    main()
