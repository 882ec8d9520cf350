"""The emulator drivers on the real emulators (2-3 atoms): shots, configuration, progress."""

from __future__ import annotations

import pytest
from emu_mps import MPSConfig
from pulser.backend import BitStrings, EmulationConfig, Results

from core.config import Settings
from core.enums import DeviceType
from core.errors import DriverError
from core.messages import JobSpec
from device_drivers.base import LocalJob
from device_drivers.registry import load_driver
from tests.sequences import parametrized_sweep, plain

SWEEP = parametrized_sweep(3)
VARS = {"omega": 5.0, "duration": 300}


def spec(device: DeviceType, **fields: object) -> JobSpec:
    base: dict[str, object] = {"job_id": "j", "batch_id": "b", "attempt": 1}
    base.update(device_type=device, sequence=SWEEP, variables=VARS)
    base.update(fields)
    return JobSpec.model_validate(base)


@pytest.mark.parametrize("device", [DeviceType.EMU_MPS, DeviceType.EMU_SV, DeviceType.EMU_FREE])
def test_a_driver_samples_the_runs_and_serializes_its_results(device: DeviceType) -> None:
    progress: list[int] = []
    result = load_driver(device, Settings()).run(spec(device, runs=40), LocalJob(progress.append))
    assert sum(result.counter.values()) == 40
    assert all(len(bits) == 3 and set(bits) <= {"0", "1"} for bits in result.counter)
    assert result.serialised_results is not None
    assert dict(Results.from_abstract_repr(result.serialised_results).final_bitstrings) == (
        result.counter
    )
    assert progress == sorted(progress) and progress[-1] == 100
    assert all(0 <= p <= 100 for p in progress)
    if device != DeviceType.EMU_FREE:  # emu-mps and emu-sv report every time step
        assert any(0 < p < 100 for p in progress)


def test_the_configuration_decides_the_shots_unless_runs_is_given() -> None:
    driver = load_driver(DeviceType.EMU_SV, Settings())
    config = EmulationConfig(observables=[BitStrings(num_shots=33)]).to_abstract_repr()
    counted = driver.run(spec(DeviceType.EMU_SV, backend_configuration=config), LocalJob())
    assert sum(counted.counter.values()) == 33
    given = driver.run(spec(DeviceType.EMU_SV, backend_configuration=config, runs=25),
                       LocalJob())  # fmt: skip
    assert sum(given.counter.values()) == 25
    default = EmulationConfig(observables=[BitStrings()], default_num_shots=17).to_abstract_repr()
    assert sum(driver.run(spec(DeviceType.EMU_SV, backend_configuration=default),
                          LocalJob()).counter.values()) == 17  # fmt: skip


def test_a_configuration_for_another_emulator_still_runs_on_qutip() -> None:
    config = MPSConfig(dt=5, observables=[BitStrings(num_shots=10)]).to_abstract_repr()
    result = load_driver(DeviceType.EMU_FREE, Settings()).run(
        spec(DeviceType.EMU_FREE, backend_configuration=config), LocalJob()
    )
    assert sum(result.counter.values()) == 10


def test_emu_tn_is_served_by_emu_mps() -> None:
    assert type(load_driver(DeviceType.EMU_TN, Settings())) is type(
        load_driver(DeviceType.EMU_MPS, Settings())
    )


def test_a_plain_sequence_runs_without_variables() -> None:
    result = load_driver(DeviceType.EMU_FREE, Settings()).run(
        spec(DeviceType.EMU_FREE, sequence=plain(2), variables=None, runs=8), LocalJob()
    )
    assert sum(result.counter.values()) == 8


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"sequence": "not json"}, "could not be built"),
        ({"variables": {"omega": 100.0, "duration": 300}}, "amplitude"),
        ({"backend_configuration": '{"observables": 3}'}, "backend_configuration"),
    ],
)
def test_a_job_that_cannot_run_raises_a_readable_driver_error(
    fields: dict[str, object], reason: str
) -> None:
    with pytest.raises(DriverError, match=reason):
        load_driver(DeviceType.EMU_SV, Settings()).run(
            spec(DeviceType.EMU_SV, **fields), LocalJob()
        )


def test_no_device_time_limit_exceeds_the_job_time_limit() -> None:
    settings = Settings(
        job_time_limit_s=600, device_limits={DeviceType.FRESNEL: {"time_limit_s": 7200}}
    )
    assert settings.limits(DeviceType.FRESNEL).time_limit_s == 600
    assert settings.limits(DeviceType.EMU_MPS).time_limit_s == 600
    shorter = Settings(device_limits={DeviceType.EMU_SV: {"time_limit_s": 30}})
    assert shorter.limits(DeviceType.EMU_SV).time_limit_s == 30
