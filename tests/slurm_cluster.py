"""A real single-node SLURM cluster for the tests, self-contained in a temporary directory.

munged with its own key and socket, slurmctld and slurmd on free ports, every file (state,
spool, logs, pid files) under the directory; clients find it through `SLURM_CONF`. Stopped
by PID (never by name). The recipe is /work/shared/notes/infra.md §1 (Debian's 22.05).
A missing SLURM fails the tests: `make tools` installs it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from atomfleet.services import free_port

BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel")
CLUSTER_NAME = "testhpc"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _binary(name: str) -> str:
    for directory in ("/usr/sbin", "/usr/bin"):
        if os.access(f"{directory}/{name}", os.X_OK):
            return f"{directory}/{name}"
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"SLURM is not installed ({name} missing): run `make tools`")
    return found


class SlurmCluster:
    """munged + slurmctld + slurmd in `root`; `env` is what its clients need."""

    def __init__(self, root: Path, cpus: int = 2) -> None:
        for name in BINARIES:
            _binary(name)
        self.root = root
        self.cpus = cpus
        self.conf = root / "slurm.conf"
        self.ctld_port = free_port()
        self.slurmd_port = free_port()
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def write_config(self) -> None:
        d = self.root
        for sub in ("state", "spool", "log"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            f"""ClusterName={CLUSTER_NAME}
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={d}/munge.sock
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=3600
KillWait=2
OverTimeLimit=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} Boards=1 SocketsPerBoard=1 \
CoresPerSocket={self.cpus} ThreadsPerCore=1 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
        )

    def start(self) -> SlurmCluster:
        self.write_config()
        d = self.root
        key = d / "munge.key"
        if not key.exists():
            subprocess.run(
                [_binary("mungekey"), "--create", f"--keyfile={key}", "--bits=1024"], check=True
            )
            key.chmod(0o600)
        subprocess.run(
            [
                _binary("munged"), "--force", f"--socket={d}/munge.sock", f"--key-file={key}",
                f"--pid-file={d}/munged.pid", f"--log-file={d}/log/munged.log",
                f"--seed-file={d}/munge.seed",
            ],
            check=True,
        )  # fmt: skip
        self.start_controller()
        subprocess.run([_binary("slurmd"), "-N", "localhost"], env=self.env, check=True)
        self.wait_idle()
        return self

    def start_controller(self) -> None:
        subprocess.run([_binary("slurmctld")], env=self.env, check=True)

    def wait_idle(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True
            )
            if out.stdout.strip() in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the SLURM node is not idle after {timeout_s} s:\n{self.logs()}")

    def _pid(self, name: str) -> int | None:
        try:
            return int((self.root / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop_controller(self) -> None:
        """Stop slurmctld (by its pid file); the node and its jobs go on."""
        self._kill("slurmctld")

    def _kill(self, *names: str) -> None:
        """SIGTERM, and SIGKILL what still runs 3 s later (a test cluster: nothing to save)."""
        pids = [pid for pid in map(self._pid, names) if pid is not None]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if _alive(pid)]
            time.sleep(0.05)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """Cancel what still runs (its slurmstepd would outlive slurmd), then the daemons."""
        try:
            ids = self.run("squeue", "-h", "-o", "%i").split()
            if ids:
                self.run("scancel", *ids)
                time.sleep(0.5)
        except (OSError, subprocess.SubprocessError):
            pass
        self._kill("slurmd", "slurmctld", "munged")

    def run(self, *args: str) -> str:
        out = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=30)
        return out.stdout

    def job_ids_named(self, name: str) -> list[str]:
        """Every SLURM job (any state the controller remembers) with this job name."""
        out = self.run("squeue", "-h", "-t", "all", "-n", name, "-o", "%i")
        return out.split()

    def logs(self) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*.log")):
            parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)


def run_driver(config_json: str, spec_json: str) -> None:
    """Run a job with the device's driver (in a spawned process a test kills -9)."""
    from core.config import Settings
    from core.messages import JobSpec
    from device_drivers.base import LocalJob
    from device_drivers.registry import load_driver

    spec = JobSpec.model_validate_json(spec_json)
    config = Settings.model_validate_json(config_json)
    load_driver(spec.device_type, config).run(spec, LocalJob())
