"""The sbatch script of one job: its options from the cluster's configuration and the
device's limits, and the one command it runs (`atomfleet slurm-job SPEC_FILE`)."""

from __future__ import annotations

import math
import shlex

from core.catalog import Limits
from core.slurm_config import SbatchOptions, SlurmCluster


def slurm_time(seconds: int) -> str:
    """`--time` for a limit in seconds: SLURM counts whole minutes, so it is rounded up."""
    minutes = max(1, math.ceil(seconds / 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00"


def job_name(job_id: str, attempt: int, resubmission: int = 0) -> str:
    """SLURM's name of one submission: unique, so a lost submission is found by name."""
    suffix = f"-{resubmission}" if resubmission else ""
    return f"af-{job_id}-{attempt}{suffix}"


def sbatch_options(
    cluster: SlurmCluster, options: SbatchOptions, limits: Limits, name: str, output: str
) -> list[str]:
    args = [
        f"--job-name={name}",
        f"--output={output}",
        "--open-mode=append",
        f"--time={slurm_time(limits.time_limit_s)}",
        "--nodes=1",
        "--ntasks=1",
        f"--cpus-per-task={options.cpus}",
        "--no-requeue",  # a node failure is retried by atomfleet, as a new submission
    ]
    if cluster.partition:
        args.append(f"--partition={cluster.partition}")
    if options.mem:
        args.append(f"--mem={options.mem}")
    if options.gpus:
        kind = f"{options.gpu_type}:" if options.gpu_type else ""
        args.append(f"--gres=gpu:{kind}{options.gpus}")
    args.extend(options.extra_args)
    return args


def sbatch_script(
    cluster: SlurmCluster, options: SbatchOptions, limits: Limits, name: str, attempt_dir: str
) -> str:
    """The whole script: `#SBATCH` lines, the cluster's setup lines, then the job."""
    lines = ["#!/bin/bash"]
    output = f"{attempt_dir}/slurm.out"
    lines += [f"#SBATCH {arg}" for arg in sbatch_options(cluster, options, limits, name, output)]
    # The worker's environment is exported to the job: not its metrics directory.
    lines += ["set -e", "umask 007", "unset PROMETHEUS_MULTIPROC_DIR"]
    if options.gpus == 0:
        lines.append("export CUDA_VISIBLE_DEVICES=")
    lines += list(cluster.setup)
    command = [*cluster.command, "slurm-job", f"{attempt_dir}/spec.json"]
    lines.append("exec " + " ".join(shlex.quote(part) for part in command))
    return "\n".join(lines) + "\n"
