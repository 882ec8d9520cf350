"""`python -m qpu_simulator`: serve a simulated QPU (flags override ATOMFLEET_QPU_SIMULATOR_*).

`add_arguments` and `serve_from_args` let another command line (`atomfleet qpu-simulator`)
offer the same flags; importing this module stays light (no Pulser, no torch).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from qpu_simulator.config import SimulatorConfig
from qpu_simulator.server import serve


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    defaults = SimulatorConfig()
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--device", default=defaults.device, help="served device's name")
    parser.add_argument(
        "--shot-rate-hz", type=float, default=defaults.shot_rate_hz, help="shots per second"
    )
    parser.add_argument(
        "--token", default=defaults.token, help="require 'Authorization: Bearer TOKEN'"
    )
    parser.add_argument("--torch-threads", type=int, default=defaults.torch_threads)
    parser.add_argument(
        "--log-level", default=defaults.log_level, choices=["debug", "info", "warning", "error"]
    )
    return parser


def serve_from_args(args: argparse.Namespace) -> None:
    config = SimulatorConfig(
        host=args.host,
        port=args.port,
        device=args.device,
        shot_rate_hz=args.shot_rate_hz,
        token=args.token,
        torch_threads=args.torch_threads,
        log_level=args.log_level,
    )
    serve(config.host, config.port, config.device, config.shot_rate_hz, config.token, config=config)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="qpu_simulator",
        description="A simulated neutral-atom QPU serving the QPU HTTP API (/api/v1).",
    )
    serve_from_args(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    main()
