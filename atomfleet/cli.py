"""The `atomfleet` command: one subcommand per process, plus `run`, `migrate` and `admin`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from core.config import Settings
from core.enums import Backend, DeviceType
from core.lightweight import keep_light
from core.logs import configure_logging, log_format_from_env


def _settings() -> Settings:
    return Settings()


def refuse_embedded_defaults(settings: Settings, process: str, *, signs_links: bool) -> None:
    """Exit unless the operator configured what production needs, or said that this is a
    one-machine deployment (`atomfleet run` says so for its children)."""
    if settings.single_machine:
        return
    found = settings.embedded_defaults(signs_links=signs_links)
    if found:
        sys.exit(
            f"atomfleet {process}: refusing to start on the one-machine defaults:\n"
            + "".join(f"  - {item}\n" for item in found)
            + "(or set ATOMFLEET_SINGLE_MACHINE=1 for a one-machine deployment, as "
            "`atomfleet run` does)"
        )


def cmd_api(args: argparse.Namespace) -> None:
    keep_light()
    settings = _settings()
    refuse_embedded_defaults(settings, "api", signs_links=True)
    import uvicorn

    from api.app import create_app

    host = args.host or settings.api_host
    port = args.port or settings.api_port
    # Behind a TLS-terminating proxy, its X-Forwarded-Proto makes links https: trusted only
    # from the proxies named in ATOMFLEET_FORWARDED_ALLOW_IPS.
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="warning",
        # uvicorn's loggers go through core.logs' root handler (JSON too); the access log is
        # api/access_log.py's, with route templates instead of raw paths.
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )


def cmd_scheduler(args: argparse.Namespace) -> None:
    keep_light()
    settings = _settings()
    refuse_embedded_defaults(settings, "scheduler", signs_links=False)
    from scheduler.service import serve

    if args.metrics_port is not None:
        settings.scheduler_metrics_port = args.metrics_port
    serve(settings, list(settings.devices))


def cmd_worker(args: argparse.Namespace) -> None:
    settings = _settings()
    if args.metrics_port is not None:
        settings.worker_metrics_port = args.metrics_port
    if settings.worker_metrics_port:
        # Before anything imports prometheus_client: the children write their counts there.
        from workers.multiproc import prepare_multiprocess_dir

        prepare_multiprocess_dir()
    from core.catalog import entry
    from core.names import device_queues
    from workers.app import create_celery

    device = DeviceType(args.device)
    if args.concurrency:
        settings.worker_concurrency = args.concurrency
    from workers import celery_logs

    celery_logs.install(settings.log_format)
    app = create_celery(settings, device)
    # A device routed to SLURM only submits and polls: an I/O-bound pool, like a QPU's.
    pool = "threads" if settings.backend(device) == Backend.SLURM else entry(device).pool
    app.worker_main(
        [
            *celery_logs.worker_arguments(settings.log_format),  # global options: first
            "worker",
            "--queues", ",".join(device_queues(device)),
            "--concurrency", str(settings.worker_concurrency),
            # prefork for emulations (CPU), threads for a QPU client (it only waits)
            "--pool", pool,
            "--hostname", f"{device.value}.%i@%h",
            "--loglevel", args.loglevel,
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]
    )  # fmt: skip


def cmd_status(args: argparse.Namespace) -> None:
    keep_light()
    from atomfleet.status import print_status

    sys.exit(print_status(_settings()))


def cmd_slurm_job(args: argparse.Namespace) -> None:
    from atomfleet.slurm_job import run_spec_file

    sys.exit(run_spec_file(args.spec_file))


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0 to 65535)")
    return port


def cmd_qpu_simulator(args: argparse.Namespace) -> None:
    from qpu_simulator.__main__ import serve_from_args

    serve_from_args(args)


def cmd_migrate(args: argparse.Namespace) -> None:
    from scheduler.db import engine_from_settings
    from scheduler.migrate import upgrade

    upgrade(engine_from_settings(_settings(), statement_timeout=False))
    print("database is at the newest schema")


def cmd_run(args: argparse.Namespace) -> None:
    from atomfleet.launcher import run

    sys.exit(run(_settings(), demo=not args.no_demo))


def _sessions() -> Any:
    from scheduler.db import engine_from_settings, make_sessionmaker

    return make_sessionmaker(engine_from_settings(_settings()))


def _admin(action: Callable[[Any, argparse.Namespace], dict[str, Any]]) -> Callable[..., None]:
    """Run `action` in one transaction and print its result as JSON (errors on stderr)."""

    def run(args: argparse.Namespace) -> None:
        from core.errors import AtomfleetError

        try:
            with _sessions().begin() as session:
                result = action(session, args)
        except AtomfleetError as exc:
            sys.exit(f"atomfleet admin: {exc}")
        print(json.dumps(result))

    return run


def _ttl(days: int) -> timedelta | None:
    return timedelta(days=days) if days else None


def admin_bootstrap(session: Any, args: argparse.Namespace) -> dict[str, Any]:
    from atomfleet.accounts import bootstrap

    made = bootstrap(session, args.user, args.project, args.password, "bootstrap",
                     _ttl(args.token_days))  # fmt: skip
    return {"user_id": made.user_id, "project_id": made.project_id, "token": made.token}


def admin_user_create(session: Any, args: argparse.Namespace) -> dict[str, Any]:
    from scheduler import accounts

    user = accounts.create_user(session, args.name, args.password)
    return {"user_id": user.id, "name": user.name}


def admin_project_create(session: Any, args: argparse.Namespace) -> dict[str, Any]:
    from scheduler import accounts

    project = accounts.create_project(session, args.name)
    return {"project_id": project.id, "name": project.name}


def admin_project_set(session: Any, args: argparse.Namespace) -> dict[str, Any]:
    from scheduler import projects

    project = projects.configure(
        session,
        args.project_id,
        weight=args.weight,
        max_running_per_device=args.max_running_per_device,
        max_waiting_jobs=args.max_waiting_jobs,
        max_jobs_per_batch=args.max_jobs_per_batch,
    )
    return projects.describe(project)


def admin_project_show(session: Any, args: argparse.Namespace) -> dict[str, Any]:
    from scheduler import projects

    return projects.describe(projects.get_project(session, args.project_id))


def admin_project_rotate(session: Any, args: argparse.Namespace) -> dict[str, Any]:
    from scheduler import projects

    return projects.describe(projects.rotate_webhook_secret(session, args.project_id))


def admin_usage(session: Any, args: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import asdict

    from scheduler import projects

    rows = projects.usage_report(session, _settings().fair_share_half_life_s)
    return {"usage": [{**asdict(r), "device_type": r.device_type.value} for r in rows]}


def admin_member_add(session: Any, args: argparse.Namespace) -> dict[str, Any]:
    from scheduler import accounts

    accounts.add_member(session, args.user_id, args.project_id)
    return {"user_id": args.user_id, "project_id": args.project_id}


def admin_token_create(session: Any, args: argparse.Namespace) -> dict[str, Any]:
    from scheduler import accounts

    issued = accounts.create_token(session, args.user_id, name=args.name, ttl=_ttl(args.days))
    return {"token_id": issued.id, "token": issued.token}


def admin_token_revoke(session: Any, args: argparse.Namespace) -> dict[str, Any]:
    from scheduler import accounts

    accounts.revoke_token(session, args.token_id)
    return {"token_id": args.token_id, "revoked": True}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="atomfleet", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)

    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", default=None)
    api.add_argument("--port", type=int, default=None)
    api.set_defaults(func=cmd_api)

    scheduler = sub.add_parser("scheduler", help="dispatch jobs and consume worker events")
    scheduler.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        help="serve /metrics and /healthz there (default ATOMFLEET_SCHEDULER_METRICS_PORT, "
        "9101; 0: off)",
    )
    scheduler.set_defaults(func=cmd_scheduler)

    worker = sub.add_parser("worker", help="run jobs of one device type")
    worker.add_argument("--device", required=True, choices=[d.value for d in DeviceType])
    worker.add_argument("--concurrency", type=int, default=0, help="processes (default 1)")
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        help="serve /metrics and /healthz there (default ATOMFLEET_WORKER_METRICS_PORT, "
        "9102; 0: off)",
    )
    worker.set_defaults(func=cmd_worker)

    status = sub.add_parser(
        "status", help="jobs, workers and slots per device, from the store and Redis"
    )
    status.set_defaults(func=cmd_status)

    slurm_job = sub.add_parser(
        "slurm-job",
        help="run one job from its spec file on a SLURM compute node (the SLURM worker's "
        "script calls it); progress and result are written beside it",
    )
    slurm_job.add_argument("spec_file", type=Path)
    slurm_job.set_defaults(func=cmd_slurm_job)

    from qpu_simulator.__main__ import add_arguments  # light: no Pulser, no torch

    simulator = sub.add_parser("qpu-simulator", help="serve a simulated QPU (the QPU HTTP API)")
    add_arguments(simulator)
    simulator.set_defaults(func=cmd_qpu_simulator)

    run = sub.add_parser("run", help="everything on this machine, with a demo")
    run.add_argument("--no-demo", action="store_true", help="only serve")
    run.set_defaults(func=cmd_run)

    sub.add_parser("migrate", help="upgrade the database schema").set_defaults(func=cmd_migrate)

    admin = sub.add_parser("admin", help="accounts: users, projects, members, tokens")
    verbs = admin.add_subparsers(dest="admin", required=True)
    boot = verbs.add_parser("bootstrap", help="create a user, a project and a token (JSON)")
    boot.add_argument("--user", default="admin")
    boot.add_argument("--password", default=None)
    boot.add_argument("--project", default="default")
    boot.add_argument("--token-days", type=int, default=0, help="token lifetime (0: none)")
    boot.set_defaults(func=_admin(admin_bootstrap))

    user = verbs.add_parser("user", help="users").add_subparsers(dest="verb", required=True)
    create_user = user.add_parser("create")
    create_user.add_argument("name")
    create_user.add_argument("--password", default=None, help="for POST /oauth/token")
    create_user.set_defaults(func=_admin(admin_user_create))

    project = verbs.add_parser("project", help="projects").add_subparsers(
        dest="verb", required=True
    )
    create_project = project.add_parser("create")
    create_project.add_argument("name")
    create_project.set_defaults(func=_admin(admin_project_create))
    set_project = project.add_parser("set", help="its fair-share weight, caps and quotas")
    set_project.add_argument("project_id")
    set_project.add_argument("--weight", type=float, default=None, help="share (default 1)")
    set_project.add_argument(
        "--max-running-per-device",
        type=int,
        default=None,
        help="most jobs running at once per device (0: no cap)",
    )
    set_project.add_argument(
        "--max-waiting-jobs", type=int, default=None, help="most jobs waiting in all (0: no quota)"
    )
    set_project.add_argument(
        "--max-jobs-per-batch",
        type=int,
        default=None,
        help="most jobs in one batch (0: the deployment's limit)",
    )
    set_project.set_defaults(func=_admin(admin_project_set))
    show_project = project.add_parser("show", help="its settings and webhook secret (JSON)")
    show_project.add_argument("project_id")
    show_project.set_defaults(func=_admin(admin_project_show))
    rotate = project.add_parser(
        "rotate-webhook-secret", help="a new secret; the old one still signs for a day"
    )
    rotate.add_argument("project_id")
    rotate.set_defaults(func=_admin(admin_project_rotate))
    usage = verbs.add_parser("usage", help="per project and device: jobs, run seconds, share")
    usage.set_defaults(func=_admin(admin_usage))

    member = verbs.add_parser("member", help="memberships").add_subparsers(
        dest="verb", required=True
    )
    add = member.add_parser("add", help="make a user a member of a project")
    add.add_argument("user_id")
    add.add_argument("project_id")
    add.set_defaults(func=_admin(admin_member_add))

    token = verbs.add_parser("token", help="API tokens").add_subparsers(dest="verb", required=True)
    create_token = token.add_parser("create", help="a new token, shown once")
    create_token.add_argument("user_id")
    create_token.add_argument("--name", default="")
    create_token.add_argument("--days", type=int, default=0, help="lifetime (0: none)")
    create_token.set_defaults(func=_admin(admin_token_create))
    revoke = token.add_parser("revoke")
    revoke.add_argument("token_id")
    revoke.set_defaults(func=_admin(admin_token_revoke))
    return top


def main(argv: list[str] | None = None) -> None:
    # Text, or one JSON object per line with ATOMFLEET_LOG_FORMAT=json (core/logs.py).
    configure_logging(log_format_from_env(), logging.INFO)
    args = parser().parse_args(argv)
    args.func(args)
