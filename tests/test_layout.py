"""The architecture's top-level packages, pinned: a new one is a design decision."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_top_level_packages_are_exactly_the_architecture_s() -> None:
    found = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    # qpu_simulator: a stand-in QPU shipped for operators and tests (it imports only core).
    assert found == {
        "api",
        "scheduler",
        "workers",
        "device_drivers",
        "core",
        "atomfleet",
        "qpu_simulator",
    }


def test_the_wheel_ships_every_top_level_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    assert packages == {
        "api", "scheduler", "workers", "device_drivers", "core", "atomfleet", "qpu_simulator"
    }  # fmt: skip


def test_the_api_install_needs_no_torch_and_no_emulator() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    base = " ".join(config["project"]["dependencies"])
    for heavy in ("torch", "emu-mps", "emu-sv", "pulser-simulation", "qutip"):
        assert heavy not in base
    emulators = " ".join(config["project"]["optional-dependencies"]["emulators"])
    assert "emu-mps" in emulators and "emu-sv" in emulators and "pulser-simulation" in emulators
