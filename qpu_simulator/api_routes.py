"""The QPU HTTP API under /api/v1, as Pasqal's QPU clients call it."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from qpu_simulator.device import specs_of
from qpu_simulator.envelope import success
from qpu_simulator.errors import UnauthorizedError
from qpu_simulator.protocol import API_PREFIX
from qpu_simulator.qpu import SimulatedQPU


class JobContext(BaseModel):
    """Who submitted the job (warden sends both ids); kept and echoed, never interpreted."""

    model_config = ConfigDict(extra="allow")

    batch_id: str | None = None
    pasqman_job_id: str | None = None


class JobSubmission(BaseModel):
    nb_run: StrictInt = Field(description="Shots to take; 1 to the device's max_runs.")
    pulser_sequence: str = Field(description="Abstract representation of a built sequence.")
    context: JobContext = Field(default_factory=JobContext)


def bearer_check(token: str | None) -> Any:
    """A dependency that requires `Authorization: Bearer <token>` when a token is set."""
    expected = f"Bearer {token}".encode() if token else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise UnauthorizedError()

    return Depends(check)


def api_router(qpu: SimulatedQPU, token: str | None) -> APIRouter:
    router = APIRouter(prefix=API_PREFIX, dependencies=[bearer_check(token)])

    @router.get("/system/operational")
    async def operational_status() -> dict[str, Any]:
        return success({"operational_status": qpu.operational.value})

    @router.get("/system")
    async def system() -> dict[str, Any]:
        return success({"specs": specs_of(qpu.device)})

    @router.post("/jobs")
    async def create_job(body: JobSubmission) -> dict[str, Any]:
        context = body.context.model_dump(exclude_none=True)
        job = await qpu.submit(body.nb_run, body.pulser_sequence, context)
        return success(job.to_wire())

    @router.get("/jobs/{uid}")
    async def get_job(uid: int) -> dict[str, Any]:
        return success(qpu.job(uid).to_wire())

    @router.put("/jobs/{uid}/cancel")
    async def cancel_job(uid: int) -> dict[str, Any]:
        return success(qpu.cancel(uid).to_wire())

    return router
