"""EMU_FREE: pulser-simulation's QutipBackendV2 (QuTiP).

QuTiP reports progress only through its progress-bar classes, once per evaluation
time; the driver puts its own bar in place of QuTiP's text bar for the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from pulser.backend import EmulatorBackend
from pulser_simulation import QutipBackendV2
from qutip.ui import progressbar

from device_drivers.base import ProgressCallback
from device_drivers.emulation import EmulatorDriver


class Driver(EmulatorDriver):
    backend_type = QutipBackendV2
    forced_options: ClassVar[dict[str, Any]] = {"progress_bar": True}

    def run_backend(self, backend: EmulatorBackend, progress: ProgressCallback) -> object:
        with _qutip_progress(progress):
            return backend.run()


@contextmanager
def _qutip_progress(progress: ProgressCallback) -> Iterator[None]:
    class Bar(progressbar.BaseProgressBar):  # type: ignore[misc]
        def __init__(self, iterations: int = 0, chunk_size: float = 10, **kwargs: Any) -> None:
            super().__init__(iterations, chunk_size, **kwargs)
            progress(0)

        def update(self) -> None:
            self.n += 1
            progress(min(100, int(self.n * 100 // max(1.0, self.N))))

        def finished(self) -> None:
            super().finished()
            progress(100)

    previous = progressbar.progress_bars.get(True)
    progressbar.progress_bars[True] = Bar
    try:
        yield
    finally:
        if previous is None:
            progressbar.progress_bars.pop(True, None)
        else:
            progressbar.progress_bars[True] = previous
