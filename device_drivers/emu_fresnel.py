"""EMU_FRESNEL: emu-mps on sequences held to the FRESNEL QPU's specs, with its noise model.

Intake moved every sequence onto the FRESNEL specs (the QPU's own when one is configured),
so a sequence that runs here runs on the QPU; the emulation takes the device's default
noise model when the configuration gives none.
"""

from __future__ import annotations

from typing import Any, ClassVar

from device_drivers import emu_mps


class Driver(emu_mps.Driver):
    forced_options: ClassVar[dict[str, Any]] = {
        **emu_mps.Driver.forced_options,
        "prefer_device_noise_model": True,
    }
