"""Typed configuration, read once from the environment (prefix `ATOMFLEET_`) and passed in."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.enums import DeviceType


class Settings(BaseSettings):
    """Every knob of every atomfleet process. Units are in the names."""

    model_config = SettingsConfigDict(env_prefix="ATOMFLEET_", extra="ignore")

    data_dir: Path = Field(
        default=Path(".atomfleet"),
        description="Where the embedded defaults keep their files (SQLite, Redis data, secret).",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the store; empty means a SQLite file in data_dir.",
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Broker and events.")
    namespace: str = Field(
        default="atomfleet",
        description="Prefix of every Redis key atomfleet writes (queues included), so that "
        "several deployments or test runs can share one Redis.",
    )
    secret_key: str = Field(
        default="",
        description="Key that signs results links; empty means one generated in data_dir.",
    )
    public_url: str = Field(
        default="",
        description="Base URL that results links point to; empty means the request's own URL.",
    )
    devices: list[DeviceType] = Field(
        default=[DeviceType.EMU_MPS, DeviceType.EMU_SV, DeviceType.EMU_FREE, DeviceType.EMU_TN],
        description="Device types this deployment accepts and dispatches (a JSON list).",
    )
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    results_link_ttl_s: int = Field(default=3600, ge=1)
    oauth_token_ttl_s: int = Field(default=24 * 3600, ge=60, description="Tokens of /oauth/token.")
    intake_build_every_job_up_to: int = Field(
        default=1000,
        ge=0,
        description="Batches up to this size have every job built at intake (device limits "
        "checked exactly, ~0.5 ms a job); larger ones have the jobs at each variable's "
        "extremes built, and a job that still cannot build ends in ERROR with the reason.",
    )

    # Scheduler
    dispatch_window_per_device: int = Field(
        default=4,
        ge=1,
        description="Most job messages waiting in Redis per device type; the backlog stays in "
        "the database so that priorities still apply to it.",
    )
    dispatch_poll_s: float = Field(default=1.0, gt=0)
    reconcile_interval_s: float = Field(default=5.0, gt=0)
    lease_ttl_s: int = Field(
        default=30, ge=2, description="A running job whose worker stops renewing is re-queued."
    )
    redispatch_after_s: float = Field(
        default=10.0,
        gt=0,
        description="A dispatched job whose message is in neither queue nor worker is sent again.",
    )
    max_attempts: int = Field(default=3, ge=1)

    # Workers
    worker_concurrency: int = Field(default=1, ge=1)
    torch_threads: int = Field(default=0, ge=0, description="0: cores / concurrency.")
    job_time_limit_s: int = Field(default=6 * 3600, ge=1)
    progress_interval_s: float = Field(default=0.5, gt=0)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'atomfleet.db').resolve()}"

    def resolved_secret_key(self) -> str:
        """The configured key, else one generated once and kept in data_dir."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if not path.exists():
            import secrets

            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()
