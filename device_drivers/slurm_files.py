"""The shared directory between SLURM workers and compute nodes: one directory per attempt.

    <slurm_shared_dir>/<job_id>/<attempt>[-<resubmission>]/
        spec.json       the job (JobSpec) and the limits of its device, written by the worker
        job.sh          the sbatch script
        progress.json   {"progress": 0-100, "at": unix time}, rewritten by the job
        result.json     the JobResult, written once by the job when it succeeded
        error.json      {"error": "..."}, written once by the job when it failed
        slurm.out       SLURM's stdout and stderr of the job

Every file is written to a temporary name and renamed, so a reader never sees half of one.
The worker removes the directory once it reported the job's end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from core.messages import JobResult


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` by renaming a complete temporary file over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AttemptDir:
    """The files of one SLURM submission of one job attempt."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def of(cls, shared_dir: Path, job_id: str, attempt: int, resubmission: int = 0) -> AttemptDir:
        name = str(attempt) if not resubmission else f"{attempt}-{resubmission}"
        return cls(shared_dir / job_id / name)

    @property
    def spec(self) -> Path:
        return self.path / "spec.json"

    @property
    def script(self) -> Path:
        return self.path / "job.sh"

    @property
    def progress_file(self) -> Path:
        return self.path / "progress.json"

    @property
    def result_file(self) -> Path:
        return self.path / "result.json"

    @property
    def error_file(self) -> Path:
        return self.path / "error.json"

    @property
    def output(self) -> Path:
        return self.path / "slurm.out"

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o770)

    def _json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def progress(self) -> int | None:
        data = self._json(self.progress_file)
        if isinstance(data, dict) and isinstance(data.get("progress"), int):
            return int(data["progress"])
        return None

    def result(self) -> JobResult | None:
        if not self.result_file.exists():
            return None
        return JobResult.model_validate_json(self.result_file.read_text())

    def error(self) -> str | None:
        data = self._json(self.error_file)
        if isinstance(data, dict):
            return str(data.get("error") or "the job failed without a reason")
        return None

    def output_tail(self, chars: int = 400) -> str:
        try:
            return self.output.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(OSError):  # the job's directory, once its last attempt is gone
            self.path.parent.rmdir()
