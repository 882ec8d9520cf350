"""Typed configuration, read once from the environment (prefix `ATOMFLEET_`) and passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.catalog import CATALOG, Limits, default_devices, entry
from core.enums import Backend, DeviceType, QueuePriority
from core.slurm_config import SlurmCluster, unconfigured_slurm_devices


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
        description="Keys of results links, comma-separated: links are signed with the first "
        "and accepted under any, so a new key goes first and the old ones follow until "
        "their links expire; empty means one generated in data_dir.",
    )
    public_url: str = Field(
        default="",
        description="Base URL that results links point to; empty means the request's own URL.",
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1,::1",
        description="Addresses or networks (comma-separated, `*` for any) of the proxies whose "
        "X-Forwarded-Proto and X-Forwarded-For the API trusts (uvicorn's "
        "forwarded_allow_ips): behind a TLS-terminating proxy, links take its https.",
    )
    devices: list[DeviceType] = Field(
        default_factory=default_devices,
        description="Device types this deployment accepts and dispatches (a JSON list); by "
        "default the emulators and every QPU of ATOMFLEET_QPUS.",
    )
    qpus: dict[DeviceType, str] = Field(
        default_factory=dict,
        description="QPU device type -> its QPU API base URL (a JSON object), e.g. "
        '{"FRESNEL": "http://127.0.0.1:8800"}. A QPU is served only when listed here.',
    )
    qpu_token: str = Field(default="", description="Bearer token for the QPUs' API, if any.")
    qpu_poll_s: float = Field(
        default=1.0,
        gt=0,
        description="How often a QPU worker polls its job, and the scheduler "
        "the QPU's operational status and specs.",
    )
    qpu_retry_s: float = Field(
        default=1.0, gt=0, description="Pause between retries of a failed QPU API call (10)."
    )
    qpu_unreachable_after_s: float = Field(
        default=600.0,
        gt=0,
        description="A QPU that answers nothing for this long while running a job: the job ends "
        "in ERROR (warden waits forever).",
    )
    device_limits: dict[DeviceType, dict[str, int]] = Field(
        default_factory=dict,
        description="Per-device overrides of the catalog's limits (a JSON object), e.g. "
        '{"EMU_SV": {"max_atoms": 22}}: max_atoms, max_atoms_noisy, max_duration_ns, '
        "max_runs, max_bond_dim, max_trajectories, time_limit_s (at most job_time_limit_s), "
        "and the shape bounds max_operations, max_channels, max_samples, max_traps, "
        "max_variables, max_variable_values, max_expression_depth, max_expression_nodes.",
    )
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    single_machine: bool = Field(
        default=False,
        description="A one-machine deployment (what `atomfleet run` sets for its children): "
        "the API and the scheduler may then use the embedded SQLite store and a secret "
        "generated into data_dir. Without it they refuse to start on those defaults.",
    )
    metrics_host: str = Field(
        default="0.0.0.0",
        description="Address the scheduler's and the workers' /metrics and /healthz listen on.",
    )
    scheduler_metrics_port: int = Field(
        default=9101, ge=0, le=65535, description="The scheduler's /metrics and /healthz; 0: off."
    )
    worker_metrics_port: int = Field(
        default=9102, ge=0, le=65535, description="A worker's /metrics and /healthz; 0: off."
    )
    results_link_ttl_s: int = Field(default=3600, ge=1)
    oauth_token_ttl_s: int = Field(default=24 * 3600, ge=60, description="Tokens of /oauth/token.")
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Largest request body (after gzip decompression) of Create Batch and "
        "Add Jobs; other requests get max_small_body_bytes. Checked while the body streams.",
    )
    max_small_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_jobs_per_batch: int = Field(
        default=10_000, ge=1, description="Most jobs one batch may hold (open batches included)."
    )
    max_sequences_per_request: int = Field(
        default=1_000,
        ge=1,
        description="Most distinct per-job sequences in one request (each is deserialized "
        "and validated, ~6 ms).",
    )
    intake_build_every_job_up_to: int = Field(
        default=1000,
        ge=0,
        description="Batches up to this size have every job built at intake (device limits "
        "checked exactly, ~0.5 ms a job); larger ones have the jobs at each variable's "
        "extremes built, and a job that still cannot build ends in ERROR with the reason.",
    )

    # Scheduler
    dispatch_window_per_device: int = Field(
        default=64,
        ge=1,
        description="Most job messages waiting in Redis per device type. The dispatcher keeps "
        "about dispatch_horizon_s of work there (by the rate workers take it), at least one "
        "message and at most this many; the backlog stays in the database so that the "
        "policy still applies to it.",
    )
    dispatch_horizon_s: float = Field(default=0.2, gt=0)
    dispatch_idle_wait_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest the dispatcher sleeps when nothing wakes it (a safety net: "
        "submissions, workers taking jobs and ended jobs wake it at once).",
    )
    reconcile_interval_s: float = Field(default=2.0, gt=0)
    open_batch_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        description="An open batch that receives no job for this long ends TIMED_OUT (its "
        "pending jobs CANCELED).",
    )
    lease_ttl_s: int = Field(
        default=30, ge=2, description="A running job whose worker stops renewing is re-queued."
    )
    lost_grace_s: float = Field(
        default=5.0,
        gt=0,
        description="A dispatched job neither waiting in a queue nor leased for this long is "
        "lost and goes back to the backlog.",
    )
    max_attempts: int = Field(default=3, ge=1)
    stall_after_s: float = Field(
        default=30.0,
        gt=0,
        description="A worker with a free slot while its device's jobs wait this long in Redis "
        "is not consuming: it exits so that its supervisor restarts it, and the scheduler "
        "reports the device STALLED.",
    )

    # Scheduling a shared fleet
    policy: str = Field(
        default="fair",
        pattern="^(fair|strict)$",
        description="fair: levels first, then fair share across projects by weight; strict: "
        "levels first, then first in first out.",
    )
    fair_share_half_life_s: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="Half-life of the run time a project's share is measured by (SLURM's "
        "PriorityDecayHalfLife).",
    )
    aging_s: dict[QueuePriority, float] = Field(
        default_factory=lambda: {QueuePriority.LOW: 3600.0, QueuePriority.MEDIUM: 3600.0},
        description="A job waiting longer than its level's aging is served one level higher, "
        'and so on (a JSON object, e.g. {"LOW": 3600, "MEDIUM": 3600}): a LOW job cannot '
        "starve.",
    )

    # Webhooks
    webhook_allow_hosts: list[str] = Field(
        default_factory=list,
        description="Host names or addresses a webhook may reach although they are not "
        "public (a JSON list; for local development and tests).",
    )
    webhook_retry_s: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 23000.0],
        description="Pauses between a webhook's attempts (about 24 h in all), each with +-20% "
        "jitter; after the last, the delivery FAILED.",
    )
    webhook_timeout_s: float = Field(default=15.0, gt=0)

    # Retention
    results_retention_days: int = Field(
        default=0,
        ge=0,
        le=36500,
        description="Results (and jobs' own sequences) of jobs that ended more than this many "
        "days ago are deleted by the scheduler; the job rows stay, and their results link "
        "answers 410. 0: kept forever.",
    )
    results_purge_batch_rows: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Most jobs one purge transaction handles, so that it holds its locks "
        "briefly whatever the store's size.",
    )

    # Workers
    worker_concurrency: int = Field(default=1, ge=1)
    torch_threads: int = Field(default=0, ge=0, description="0: cores / concurrency.")
    job_time_limit_s: int = Field(
        default=6 * 3600,
        ge=1,
        description="The longest any job may run (each device's own limit is at most this); "
        "the broker's visibility timeout is above it.",
    )
    progress_interval_s: float = Field(default=0.5, gt=0)

    # Operations (issue 14, section 3: logs, Kubernetes)
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="text: one human line per record; json: one JSON object per line (with "
        "batch_id, job_id, device_type where known) from every process.",
    )
    pod_name: str | None = Field(
        default=None,
        description="The worker's own pod (Kubernetes downward API): set, the worker keeps its "
        "controller.kubernetes.io/pod-deletion-cost annotation at its busy slots, so that a "
        "scale-down takes idle pods first.",
    )

    @field_validator("secret_key")
    @classmethod
    def _no_empty_key(cls, value: str) -> str:
        if value and not all(key.strip() for key in value.split(",")):
            raise ValueError("an empty key in the comma-separated list")
        return value

    @field_validator("devices")
    @classmethod
    def _known_devices(cls, devices: list[DeviceType]) -> list[DeviceType]:
        unknown = [d.value for d in devices if d not in CATALOG]
        if unknown:
            raise ValueError(f"not in the device catalog: {', '.join(unknown)}")
        return list(dict.fromkeys(devices))

    @field_validator("qpus")
    @classmethod
    def _qpus_are_qpus(cls, qpus: dict[DeviceType, str]) -> dict[DeviceType, str]:
        wrong = [d.value for d in qpus if d not in CATALOG or not CATALOG[d].remote]
        if wrong:
            raise ValueError(f"not QPU device types: {', '.join(wrong)}")
        return qpus

    @model_validator(mode="after")
    def _serve_configured_qpus(self) -> Settings:
        if "devices" not in self.model_fields_set:
            self.devices = [*self.devices, *(d for d in self.qpus if d not in self.devices)]
        unconfigured = [d.value for d in self.devices if entry(d).remote and d not in self.qpus]
        if unconfigured:
            raise ValueError(
                f"QPU device types need their URL in ATOMFLEET_QPUS: {', '.join(unconfigured)}"
            )
        return self

    @field_validator("device_limits")
    @classmethod
    def _known_limits(cls, limits: dict[DeviceType, dict[str, Any]]) -> dict[DeviceType, Any]:
        fields = set(Limits.__dataclass_fields__)
        for device, overrides in limits.items():
            unknown = set(overrides) - fields
            if unknown:
                raise ValueError(f"{device.value}: unknown limits {sorted(unknown)}")
        return limits

    def limits(self, device_type: DeviceType) -> Limits:
        """The catalog's limits of a device with this deployment's overrides; its time limit
        at most `job_time_limit_s`."""
        limits = entry(device_type).limits.merged(self.device_limits.get(device_type, {}))
        return limits.merged({"time_limit_s": min(limits.time_limit_s, self.job_time_limit_s)})

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'atomfleet.db').resolve()}"

    def embedded_defaults(self, *, signs_links: bool) -> list[str]:
        """What this process would take from the one-machine defaults instead of the operator:
        the SQLite store in data_dir, and (for a process that signs results links) a secret
        generated into data_dir, which differs between replicas and hosts."""
        found = []
        if not self.database_url:
            found.append(
                f"the embedded SQLite store ({self.resolved_database_url()}): set "
                "ATOMFLEET_DATABASE_URL to your PostgreSQL"
            )
        if signs_links and not self.secret_key:
            found.append(
                f"a secret key generated into {self.data_dir}: set ATOMFLEET_SECRET_KEY, the "
                "same on every API replica"
            )
        return found

    def resolved_secret_keys(self) -> tuple[str, ...]:
        """The configured keys (the first signs), else one generated once and kept in
        data_dir."""
        if self.secret_key:
            return tuple(key.strip() for key in self.secret_key.split(","))
        path = self.data_dir / "secret_key"
        if not path.exists():
            import secrets

            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return (path.read_text().strip(),)

    # Issue 15 (gate): anonymous reads, login, database timeouts
    rate_limit_public_specs: str = Field(
        default="30/minute",
        description="Calls of Public Device Specs per client address (a `limits` rate, moving "
        "window in Redis); beyond, 429 with Retry-After.",
    )
    login_failures_per_user: str = Field(
        default="20/minute",
        description="Failed logins (/oauth/token) per user name; beyond, 429 for that name.",
    )
    login_failures_per_address: str = Field(
        default="60/minute",
        description="Failed logins (/oauth/token) per client address; beyond, 429 for it.",
    )
    login_hash_threads: int = Field(
        default=2, ge=1, description="Threads hashing passwords (argon2id, ~19 MiB each)."
    )
    login_hash_queue: int = Field(
        default=8,
        ge=0,
        description="Logins that may wait for a hashing thread; beyond, 503 with Retry-After.",
    )
    db_connect_timeout_s: int = Field(
        default=3, ge=1, description="Longest wait for a new database connection (libpq)."
    )
    db_statement_timeout_s: float = Field(
        default=4.0,
        ge=0,
        description="Longest one SQL statement may run (PostgreSQL statement_timeout); 0: none.",
    )
    db_pool_timeout_s: float = Field(
        default=3.0, gt=0, description="Longest a request waits for a pooled connection."
    )

    @field_validator(
        "rate_limit_public_specs", "login_failures_per_user", "login_failures_per_address"
    )
    @classmethod
    def _rate_limits_parse(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError(f"not a rate like '30/minute': {value!r}") from None
        return value

    # Intake's budget per request (issue 15, bounds): Pulser's validation and
    # deserialization run in a small pool of processes, each call within these budgets.
    intake_processes: int = Field(
        default=2,
        ge=0,
        description="Processes of the API that validate and deserialize sequences with Pulser, "
        "each call within the budgets below (one call at a time each); 0: in the API process, "
        "without budgets.",
    )
    intake_cpu_budget_s: float = Field(
        default=10.0,
        gt=0,
        description="CPU time one sequence's validation and deserialization may take; past it "
        "the request is a 422 naming this budget and the process is replaced.",
    )
    intake_memory_budget_mb: int = Field(
        default=1024,
        ge=256,
        description="Address space of each intake process (RLIMIT_AS); an allocation past it "
        "is a 422 naming this budget, and the process is replaced (its memory returned).",
    )
    # SLURM (issue 17): device types whose jobs run on a SLURM cluster (core.slurm_config)
    slurm_clusters: dict[str, SlurmCluster] = Field(
        default_factory=dict,
        description="SLURM clusters by their ClusterName (a JSON object): partition, "
        "slurm_conf, command (how a compute node runs atomfleet), setup lines, and per "
        'device sbatch options, e.g. {"hpc": {"partition": "gpu", "devices": {"EMU_MPS": '
        '{"cpus": 8, "mem": "64G", "gpus": 1, "extra_args": ["--account=atoms"]}}}}.',
    )
    slurm_devices: dict[DeviceType, str] = Field(
        default_factory=dict,
        description="Device type -> the SLURM cluster its jobs run on (a JSON object), e.g. "
        '{"EMU_MPS": "hpc"}; the others run in worker pods. A device routed to a cluster '
        "that ATOMFLEET_SLURM_CLUSTERS lacks refuses to start.",
    )
    slurm_shared_dir: Path = Field(
        default=Path("/shared/atomfleet-slurm"),
        description="Directory shared by the SLURM workers and the compute nodes: one "
        "directory per job attempt (spec.json, progress.json, result.json or error.json, "
        "slurm.out).",
    )
    slurm_poll_s: float = Field(
        default=2.0,
        gt=0,
        description="How often a SLURM worker polls its jobs (scontrol, the shared files); "
        "a cancel is checked every 0.2 s whatever this is.",
    )

    @model_validator(mode="after")
    def _slurm_routes(self) -> Settings:
        unconfigured = unconfigured_slurm_devices(self.slurm_devices, self.slurm_clusters)
        if unconfigured:
            raise ValueError(
                "devices routed to a SLURM cluster that ATOMFLEET_SLURM_CLUSTERS does not "
                f"configure: {', '.join(unconfigured)}"
            )
        wrong = [d.value for d in self.slurm_devices if Backend.SLURM not in entry(d).backends]
        if wrong:
            raise ValueError(f"device types that cannot run on SLURM: {', '.join(wrong)}")
        return self

    def backend(self, device_type: DeviceType) -> Backend:
        """Where `device_type`'s jobs run in this deployment."""
        return Backend.SLURM if device_type in self.slurm_devices else Backend.POD

    def slurm_cluster(self, device_type: DeviceType) -> tuple[str, SlurmCluster]:
        """The name and configuration of the cluster `device_type` is routed to."""
        name = self.slurm_devices[device_type]
        return name, self.slurm_clusters[name]
