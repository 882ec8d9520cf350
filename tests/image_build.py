"""An image's contents built the way `docker build` builds them, without Docker.

`build(dockerfile, context, into)` follows the Dockerfile stage by stage: FROM starts a stage
(its filesystem a directory, its Python a fresh virtualenv standing for the base image's
interpreter); COPY copies from the build context as its .dockerignore filters it
(tests/dockerignore.py) or from an earlier stage; RUN runs its commands, pip with that
virtualenv's pip and every container path mapped into the stage's directory; ENV, WORKDIR,
USER, HEALTHCHECK and CMD are kept for running the image. An instruction or a command it
does not know fails the build, saying so: nothing is skipped silently.

Two deliberate differences with Docker, neither changing what is installed:
- pip keeps its cache (the images set PIP_NO_CACHE_DIR): a build takes seconds, not minutes;
- PyTorch's CPU index is out of reach here: an `--index-url`/`--extra-index-url` naming it
  becomes `--find-links` to where this machine keeps the same wheels (`make lock` reads the
  same place), and what else that index serves (copies of PyPI's files) comes from PyPI; the
  locks' sha256 make sure they are the same bytes.
Processes run as the test's user, not the image's USER.
"""

from __future__ import annotations

import glob
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests import dockerignore
from tests.deploy_support import dockerfile_instructions

PYTORCH_INDEXES = ("https://download.pytorch.org/whl/cpu",)
RECORDED = {"EXPOSE", "LABEL", "ARG"}  # change nothing a process sees here


class Unsupported(AssertionError):
    """The Dockerfile does something this builder cannot reproduce: teach it, don't skip."""


@dataclass
class Stage:
    name: str | None
    root: Path  # the stage's filesystem: container path /x is root/x
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    home: str = "/root"
    user: str = "root"
    changed: bool = False  # files were added: a stage FROM this one would inherit them
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    healthcheck_options: dict[str, str] = field(default_factory=dict)

    def path(self, container_path: str) -> Path:
        absolute = posixpath.normpath(posixpath.join(self.workdir, container_path))
        return self.root / absolute.lstrip("/")

    @property
    def venv(self) -> Path:
        return self.root.parent / "venv"

    @property
    def bin(self) -> Path:
        if not self.venv.exists():
            python = Path(sys.base_prefix) / "bin" / "python3"
            subprocess.run([str(python), "-m", "venv", str(self.venv)], check=True)
        return self.venv / "bin"

    def environment(self, **extra: str) -> dict[str, str]:
        """What a process of this image sees: its ENV (paths mapped), its PATH, `extra`."""
        env = {k: str(self.path(v)) if v.startswith("/") else v for k, v in self.env.items()}
        home = self.path(self.home)
        home.mkdir(parents=True, exist_ok=True)
        return {"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": str(home), **env, **extra}

    def argv(self, argv: list[str]) -> list[str]:
        """`argv` with its program found as the image would find it (its Python's bin first)."""
        found = shutil.which(argv[0], path=self.environment()["PATH"])
        if not found:
            raise Unsupported(f"`{argv[0]}` is not in the image")
        return [found, *argv[1:]]


def _env_pairs(args: str) -> dict[str, str]:
    tokens = shlex.split(args)
    if all("=" in t for t in tokens):
        return dict(t.split("=", 1) for t in tokens)
    return {tokens[0]: " ".join(tokens[1:])}  # the legacy `ENV KEY value` form


def _pip_args(stage: Stage, args: list[str], torch_wheels: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--index-url", "-i", "--extra-index-url") and args[i + 1] in PYTORCH_INDEXES:
            # PyTorch's index also serves torch's dependencies, as copies of PyPI's files.
            out += [x for source in torch_wheels for x in ("--find-links", source)]
            i += 2
            continue
        name, eq, value = arg.partition("=")
        if eq and name.startswith("--") and value.startswith("/"):
            out.append(f"{name}={stage.path(value)}")
        elif arg.startswith("/"):
            mapped = str(stage.path(arg))
            out += sorted(glob.glob(mapped)) or [mapped]  # as the shell expands it
        else:
            out.append(arg)
        i += 1
    return out


def _run(stage: Stage, line: str, torch_wheels: list[str]) -> None:
    if line.startswith("["):
        commands = [json.loads(line)]
    elif re.search(r"[;|`$<>]", line):
        raise Unsupported(f"RUN {line}: only commands joined by && are reproduced")
    else:
        commands = [shlex.split(part) for part in line.split("&&")]
    for argv in commands:
        program, args = argv[0], argv[1:]
        if program in ("python", "python3") and args[:2] == ["-m", "pip"]:
            program, args = "pip", args[2:]
        if program in ("pip", "pip3"):
            env = {**os.environ, **stage.env}
            env.pop("PIP_NO_CACHE_DIR", None)
            cwd = stage.path(".")
            cwd.mkdir(parents=True, exist_ok=True)
            pip = [str(stage.bin / "python"), "-m", "pip", *_pip_args(stage, args, torch_wheels)]
            done = subprocess.run(pip, cwd=cwd, env=env, capture_output=True, text=True)
            assert done.returncode == 0, f"RUN {shlex.join(argv)}:\n{done.stdout}{done.stderr}"
        elif program == "rm":
            for target in [a for a in args if not a.startswith("-")]:
                for path in map(Path, glob.glob(str(stage.path(target)))):
                    if path.is_dir():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
        elif program == "useradd":
            if "--home-dir" in args:
                stage.home = args[args.index("--home-dir") + 1]
        else:
            raise Unsupported(f"RUN {line}: `{program}` is not reproduced (tests/image_build.py)")


def _copy_sources(src: str, files: list[str], context: Path) -> list[tuple[str, Path]]:
    """(path relative to the destination, file) of each context file `COPY src` copies; a
    file alone (its relative path empty) when `src` is a file."""
    src = posixpath.normpath(src).lstrip("/")
    if src == ".":
        return [(f, context / f) for f in files]
    if src in files:
        return [("", context / src)]
    inside = [(f[len(src) + 1 :], context / f) for f in files if f.startswith(f"{src}/")]
    if not inside:
        raise AssertionError(f"COPY {src}: not in the build context (missing or .dockerignore'd)")
    return inside


def _copy(
    stage: Stage, args: str, stages: dict[str, Stage], context: Path, files: list[str]
) -> None:
    tokens = json.loads(args) if args.startswith("[") else shlex.split(args)
    origin = None
    while tokens[0].startswith("--"):
        flag = tokens.pop(0)
        if flag.startswith("--from="):
            origin = stages[flag.split("=", 1)[1]]
        elif not flag.startswith(("--chown=", "--chmod=", "--link")):
            raise Unsupported(f"COPY {flag} is not reproduced")
    *sources, dest = tokens
    into_dir = dest.endswith("/") or len(sources) > 1
    for src in sources:
        if origin is None:
            pairs = _copy_sources(src, files, context)
        else:
            host = origin.path(src)
            assert host.exists(), f"COPY --from={origin.name} {src}: not in that stage"
            pairs = (
                [(p.relative_to(host).as_posix(), p) for p in host.rglob("*") if p.is_file()]
                if host.is_dir()
                else [("", host)]
            )
        for relative, file in pairs:
            # A file goes to dest itself, or into it when dest is a directory (Docker's rule).
            if not relative and (into_dir or stage.path(dest).is_dir()):
                relative = file.name
            target = stage.path(dest) / relative if relative else stage.path(dest)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target)
    stage.changed = True


def build(dockerfile: Path, context: Path, into: Path, torch_wheels: list[str]) -> Stage:
    """Build `dockerfile` from `context` under `into`; the final stage is the image."""
    files = dockerignore.context_files(dockerfile, context)
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for instruction, args in dockerfile_instructions(dockerfile):
        if instruction == "FROM":
            ref, *alias = re.split(r"\s+[Aa][Ss]\s+", re.sub(r"--platform=\S+\s+", "", args))
            ref, name = ref.strip(), alias[0].strip() if alias else None
            root = into / f"stage-{len(stages)}" / "root"
            root.mkdir(parents=True)
            parent = stages.get(ref)
            if parent is not None:
                assert not parent.changed, f"FROM {ref}: a stage that holds files is not rebuilt"
                stage = Stage(name, root, dict(parent.env), parent.workdir, parent.home)
            else:
                stage = Stage(name, root)
            stages[name or f"#{len(stages)}"] = stage
            continue
        assert stage is not None, f"{dockerfile.name}: {instruction} before FROM"
        if instruction == "ENV":
            stage.env |= _env_pairs(args)
        elif instruction == "WORKDIR":
            stage.workdir = posixpath.normpath(posixpath.join(stage.workdir, args))
            stage.path(".").mkdir(parents=True, exist_ok=True)
        elif instruction == "COPY":
            _copy(stage, args, stages, context, files)
        elif instruction == "RUN":
            _run(stage, args, torch_wheels)
            stage.changed = True
        elif instruction == "USER":
            stage.user = args
        elif instruction == "CMD":
            stage.cmd = json.loads(args) if args.startswith("[") else ["/bin/sh", "-c", args]
        elif instruction == "HEALTHCHECK":
            options, _, command = args.partition("CMD ")
            stage.healthcheck = json.loads(command)
            stage.healthcheck_options = dict(re.findall(r"--([\w-]+)=(\S+)", options))
        elif instruction not in RECORDED:
            raise Unsupported(f"{dockerfile.name}: {instruction} is not reproduced")
    assert stage is not None, f"{dockerfile.name} has no FROM"
    return stage
