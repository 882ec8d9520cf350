"""`atomfleet slurm-job SPEC_FILE`: one job on a SLURM compute node (issue 17).

Runs the job in `SPEC_FILE` (spec.json of its attempt's directory, written by the SLURM
worker) with the same driver a pod worker runs, and writes beside it `progress.json`
while it runs, then `result.json` (exit 0) or `error.json` (exit 1); every file by an
atomic rename. It needs neither Redis nor the database: the shared directory is the only
channel (compute nodes usually cannot reach the service).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from core.config import Settings
from core.enums import DeviceType
from core.errors import DriverError
from core.messages import JobSpec

log = logging.getLogger(__name__)


class FileJob:
    """The JobContext of a job on a compute node: progress goes to progress.json."""

    def __init__(self, directory: Path, interval_s: float = 0.5) -> None:
        self.path = directory / "progress.json"
        self.interval_s = interval_s
        self.last = -1
        self.last_at = 0.0

    def progress(self, percent: int) -> None:
        from device_drivers.slurm_files import write_atomic

        percent = max(0, min(100, int(percent)))
        now = time.monotonic()
        if percent <= self.last or now - self.last_at < self.interval_s:
            return
        self.last, self.last_at = percent, now
        write_atomic(self.path, json.dumps({"progress": percent, "at": time.time()}))

    def started(self) -> None:
        pass

    def remember(self, remote_id: str, **details: str) -> None:
        pass

    def recall(self) -> str | None:
        return None

    def canceled(self) -> bool:
        return False  # scancel signals the job: it stops there


def run_spec_file(spec_file: Path) -> int:
    """Run the job; 0 when result.json was written, 1 when error.json was."""
    from device_drivers.registry import load_driver
    from device_drivers.slurm_files import write_atomic

    directory = spec_file.parent
    error_file = directory / "error.json"
    try:
        data = json.loads(spec_file.read_text())
        spec = JobSpec.model_validate(data["spec"])
        device = DeviceType(spec.device_type)
        limits = {k: int(v) for k, v in data.get("limits", {}).items()}
        settings = Settings(
            device_limits={device: limits},
            job_time_limit_s=max(1, limits.get("time_limit_s", 6 * 3600)),
            slurm_devices={},
            slurm_clusters={},
        )
        job = FileJob(directory)
        write_atomic(job.path, json.dumps({"progress": 0, "at": time.time()}))
        driver = load_driver(device, settings, local=True)
        result = driver.run(spec, job)
    except DriverError as exc:
        write_atomic(error_file, json.dumps({"error": str(exc)}))
        return 1
    except Exception as exc:
        log.exception("the job failed")
        write_atomic(
            error_file, json.dumps({"error": f"internal error: {type(exc).__name__}: {exc}"})
        )
        return 1
    write_atomic(directory / "result.json", result.model_dump_json())
    return 0
