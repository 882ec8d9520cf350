"""Small Pulser sequences: the demo's (`atomfleet run`), the benchmarks' and the tests'.

Product code, so that the demo and `bench/` never import or copy test code; the tests
import them from here too. Pulser is imported when a sequence is made, not with the module.
"""

from __future__ import annotations


def parametrized_sweep(atoms: int = 3, *, rows: int | None = None, detuning: float = 10.0) -> str:
    """An adiabatic sweep on AnalogDevice with variables omega (float) and duration (int):
    `atoms` atoms on a square lattice in `rows` rows (one up to 4 atoms, else two), the
    detuning ramped from -`detuning` to +`detuning` rad/µs."""
    from pulser import Pulse, Sequence
    from pulser.devices import AnalogDevice
    from pulser.register.special_layouts import SquareLatticeLayout
    from pulser.waveforms import RampWaveform

    rows = rows or (1 if atoms <= 4 else 2)
    register = SquareLatticeLayout(4, 4, 6.0).rectangular_register(rows, atoms // rows)
    seq = Sequence(register, AnalogDevice)
    seq.declare_channel("ryd", "rydberg_global")
    omega = seq.declare_variable("omega")
    duration = seq.declare_variable("duration", dtype=int)
    seq.add(Pulse.ConstantDetuning(RampWaveform(duration, 0.0, omega), -detuning, 0.0), "ryd")
    seq.add(Pulse.ConstantAmplitude(omega, RampWaveform(duration, -detuning, detuning), 0.0), "ryd")
    seq.measure("ground-rydberg")
    return str(seq.to_abstract_repr())


def plain(atoms: int = 3) -> str:
    """A non-parametrized sequence on MockDevice: `atoms` atoms in a row, one 300 ns pulse."""
    from pulser import Pulse, Register, Sequence
    from pulser.devices import MockDevice

    reg = Register.rectangle(1, atoms, spacing=6.0, prefix="q")
    seq = Sequence(reg, MockDevice)
    seq.declare_channel("ryd", "rydberg_global")
    seq.add(Pulse.ConstantPulse(300, 5.0, 0.0, 0.0), "ryd")
    seq.measure("ground-rydberg")
    return str(seq.to_abstract_repr())
