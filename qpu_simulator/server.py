"""Run the simulated QPU with uvicorn."""

from __future__ import annotations

import logging

from qpu_simulator.config import SimulatorConfig

log = logging.getLogger(__name__)


def serve(
    host: str,
    port: int,
    device: str = "FRESNEL",
    shot_rate_hz: float = 200.0,
    token: str | None = None,
    *,
    config: SimulatorConfig | None = None,
) -> None:
    """Serve until interrupted. `config` supplies the other knobs (threads, log level)."""
    base = config or SimulatorConfig()
    config = base.model_copy(
        update={
            "host": host,
            "port": port,
            "device": device,
            "shot_rate_hz": shot_rate_hz,
            "token": token or None,
        }
    )
    _keep_server_light()
    import uvicorn

    from qpu_simulator.app import create_app

    uvicorn.run(create_app(config), host=host, port=port, log_level=config.log_level)


def _keep_server_light() -> None:
    """The server never computes with torch (the emulator process does): hide it, as the
    API process does, unless the caller already imported it."""
    from core.lightweight import keep_light

    try:
        keep_light()
    except RuntimeError as exc:
        log.info("the server process keeps torch: %s", exc)
