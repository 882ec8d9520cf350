"""What the emulator drivers share: sequence and configuration decoding, shots, results."""

from __future__ import annotations

import copy
import functools
import logging
import warnings
from abc import abstractmethod
from typing import Any, ClassVar

from pulser import Sequence
from pulser.backend import BitStrings, EmulationConfig, EmulatorBackend, Results

from core.errors import DriverError
from core.messages import JobResult, JobSpec
from device_drivers.base import DeviceDriver, JobContext, ProgressCallback

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=32)
def _builder(serialized: str) -> Sequence[Any]:
    """Deserialized once per worker process and batch: jobs of a batch share the builder."""
    return Sequence.from_abstract_repr(serialized)


def built_sequence(spec: JobSpec) -> Sequence[Any]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seq = _builder(spec.sequence)
            if seq.is_parametrized():
                seq = seq.build(**(spec.variables or {}))
    except Exception as exc:
        raise DriverError(f"the sequence could not be built: {exc}") from exc
    return seq


def with_shots(observables: list[Any], shots: int | None) -> list[Any]:
    """`observables` whose BitStrings samples `shots` (one is added if there is none)."""
    observables = list(observables)
    index = next((i for i, o in enumerate(observables) if isinstance(o, BitStrings)), None)
    if index is None:
        observables.append(BitStrings(num_shots=shots))
    elif shots is not None:
        bitstrings = copy.copy(observables[index])  # keeps its tag and evaluation times
        bitstrings.num_shots = shots
        observables[index] = bitstrings
    return observables


def counter_of(results: Results) -> dict[str, int]:
    return {bitstring: int(count) for bitstring, count in results.final_bitstrings.items()}


_SHARED_OPTIONS = frozenset(EmulationConfig(observables=[BitStrings()])._backend_options) | {
    "observables",
    "progress_bar",
    "log_level",
}


class EmulatorDriver(DeviceDriver):
    """Template for an emulator: decode, configure, run with progress, collect."""

    backend_type: ClassVar[type[EmulatorBackend]]
    # Options the backend's config always gets (e.g. quiet logging).
    forced_options: ClassVar[dict[str, Any]] = {}

    def run(self, spec: JobSpec, job: JobContext) -> JobResult:
        progress = job.progress
        seq = built_sequence(spec)
        self.check_limits(seq)
        config = self.config_for(spec)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                backend = self.backend_type(seq, config=config)
                results = self.run_backend(backend, progress)
            if not isinstance(results, Results):  # a list when running several sequences
                raise DriverError("the emulator returned no single result")
        except DriverError:
            raise
        except Exception as exc:
            raise DriverError(f"{type(exc).__name__}: {exc}") from exc
        try:
            serialised = results.to_abstract_repr()
        except Exception as exc:
            raise DriverError(f"the results cannot be serialized: {exc}") from exc
        return JobResult(counter=counter_of(results), serialised_results=serialised)

    def check_limits(self, seq: Sequence[Any]) -> None:
        """What intake could only bound for large batches, checked exactly once built."""
        duration = int(seq.get_duration(include_fall_time=True))
        if duration > self.limits.max_duration_ns:
            raise DriverError(
                f"the sequence lasts {duration} ns, over {self.device_type.value}'s limit of "
                f"{self.limits.max_duration_ns} ns"
            )

    @abstractmethod
    def run_backend(self, backend: EmulatorBackend, progress: ProgressCallback) -> object:
        """`backend.run()`, reporting progress while it runs."""

    def config_for(self, spec: JobSpec) -> EmulationConfig[Any]:
        """The backend's own config type built from the job's configuration.

        Options the backend does not know (a config written for another emulator) are
        dropped with a log line rather than failing the job.
        """
        config_type = self.backend_type.config_type
        default = self.backend_type.default_config
        # Without a configuration, only bitstrings: a remote user cannot receive states.
        options: dict[str, Any] = {"observables": []}
        if spec.backend_configuration:
            try:
                generic = EmulationConfig.from_abstract_repr(spec.backend_configuration)
            except Exception as exc:
                raise DriverError(f"invalid backend_configuration: {exc}") from exc
            options = dict(generic._backend_options)
        options.update(self.legacy_options(spec.configuration or {}))
        allowed = default._expected_kwargs() | {"default_num_shots"}
        dropped = sorted(set(options) - allowed)
        if dropped:
            log.info("job %s: ignoring options %s", spec.job_id, dropped)
        options = {k: v for k, v in options.items() if k in allowed}
        options.update(self.forced_options)
        options.update(self.capped_options(options))
        options["observables"] = with_shots(options["observables"], spec.runs)
        try:
            config: EmulationConfig[Any] = config_type(**{**default._backend_options, **options})
        except Exception as exc:
            # Another emulator's option with a value this one rejects (emu-mps's solver
            # "tdvp" on QuTiP): keep the options every emulator shares and try again.
            shared = {k: v for k, v in options.items() if k in _SHARED_OPTIONS}
            if shared == options:
                raise DriverError(f"invalid backend_configuration: {exc}") from exc
            log.info("job %s: keeping only shared options (%s)", spec.job_id, exc)
            try:
                config = config_type(**{**default._backend_options, **shared})
            except Exception as retry_exc:
                raise DriverError(f"invalid backend_configuration: {retry_exc}") from retry_exc
        return config

    def legacy_options(self, configuration: dict[str, Any]) -> dict[str, Any]:
        """Options taken from the deprecated `configuration` object; none by default."""
        return {}

    def capped_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Options the device's limits impose (intake refused explicit values over them)."""
        return {}
