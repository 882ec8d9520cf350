"""EMU_SV: the emu-sv state-vector emulator."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from emu_sv import SVBackend
from pulser.backend import EmulatorBackend

from device_drivers.base import ProgressCallback
from device_drivers.emulation import EmulatorDriver
from device_drivers.emulator_progress import step_progress


class Driver(EmulatorDriver):
    backend_type = SVBackend
    forced_options: ClassVar[dict[str, Any]] = {"log_level": logging.WARN}

    def run_backend(self, backend: EmulatorBackend, progress: ProgressCallback) -> object:
        with step_progress(progress):
            return backend.run()
