"""The app factory: one simulated QPU behind its HTTP API and its control endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from qpu_simulator import http_errors
from qpu_simulator.api_routes import api_router
from qpu_simulator.config import SimulatorConfig
from qpu_simulator.control_routes import control_router
from qpu_simulator.device import simulated_device
from qpu_simulator.emulator import EmulatorWorker
from qpu_simulator.faults import fault_middleware
from qpu_simulator.qpu import SimulatedQPU


def create_app(config: SimulatorConfig) -> FastAPI:
    """A FastAPI app serving one simulated QPU; the QPU's executor runs while the app does."""
    qpu = SimulatedQPU(
        simulated_device(config.device),
        shot_rate_hz=config.shot_rate_hz,
        emulator=EmulatorWorker(torch_threads=config.torch_threads),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await qpu.start()
        try:
            yield
        finally:
            await qpu.stop()

    app = FastAPI(
        title=f"Simulated QPU {config.device}",
        description="The QPU HTTP API served by a simulated neutral-atom QPU (emu-sv).",
        lifespan=lifespan,
    )
    app.state.qpu = qpu
    app.middleware("http")(fault_middleware(lambda: qpu.faults, qpu.rng))
    app.include_router(api_router(qpu, config.token))
    app.include_router(control_router(qpu))
    http_errors.install(app)
    return app
