"""Configuration of the SLURM clusters atomfleet may run jobs on (issue 17).

`ATOMFLEET_SLURM_CLUSTERS` (a JSON object) names each cluster and says, per device type,
which `sbatch` options its jobs get; `ATOMFLEET_SLURM_DEVICES` routes device types to a
cluster (e.g. `{"EMU_MPS": "hpc"}`): their worker pool is an I/O-bound one that submits
the jobs to SLURM instead of running them. Example:

    ATOMFLEET_SLURM_CLUSTERS='{"hpc": {"partition": "gpu", "devices": {"EMU_MPS":
        {"cpus": 8, "mem": "64G", "gpus": 1, "extra_args": ["--account=atoms"]}}}}'
    ATOMFLEET_SLURM_DEVICES='{"EMU_MPS": "hpc"}'
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.enums import DeviceType

_MEM = re.compile(r"^[0-9]+[KMGT]?$")


class SbatchOptions(BaseModel):
    """What one device's jobs ask SLURM for (the sbatch options of its script)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpus: int = Field(default=1, ge=1, le=4096, description="--cpus-per-task")
    mem: str | None = Field(
        default=None, description="--mem, e.g. 16G (None: the partition's default)"
    )
    gpus: int = Field(default=0, ge=0, le=64, description="GPUs, as --gres=gpu[:TYPE]:N")
    gpu_type: str | None = Field(default=None, description="The GRES type, e.g. a100")
    extra_args: list[str] = Field(
        default_factory=list, description="More sbatch options, e.g. --account=atoms"
    )

    @field_validator("mem")
    @classmethod
    def _mem(cls, value: str | None) -> str | None:
        if value is not None and not _MEM.match(value):
            raise ValueError(f"mem {value!r} is not a SLURM size such as 16G or 4000M")
        return value

    @field_validator("extra_args")
    @classmethod
    def _extra(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if not a.startswith("-") or "\n" in a]
        if bad:
            raise ValueError(f"extra_args must be sbatch options (-x or --xx=...): {bad}")
        return value


class SlurmCluster(BaseModel):
    """One SLURM cluster; its name is the cluster's own `ClusterName`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = Field(default=None, description="-p; None: the default partition")
    slurm_conf: str | None = Field(
        default=None,
        description="SLURM_CONF for the clients (sbatch, scontrol, ...); None: theirs",
    )
    command: list[str] = Field(
        default_factory=lambda: ["atomfleet"],
        description="How a compute node runs atomfleet (e.g. a venv's bin/atomfleet)",
    )
    setup: list[str] = Field(
        default_factory=list,
        description="Shell lines run before it in the job script (e.g. `module load cuda`)",
    )
    devices: dict[DeviceType, SbatchOptions] = Field(default_factory=dict)

    def options(self, device_type: DeviceType) -> SbatchOptions:
        return self.devices.get(device_type, SbatchOptions())


def unconfigured_slurm_devices(
    slurm_devices: dict[DeviceType, str], clusters: dict[str, SlurmCluster]
) -> list[str]:
    """'DEVICE -> cluster' for each routed device whose cluster is not configured."""
    return [f"{d.value} -> {c!r}" for d, c in slurm_devices.items() if c not in clusters]
