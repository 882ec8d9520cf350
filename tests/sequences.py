"""Small Pulser sequences for tests: 3-4 atoms, so emulators stay fast (`atomfleet.examples`)."""

from __future__ import annotations

from atomfleet.examples import parametrized_sweep, plain

__all__ = ["parametrized_sweep", "plain"]
