"""The simulator's configuration, typed and read once (env prefix `ATOMFLEET_QPU_SIMULATOR_`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SimulatorConfig(BaseSettings):
    """Every knob of the simulated QPU. Command-line flags override the environment."""

    model_config = SettingsConfigDict(env_prefix="ATOMFLEET_QPU_SIMULATOR_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8100, ge=0, le=65535)
    device: str = Field(
        default="FRESNEL",
        min_length=1,
        description="Name of the served device: Pulser's AnalogDevice under this name.",
    )
    shot_rate_hz: float = Field(
        default=200.0,
        gt=0,
        description="Shots per second: a job of nb_run shots runs at least nb_run / rate s.",
    )
    token: str | None = Field(
        default=None,
        description="When set, every /api/v1 call needs `Authorization: Bearer <token>`.",
    )
    torch_threads: int = Field(
        default=1, ge=1, description="Threads of the emulator process (the server needs one)."
    )
    log_level: str = "info"
