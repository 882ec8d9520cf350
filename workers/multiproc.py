"""Where a worker's prefork children leave their metrics for the parent to serve.

Celery's prefork children run the jobs, so they count them, each in its own process;
prometheus-client's multiprocess mode has every process write its values to files in
`PROMETHEUS_MULTIPROC_DIR`, and the parent's `/metrics` sums them. prometheus-client
chooses the mode when it is first imported, so this runs before anything imports it
(this module imports nothing of it).

The directory is private to one worker's process tree: when unset, a fresh one under the
temporary directory (writable under Kubernetes' read-only root filesystem), removed at
exit; when set, it is honoured and emptied at start, so that files of a previous run in
the same place (a restarted container keeps its emptyDir) are not summed in.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir() -> Path:
    """Set up (and export to the children) this worker's multiprocess directory."""
    if "prometheus_client.values" in sys.modules:
        raise RuntimeError(f"{ENV} must be set before prometheus_client is imported")
    configured = os.environ.get(ENV)
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return path
    path = Path(tempfile.mkdtemp(prefix="atomfleet-worker-metrics-"))
    os.environ[ENV] = str(path)
    owner = os.getpid()

    def _remove() -> None:
        if os.getpid() == owner:  # forked children inherit this handler: only the parent
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(_remove)
    return path
