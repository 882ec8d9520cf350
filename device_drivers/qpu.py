"""A QPU behind its HTTP API (core.qpu_api): submit, poll, cancel, as Pasqal's warden does.

- The job is submitted once: its QPU uid is remembered at once (in Redis and, through an
  event, in the store), and a new attempt (its worker died) resumes polling that uid.
- Before submitting, the driver waits for the QPU to be UP (the job stays PENDING), then
  holds the built sequence to the QPU's current specs (calibration changes them).
- RUNNING is reported when the QPU says it runs the job; cancel and the time limit
  cancel it on the QPU; a QPU silent for `qpu_unreachable_after_s` ends the job in ERROR.
- The result's counter is the QPU's; `serialised_results` is a Pulser `Results` holding
  those bitstrings (`Results.from_final_bitstrings`), which pulser's remote backends read.

A job on the QPU holds no CPU: the worker sleeps between polls (an I/O-bound pool).
"""

from __future__ import annotations

import json
import time
import warnings
from typing import Any, ClassVar

from pulser import Sequence
from pulser.backend import Backend, Results
from pulser.json.abstract_repr.deserializer import deserialize_device

from core.errors import DriverError
from core.messages import JobResult, JobSpec
from core.qpu_api import QpuClient, QpuError, QpuJob, QpuJobStatus, QpuUnreachable
from device_drivers.base import DeviceDriver, JobCanceled, JobContext
from device_drivers.emulation import built_sequence


class Driver(DeviceDriver):
    announces_start: ClassVar[bool] = True

    def _client(self) -> QpuClient:
        url = self.settings.qpus.get(self.device_type)
        if not url:
            raise DriverError(f"{self.device_type.value} has no QPU URL (ATOMFLEET_QPUS)")
        return QpuClient(url, self.settings.qpu_token, retry_s=self.settings.qpu_retry_s)

    def run(self, spec: JobSpec, job: JobContext) -> JobResult:
        client = self._client()
        try:
            uid, seq = self._resume(client, spec, spec.remote_id or job.recall())
            if uid is None:
                seq = self._wait_until_up(client, job, spec)
                uid = self._submit(client, spec, seq, job)
            return self._follow(client, uid, seq, spec, job)
        finally:
            client.close()

    def _resume(
        self, client: QpuClient, spec: JobSpec, remote_id: str | None
    ) -> tuple[int | None, Sequence[Any]]:
        """The uid of the job a previous attempt submitted, if the QPU still knows it."""
        seq = built_sequence(spec)
        if remote_id is None:
            return None, seq
        try:
            client.job(int(remote_id))
        except QpuError as exc:
            if exc.status == 404:
                return None, seq  # the QPU forgot it (it restarted): submit anew
            raise DriverError(f"the QPU does not answer: {exc}") from exc
        return int(remote_id), seq

    def _wait_until_up(self, client: QpuClient, job: JobContext, spec: JobSpec) -> Any:
        """Block (the job stays PENDING) until the QPU is UP; the sequence on its specs."""
        silent_since: float | None = None
        while True:
            if job.canceled():
                raise JobCanceled("canceled before it reached the QPU")
            try:
                if client.operational():
                    return self._on_current_specs(client, spec)
                silent_since = None
            except QpuUnreachable:
                silent_since = silent_since or time.monotonic()
                if time.monotonic() - silent_since > self.settings.qpu_unreachable_after_s:
                    raise DriverError("the QPU did not answer in time") from None
            except QpuError as exc:
                raise DriverError(f"the QPU refused: {exc}") from exc
            time.sleep(self.settings.qpu_poll_s)

    def _on_current_specs(self, client: QpuClient, spec: JobSpec) -> Sequence[Any]:
        device = deserialize_device(json.dumps(client.specs()))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                seq = built_sequence(spec).switch_device(device, strict=True)
                Backend.validate_sequence(seq, mimic_qpu=True)
        except DriverError:
            raise
        except Exception as exc:
            raise DriverError(f"the sequence no longer fits the QPU's specs: {exc}") from exc
        if device.max_runs is not None and (spec.runs or 0) > device.max_runs:
            raise DriverError(f"{spec.runs} runs is over the QPU's maximum of {device.max_runs}")
        return seq

    def _submit(self, client: QpuClient, spec: JobSpec, seq: Sequence[Any], job: JobContext) -> int:
        context = {"batch_id": spec.batch_id, "pasqman_job_id": spec.job_id}
        try:
            submitted = client.submit(spec.runs or 1, seq.to_abstract_repr(), context)
        except QpuError as exc:
            raise DriverError(f"the QPU did not take the job: {exc}") from exc
        job.remember(str(submitted.uid))
        return submitted.uid

    def _follow(
        self, client: QpuClient, uid: int, seq: Sequence[Any], spec: JobSpec, job: JobContext
    ) -> JobResult:
        """Poll the QPU job until it ends; cancel it on the QPU when asked or out of time."""
        deadline = time.monotonic() + self.limits.time_limit_s
        silent_since: float | None = None
        while True:
            if job.canceled():
                _cancel(client, uid)
                raise JobCanceled("canceled on the QPU")
            if time.monotonic() > deadline:
                _cancel(client, uid)
                raise DriverError(f"time limit exceeded ({self.limits.time_limit_s} s)")
            try:
                state = client.job(uid)
                silent_since = None
            except QpuUnreachable:
                silent_since = silent_since or time.monotonic()
                if time.monotonic() - silent_since > self.settings.qpu_unreachable_after_s:
                    raise DriverError("the QPU did not answer in time") from None
                continue
            except QpuError as exc:
                raise DriverError(f"the QPU lost the job: {exc}") from exc
            if state.status != QpuJobStatus.PENDING:
                job.started()
            if state.status.is_terminal:
                return _outcome(state, seq)
            time.sleep(self.settings.qpu_poll_s)


def _cancel(client: QpuClient, uid: int) -> None:
    try:
        client.cancel(uid)
    except QpuError as exc:
        raise DriverError(f"could not cancel the job on the QPU: {exc}") from exc


def _outcome(state: QpuJob, seq: Sequence[Any]) -> JobResult:
    if state.status == QpuJobStatus.ERROR:
        raise DriverError("the QPU ended the job in ERROR")
    if state.status == QpuJobStatus.CANCELED:
        raise DriverError("the job was canceled on the QPU")
    try:
        counter = state.counter()
    except (ValueError, TypeError, AttributeError) as exc:
        raise DriverError(f"the QPU's result is not a counter: {exc}") from exc
    results = Results.from_final_bitstrings(
        tuple(str(q) for q in seq.register.qubit_ids), int(seq.get_duration()), counter
    )
    return JobResult(counter=counter, serialised_results=results.to_abstract_repr())
