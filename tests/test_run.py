"""`atomfleet run` (what `make run` starts): the demo reaches DONE on every emulator, and
Ctrl-C stops every child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from atomfleet.services import free_port

pytestmark = pytest.mark.e2e


def test_atomfleet_run_shows_the_demo_done_and_stops_cleanly(
    redis_url: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "ATOMFLEET_DATA_DIR": str(tmp_path),
        "ATOMFLEET_REDIS_URL": redis_url,
        "ATOMFLEET_NAMESPACE": f"run-{uuid.uuid4().hex[:8]}",
        "ATOMFLEET_API_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("ATOMFLEET_DATABASE_URL", None)  # the embedded default: SQLite in the data dir
    proc = subprocess.Popen(
        [sys.executable, "-m", "atomfleet", "run"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 240
    try:
        for line in proc.stdout:
            lines.append(line)
            if "press Ctrl-C" in line or time.monotonic() > deadline:
                break
        output = "".join(lines)
        for device in ("EMU_MPS", "EMU_SV", "EMU_FREE", "FRESNEL"):
            assert f"{device}: batch DONE {{'DONE': 3}}" in output, output[-3000:]
        assert output.count("top bitstrings") == 12
        assert "100% DONE" in output  # the progress bars reached the end
        namespace = f"ATOMFLEET_NAMESPACE={env['ATOMFLEET_NAMESPACE']}"
        # every device served has a worker, EMU_TN and EMU_FRESNEL included
        assert "atomfleet: workers for EMU_MPS, EMU_TN, EMU_SV, EMU_FREE, EMU_FRESNEL, FRESNEL" in (
            output
        )
        # run, the QPU simulator, api, scheduler, 6 workers
        assert len(processes_with(namespace)) >= 10
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "atomfleet: stopped" in rest
    assert processes_with(f"ATOMFLEET_NAMESPACE={env['ATOMFLEET_NAMESPACE']}") == []


def processes_with(variable: str) -> list[int]:
    """Pids of the live processes whose environment holds `variable` (NAME=value)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if variable.encode() in environ and state != "Z":
            found.append(int(entry.name))
    return found
