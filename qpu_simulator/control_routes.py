"""Control endpoints for tests and operators: switch the QPU, inject faults, read counters.

They are not part of the QPU's API: no envelope, no bearer token (bind the simulator to
a private address), and FastAPI's 422 for bad input.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from qpu_simulator.device import specs_of, with_overrides
from qpu_simulator.faults import Faults
from qpu_simulator.protocol import CONTROL_PREFIX, OperationalStatus
from qpu_simulator.qpu import SimulatedQPU


class OperationalChange(BaseModel):
    operational_status: OperationalStatus


class FaultsChange(BaseModel):
    """The whole fault set: a field left out is no fault (`{}` heals the QPU)."""

    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    latency_s: float = Field(default=0.0, ge=0.0, le=60.0)
    job_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)


class SpecsChange(BaseModel):
    """Device fields a calibration changes; each one given replaces the current value."""

    model_config = ConfigDict(extra="forbid")

    max_runs: StrictInt | None = None
    max_atom_num: StrictInt | None = None
    max_sequence_duration: StrictInt | None = None
    max_radial_distance: StrictInt | None = None
    min_atom_distance: float | None = None
    requires_layout: StrictBool | None = None
    accepts_new_layouts: StrictBool | None = None


def control_router(qpu: SimulatedQPU) -> APIRouter:
    router = APIRouter(prefix=CONTROL_PREFIX)

    @router.post("/operational")
    async def set_operational(body: OperationalChange) -> dict[str, Any]:
        qpu.set_operational(body.operational_status)
        return {"operational_status": qpu.operational.value}

    @router.get("/faults")
    async def get_faults() -> dict[str, Any]:
        return asdict(qpu.faults)

    @router.post("/faults")
    async def set_faults(body: FaultsChange) -> dict[str, Any]:
        qpu.faults = Faults(**body.model_dump())
        return asdict(qpu.faults)

    @router.get("/stats")
    async def stats() -> dict[str, Any]:
        return asdict(qpu.stats)

    @router.post("/specs")
    async def change_specs(body: SpecsChange) -> dict[str, Any]:
        try:
            qpu.device = with_overrides(qpu.device, body.model_dump(exclude_unset=True))
        except (TypeError, ValueError) as exc:
            raise HTTPException(422, f"invalid specs: {exc}") from exc
        return {"specs": specs_of(qpu.device)}

    @router.post("/reset")
    async def reset() -> dict[str, Any]:
        qpu.reset()
        return {"reset": True}

    return router
