"""SLURM's command-line clients, through their text formats (SLURM 22.05 and later).

22.05 has no `scontrol --json` and its `sacct --json` reports wrong exit codes, so this
reads `sbatch --parsable`, `scontrol -o show job` (one line of Key=Value) and `sacct -P`.
A finished job is purged from the controller after MinJobAge: `scontrol` then answers
"Invalid job id" (None here), and only `sacct` (with accounting) or the job's own files
still know how it ended. `scancel` of an unknown id exits 0: it is not an error here either.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

from core.errors import AtomfleetError

# A controller that does not answer makes the clients fail after ~10 s; these say so.
_UNREACHABLE = re.compile(
    r"Unable to contact slurm controller|Socket timed out|Connection refused|"
    r"Zero Bytes were transmitted|munge|Communication connection failure|"
    r"Unable to establish|slurm_load_jobs error: Unable",
    re.IGNORECASE,
)
_INVALID_JOB = re.compile(r"Invalid job id", re.IGNORECASE)

# SLURM job states (long names; squeue's and scontrol's).
PENDING_STATES = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "RESIZING"})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "SIGNALING"})


class SlurmError(AtomfleetError):
    """SLURM refused a request (a bad option, a partition it does not have, ...)."""


class SlurmUnreachable(SlurmError):
    """The controller (or munge) does not answer: nothing is known, wait and ask again."""


@dataclass(frozen=True)
class SlurmJobInfo:
    job_id: str
    state: str  # e.g. PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL
    exit_code: str = ""  # exit:signal
    reason: str = ""
    cluster: str = ""

    @property
    def pending(self) -> bool:
        return self.state in PENDING_STATES

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def ended(self) -> bool:
        return not (self.pending or self.running)


def parse_key_values(line: str) -> dict[str, str]:
    """`scontrol -o` output: `Key=Value` pairs separated by spaces (a value may hold
    spaces: a token without `=` continues the previous value)."""
    fields: dict[str, str] = {}
    last = None
    for token in line.strip().split(" "):
        key, sep, value = token.partition("=")
        if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9/_:]*", key):
            fields[key] = value
            last = key
        elif last is not None:
            fields[last] += " " + token
    return fields


def parse_scontrol_job(text: str) -> SlurmJobInfo | None:
    for line in text.splitlines():
        fields = parse_key_values(line)
        if "JobId" in fields and "JobState" in fields:
            return SlurmJobInfo(
                job_id=fields["JobId"],
                state=fields["JobState"].split()[0],
                exit_code=fields.get("ExitCode", ""),
                reason=fields.get("Reason", ""),
                cluster=fields.get("ClusterName", ""),
            )
    return None


def parse_sacct(text: str, job_id: str) -> SlurmJobInfo | None:
    """`sacct -X -P -n -o JobID,State,ExitCode,Cluster` lines; the allocation's own line."""
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 4 and parts[0] == job_id:
            # "CANCELLED by 0" -> CANCELLED
            return SlurmJobInfo(
                job_id=job_id, state=parts[1].split()[0], exit_code=parts[2], cluster=parts[3]
            )
    return None


def parse_sbatch(text: str) -> tuple[str, str | None]:
    """`sbatch --parsable`: `id` or `id;cluster`."""
    line = text.strip().splitlines()[-1] if text.strip() else ""
    job_id, _, cluster = line.partition(";")
    if not job_id.isdigit():
        raise SlurmError(f"sbatch printed no job id: {text.strip()!r}")
    return job_id, cluster or None


class SlurmClient:
    """The clients of one cluster (`slurm_conf`: its SLURM_CONF, None: the default)."""

    def __init__(self, slurm_conf: str | None = None, timeout_s: float = 60.0) -> None:
        self.env = {**os.environ}
        if slurm_conf:
            self.env["SLURM_CONF"] = slurm_conf
        self.timeout_s = timeout_s

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                list(args),
                env=self.env,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise SlurmUnreachable(f"{args[0]} did not answer in {self.timeout_s} s") from exc
        except FileNotFoundError as exc:
            raise SlurmError(f"{args[0]} is not installed on this worker") from exc

    def _failed(self, what: str, out: subprocess.CompletedProcess[str]) -> SlurmError:
        message = out.stderr.strip() or out.stdout.strip() or f"exit code {out.returncode}"
        message = message.splitlines()[-1]
        if _UNREACHABLE.search(out.stderr):
            return SlurmUnreachable(f"{what}: {message}")
        return SlurmError(f"{what}: {message}")

    def submit(self, script: str, chdir: str) -> tuple[str, str | None]:
        """sbatch the script: the job id and, if sbatch says, the cluster."""
        out = self._run("sbatch", "--parsable", f"--chdir={chdir}", script)
        if out.returncode != 0:
            raise self._failed("sbatch", out)
        return parse_sbatch(out.stdout)

    def show_job(self, job_id: str) -> SlurmJobInfo | None:
        """The controller's view of the job; None when it does not know it (purged)."""
        out = self._run("scontrol", "-o", "show", "job", job_id)
        if out.returncode != 0:
            if _INVALID_JOB.search(out.stderr):
                return None
            raise self._failed("scontrol", out)
        return parse_scontrol_job(out.stdout)

    def accounting(self, job_id: str) -> SlurmJobInfo | None:
        """`sacct`'s record of the job; None without accounting or without a record."""
        out = self._run(
            "sacct", "-X", "-P", "-n", "-j", job_id, "-o", "JobID,State,ExitCode,Cluster"
        )
        if out.returncode != 0:
            return None  # "Slurm accounting storage is disabled", or slurmdbd is down
        return parse_sacct(out.stdout, job_id)

    def find_by_name(self, name: str) -> list[str]:
        """Ids of the jobs (any state the controller remembers) named `name`."""
        out = self._run("squeue", "-h", "-t", "all", "-n", name, "-o", "%i")
        if out.returncode != 0:
            raise self._failed("squeue", out)
        return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()]

    def cancel(self, job_id: str) -> None:
        out = self._run("scancel", job_id)
        if out.returncode != 0:
            raise self._failed("scancel", out)

    def cluster_name(self) -> str | None:
        out = self._run("scontrol", "show", "config")
        if out.returncode != 0:
            raise self._failed("scontrol show config", out)
        match = re.search(r"^ClusterName\s*=\s*(\S+)", out.stdout, re.MULTILINE)
        return match.group(1) if match else None
