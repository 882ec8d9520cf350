"""Regenerate the images' lock files (`make lock`): every package pinned with its sha256.

deploy/docker/locks/
- build.txt: the build backend pyproject.toml names; the images' `wheel` stage builds the
  project's wheel with it, offline.
- api.txt: pyproject.toml's dependencies under constraints.txt (no torch, no emulator).
- worker.txt: the same with the `emulators` extra and torch's CPU build, `torch==X+cpu`
  where X is the version constraints.txt pins.

Each lock is resolved by `uv pip compile` for the images' interpreter and platform (CPython
3.11 on x86_64 glibc: python:3.11-slim-bookworm), not for the machine that runs this, with
no uv configuration read. It keeps the pins it already has (uv prefers the output file's
pins), so regenerating after a new dependency adds that dependency and moves nothing else;
`--upgrade` moves every pin to the newest release allowed.

The first line of a lock is the sha256 of what it was resolved from (`fingerprint`);
tests/test_images.py recomputes it and asks for `make lock` when they differ.

torch's CPU wheels are not on PyPI but on PyTorch's CPU index. The lock holds the sha256 of
the wheel found there, where TORCH_CPU_WHEELS says (a directory or a page of links), else
in pip's find-links (PIP_FIND_LINKS: this project's machines keep a copy of PyTorch's files
there), else on PyTorch's index itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LOCKS_DIR = ROOT / "deploy" / "docker" / "locks"
LOCKS = ("build", "api", "worker")
# The images' interpreter and platform: python:3.11-slim-bookworm (glibc 2.36) on amd64.
PYTHON_VERSION = "3.11"
PYTHON_PLATFORM = "x86_64-manylinux_2_28"
PYTORCH_CPU_WHEELS = "https://download.pytorch.org/whl/cpu/torch/"
FINGERPRINT_PREFIX = "# inputs sha256: "


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def constraint_lines() -> list[str]:
    """constraints.txt without comments and blank lines."""
    text = (ROOT / "constraints.txt").read_text()
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def torch_cpu_requirement() -> str:
    """`torch==X+cpu`, X being the torch version constraints.txt pins."""
    for line in constraint_lines():
        pinned = re.fullmatch(r"torch\s*==\s*([\w.]+)", line)
        if pinned:
            return f"torch=={pinned.group(1)}+cpu"
    raise SystemExit("constraints.txt pins no torch (torch==X): the worker lock needs one")


def inputs(name: str) -> dict[str, Any]:
    """Everything lock `name` is resolved from: what `uv pip compile` reads, and its target."""
    project = _pyproject()
    found: dict[str, Any] = {"python": PYTHON_VERSION, "platform": PYTHON_PLATFORM}
    if name == "build":
        return {**found, "requirements": project["build-system"]["requires"]}
    found |= {
        "requires-python": project["project"]["requires-python"],
        "dependencies": project["project"]["dependencies"],
        "constraints": constraint_lines(),
    }
    if name == "worker":
        found["emulators"] = project["project"]["optional-dependencies"]["emulators"]
        found["requirements"] = [torch_cpu_requirement()]
    return found


def fingerprint(name: str) -> str:
    """The sha256 of lock `name`'s inputs, as its first line records it."""
    canonical = json.dumps(inputs(name), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def recorded_fingerprint(name: str) -> str | None:
    """The fingerprint lock `name` was generated from (None: no lock, or not ours)."""
    path = LOCKS_DIR / f"{name}.txt"
    if not path.exists():
        return None
    first = path.read_text().partition("\n")[0]
    return first.removeprefix(FINGERPRINT_PREFIX) if first.startswith(FINGERPRINT_PREFIX) else None


def torch_wheel_sources() -> list[str]:
    chosen = os.environ.get("TORCH_CPU_WHEELS") or os.environ.get("PIP_FIND_LINKS")
    return chosen.split() if chosen else [PYTORCH_CPU_WHEELS]


def _uv() -> str:
    from uv import find_uv_bin  # the dev dependency `uv`

    return str(find_uv_bin())


def compile_lock(name: str, upgrade: bool) -> None:
    """Resolve lock `name` with uv into deploy/docker/locks/NAME.txt, fingerprint first."""
    out = LOCKS_DIR / f"{name}.txt"
    argv = [_uv(), "pip", "compile", "--no-config", "--quiet", "--generate-hashes"]
    argv += ["--python-version", PYTHON_VERSION, "--python-platform", PYTHON_PLATFORM]
    argv += ["--custom-compile-command", "make lock", "--output-file", str(out.relative_to(ROOT))]
    argv += ["--upgrade"] if upgrade else []
    spec = inputs(name)
    if name != "build":
        argv += ["pyproject.toml", "--constraint", "constraints.txt"]
    if name == "worker":
        argv += ["--extra", "emulators"]
        for source in torch_wheel_sources():
            argv += ["--find-links", source]
    stdin = "".join(f"{line}\n" for line in spec.get("requirements", []))
    if stdin:
        argv.append("-")  # the lines not in pyproject.toml: the build backend, torch's CPU build
    # uv reads UV_* settings (another index, a cutoff date...): only its cache location stays.
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_") or k == "UV_CACHE_DIR"}
    LOCKS_DIR.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(argv, cwd=ROOT, input=stdin, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(
            f"uv could not lock {name}. For the worker's torch, set TORCH_CPU_WHEELS to a "
            f"directory or page holding {torch_cpu_requirement()}'s wheel ({PYTORCH_CPU_WHEELS})"
        )
    out.write_text(f"{FINGERPRINT_PREFIX}{fingerprint(name)}\n{out.read_text()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--upgrade", action="store_true", help="move every pin to the newest")
    parser.add_argument("locks", nargs="*", help=f"some of {', '.join(LOCKS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = set(args.locks) - set(LOCKS)
    if unknown:
        parser.error(f"no such lock: {', '.join(sorted(unknown))} (locks: {', '.join(LOCKS)})")
    for name in args.locks or LOCKS:
        compile_lock(name, args.upgrade)
        print(f"deploy/docker/locks/{name}.txt", file=sys.stderr)


if __name__ == "__main__":
    main()
