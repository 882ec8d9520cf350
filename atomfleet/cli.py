"""The `atomfleet` command: one subcommand per process, plus `run`, `migrate` and `admin`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import timedelta

from core.config import Settings
from core.enums import DeviceType


def _settings() -> Settings:
    return Settings()


def cmd_api(args: argparse.Namespace) -> None:
    import uvicorn

    from api.app import create_app

    settings = _settings()
    host = args.host or settings.api_host
    port = args.port or settings.api_port
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


def cmd_scheduler(args: argparse.Namespace) -> None:
    from scheduler.service import serve

    settings = _settings()
    serve(settings, list(settings.devices))


def cmd_worker(args: argparse.Namespace) -> None:
    from core.names import device_queues
    from workers.app import create_celery

    settings = _settings()
    device = DeviceType(args.device)
    if args.concurrency:
        settings.worker_concurrency = args.concurrency
    app = create_celery(settings, device)
    app.worker_main(
        [
            "worker",
            "--queues", ",".join(device_queues(device)),
            "--concurrency", str(settings.worker_concurrency),
            "--pool", "prefork",
            "--hostname", f"{device.value}.%i@%h",
            "--loglevel", args.loglevel,
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]
    )  # fmt: skip


def cmd_migrate(args: argparse.Namespace) -> None:
    from scheduler.db import engine_from_settings
    from scheduler.migrate import upgrade

    upgrade(engine_from_settings(_settings()))
    print("database is at the newest schema")


def cmd_run(args: argparse.Namespace) -> None:
    from atomfleet.launcher import run

    sys.exit(run(_settings(), demo=not args.no_demo))


def cmd_admin_bootstrap(args: argparse.Namespace) -> None:
    from scheduler import accounts
    from scheduler.db import engine_from_settings, make_sessionmaker

    sessions = make_sessionmaker(engine_from_settings(_settings()))
    with sessions.begin() as session:
        user = accounts.create_user(session, args.user, args.password)
        project = accounts.create_project(session, args.project)
        accounts.add_member(session, user.id, project.id)
        ttl = timedelta(days=args.token_days) if args.token_days else None
        token = accounts.create_token(session, user.id, name="bootstrap", ttl=ttl)
    print(json.dumps({"user_id": user.id, "project_id": project.id, "token": token.token}))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="atomfleet", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)

    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", default=None)
    api.add_argument("--port", type=int, default=None)
    api.set_defaults(func=cmd_api)

    sub.add_parser("scheduler", help="dispatch jobs and consume worker events").set_defaults(
        func=cmd_scheduler
    )

    worker = sub.add_parser("worker", help="run jobs of one device type")
    worker.add_argument("--device", required=True, choices=[d.value for d in DeviceType])
    worker.add_argument("--concurrency", type=int, default=0, help="processes (default 1)")
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(func=cmd_worker)

    run = sub.add_parser("run", help="everything on this machine, with a demo")
    run.add_argument("--no-demo", action="store_true", help="only serve")
    run.set_defaults(func=cmd_run)

    sub.add_parser("migrate", help="upgrade the database schema").set_defaults(func=cmd_migrate)

    admin = sub.add_parser("admin", help="accounts").add_subparsers(dest="admin", required=True)
    boot = admin.add_parser("bootstrap", help="create a user, a project and a token (JSON)")
    boot.add_argument("--user", default="admin")
    boot.add_argument("--password", default=None)
    boot.add_argument("--project", default="default")
    boot.add_argument("--token-days", type=int, default=0, help="token lifetime (0: none)")
    boot.set_defaults(func=cmd_admin_bootstrap)
    return top


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parser().parse_args(argv)
    args.func(args)
