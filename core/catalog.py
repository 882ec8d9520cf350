"""The device catalog: everything atomfleet knows about each device type, in one place.

Intake, the dispatcher, the driver registry and `/api/v1/devices*` all read it; adding a
device is one entry here (plus its driver module). Pulser's backend registry is the model.

Limits are atomfleet's own, checked at intake before anything is built, and sized so that
an accepted job fits a worker of the default size (2 cores, 24 GiB); operators change them
with `ATOMFLEET_DEVICE_LIMITS`. Where the device's Pulser specs are stricter (a QPU's
`max_runs`), the stricter one applies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from core.enums import Backend, DeviceType


class DeviceKind(StrEnum):
    EMULATOR = "EMULATOR"
    QPU = "QPU"
    TEST = "TEST"


class SpecsSource(StrEnum):
    """Where a device's Pulser specs come from."""

    MOCK = "MOCK"  # Pulser's MockDevice renamed to the device type, with our limits
    MIRROR = "MIRROR"  # the specs of the QPU it `mirrors`: a sequence valid here is valid there
    QPU = "QPU"  # fetched from the QPU and refreshed


@dataclass(frozen=True)
class Limits:
    """What one job may ask of a device; checked at intake before anything is built."""

    max_atoms: int
    max_duration_ns: int
    max_runs: int
    # Atoms when the noise model forces a density matrix (4^N instead of 2^N amplitudes);
    # None: the emulator never uses one.
    max_atoms_noisy: int | None = None
    # emu-mps: the bond dimension bounds its memory (4·χ²·N(N+34) bytes, roughly).
    max_bond_dim: int | None = None
    max_trajectories: int = 1000
    # A job running longer ends in ERROR ("time limit exceeded"); on a QPU it is canceled.
    time_limit_s: int = 6 * 3600
    # The sequence's shape, counted in its JSON before Pulser validates or builds anything
    # (scheduler/sequence_structure.py): Pulser's work grows with each of these.
    max_operations: int = 1000
    max_channels: int = 16
    max_samples: int = 1_000_000  # waveform samples: 1 per ns of each operation, all channels
    max_traps: int = 1000  # of the register's layout
    max_variables: int = 100
    max_variable_values: int = 10_000  # all variables' sizes together
    max_expression_depth: int = 32
    max_expression_nodes: int = 10_000

    def merged(self, overrides: dict[str, Any]) -> Limits:
        return replace(self, **overrides)


@dataclass(frozen=True)
class DeviceEntry:
    device_type: DeviceType
    kind: DeviceKind
    driver: str  # the driver module, imported only by workers of this device
    specs: SpecsSource
    limits: Limits
    # Jobs it may run at once across the whole fleet; None: as many as workers take.
    capacity: int | None = None
    accepts_backend_configuration: bool = True
    default_shots: int = 1000
    enabled_by_default: bool = True
    # The worker pool: a CPU-bound emulation per process, or an I/O-bound QPU client.
    pool: str = "prefork"
    description: str = ""
    # Behaviour, read instead of branching on `kind`:
    # Fewest atoms a job's register may hold; what the emulator itself refuses below.
    min_atoms: int = 1
    # A job must say its `runs`: no configuration or default decides for it.
    runs_required: bool = False
    # Jobs are sent only while the device's own operational status (polled by the
    # scheduler) is UP; otherwise they wait PENDING and the device shows DOWN.
    dispatch_only_while_operational: bool = False
    # The QPU whose specs this device takes (SpecsSource.MIRROR).
    mirrors: DeviceType | None = None
    # Where its jobs may run: worker pods, and (emulators) a SLURM cluster (core.slurm_config).
    backends: frozenset[Backend] = frozenset({Backend.POD})

    @property
    def is_emulator(self) -> bool:
        return self.kind == DeviceKind.EMULATOR

    @property
    def remote(self) -> bool:
        """Reached through a QPU HTTP API (its URL in `ATOMFLEET_QPUS`), which also gives its
        specs and operational status."""
        return self.specs == SpecsSource.QPU

    def atoms_problem(self, atoms: int) -> str | None:
        """Why a register of `atoms` atoms cannot run here at all; None when it can."""
        if atoms >= self.min_atoms:
            return None
        return (
            f"{atoms} atom{'s' if atoms != 1 else ''} is under {self.device_type.value}'s "
            f"minimum of {self.min_atoms} atoms"
        )


_EMULATOR_LIMITS = Limits(max_atoms=50, max_duration_ns=100_000, max_runs=10_000)
# emu-mps asserts "designed for more than 2 qubits" on a one-atom register: every job would
# end in ERROR, so intake refuses it (422) instead.
_EMU_MPS_MIN_ATOMS = 2
_POD_OR_SLURM = frozenset({Backend.POD, Backend.SLURM})

CATALOG: dict[DeviceType, DeviceEntry] = {
    entry.device_type: entry
    for entry in [
        DeviceEntry(
            DeviceType.EMU_MPS,
            DeviceKind.EMULATOR,
            driver="device_drivers.emu_mps",
            specs=SpecsSource.MOCK,
            limits=_EMULATOR_LIMITS.merged({"max_bond_dim": 256}),
            min_atoms=_EMU_MPS_MIN_ATOMS,
            description="emu-mps tensor-network (MPS) emulator",
            backends=_POD_OR_SLURM,
        ),
        DeviceEntry(
            DeviceType.EMU_TN,
            DeviceKind.EMULATOR,
            driver="device_drivers.emu_mps",
            specs=SpecsSource.MOCK,
            limits=_EMULATOR_LIMITS.merged({"max_bond_dim": 256}),
            min_atoms=_EMU_MPS_MIN_ATOMS,
            description="legacy name of EMU_MPS, with the legacy `configuration`",
            backends=_POD_OR_SLURM,
        ),
        DeviceEntry(
            DeviceType.EMU_SV,
            DeviceKind.EMULATOR,
            driver="device_drivers.emu_sv",
            specs=SpecsSource.MOCK,
            # 20 atoms: a 16 MiB state, ~0.8 GB peak; noisy runs hold a density matrix.
            limits=_EMULATOR_LIMITS.merged({"max_atoms": 20, "max_atoms_noisy": 10}),
            description="emu-sv state-vector emulator",
            backends=_POD_OR_SLURM,
        ),
        DeviceEntry(
            DeviceType.EMU_FREE,
            DeviceKind.EMULATOR,
            driver="device_drivers.emu_free",
            specs=SpecsSource.MOCK,
            # QuTiP: 16 atoms ~0.45 GB and seconds; 20 atoms 2.5 GB and minutes.
            limits=_EMULATOR_LIMITS.merged({"max_atoms": 16, "max_atoms_noisy": 10}),
            description="pulser-simulation QutipBackendV2 (QuTiP)",
            backends=_POD_OR_SLURM,
        ),
        DeviceEntry(
            DeviceType.EMU_FRESNEL,
            DeviceKind.EMULATOR,
            driver="device_drivers.emu_fresnel",
            specs=SpecsSource.MIRROR,
            # The FRESNEL QPU's own limits apply (its specs), and emu-mps's memory bound.
            limits=_EMULATOR_LIMITS.merged({"max_bond_dim": 256}),
            min_atoms=_EMU_MPS_MIN_ATOMS,  # its driver is emu-mps's
            mirrors=DeviceType.FRESNEL,
            description="emu-mps constrained to the FRESNEL QPU's specs, with its noise model",
            backends=_POD_OR_SLURM,
        ),
        DeviceEntry(
            DeviceType.FRESNEL,
            DeviceKind.QPU,
            driver="device_drivers.qpu",
            specs=SpecsSource.QPU,
            limits=Limits(
                max_atoms=100, max_duration_ns=100_000, max_runs=10_000, time_limit_s=2 * 3600
            ),
            capacity=1,
            accepts_backend_configuration=False,
            enabled_by_default=False,
            pool="threads",
            runs_required=True,
            dispatch_only_while_operational=True,
            description="the FRESNEL QPU, through its HTTP API (one job at a time)",
        ),
        DeviceEntry(
            DeviceType.NOOP,
            DeviceKind.TEST,
            driver="device_drivers.noop",
            specs=SpecsSource.MOCK,
            limits=Limits(max_atoms=100, max_duration_ns=100_000, max_runs=100_000),
            enabled_by_default=False,
            description="returns a tiny valid result at once: measures the fleet itself",
            backends=_POD_OR_SLURM,
        ),
    ]
}


def entry(device_type: DeviceType) -> DeviceEntry:
    try:
        return CATALOG[device_type]
    except KeyError:
        raise LookupError(f"{device_type.value} is not in the device catalog") from None


def default_devices() -> list[DeviceType]:
    return [d for d, e in CATALOG.items() if e.enabled_by_default]
