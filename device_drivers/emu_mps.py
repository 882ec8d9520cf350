"""EMU_MPS (and the legacy EMU_TN): the emu-mps tensor-network emulator."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from emu_mps import MPSBackend
from pulser.backend import EmulatorBackend

from device_drivers.base import ProgressCallback
from device_drivers.emulation import EmulatorDriver
from device_drivers.emulator_progress import step_progress


class Driver(EmulatorDriver):
    backend_type = MPSBackend
    forced_options: ClassVar[dict[str, Any]] = {"log_level": logging.WARN}

    def run_backend(self, backend: EmulatorBackend, progress: ProgressCallback) -> object:
        with step_progress(progress):
            return backend.run()

    def capped_options(self, options: dict[str, Any]) -> dict[str, Any]:
        # emu-mps's default bond dimension (1024) can need tens of GB at 50 atoms.
        cap = self.limits.max_bond_dim
        if cap is None:
            return {}
        return {"max_bond_dim": min(int(options.get("max_bond_dim", cap)), cap)}

    def legacy_options(self, configuration: dict[str, Any]) -> dict[str, Any]:
        # The EMU_TN configuration of pulser-pasqal's EmuTNBackend.
        options: dict[str, Any] = {}
        if isinstance(configuration.get("dt"), int | float):
            options["dt"] = max(1, int(configuration["dt"]))
        if isinstance(configuration.get("max_bond_dim"), int):
            options["max_bond_dim"] = configuration["max_bond_dim"]
        return options
