"""The images: what their build sends and installs, their locks, and every command deploy/
runs with them, run from the image's contents built without Docker (tests/image_build.py).
"""

from __future__ import annotations

import re
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from atomfleet.services import free_port
from tests import deploy_support as d
from tests import dockerignore
from tests import image_support as s
from tests.image_build import Stage, build

DOCKERFILES = ("Dockerfile.api", "Dockerfile.worker")
LOCK_OF = {"Dockerfile.api": "api", "Dockerfile.worker": "worker"}
SERVERS = {"api", "scheduler", "worker", "qpu-simulator"}
# Programs deploy/ runs that come with the base image (coreutils), not with atomfleet.
BASE_IMAGE_PROGRAMS = {"sleep"}
WITHOUT_TORCH = ("torch", "emu-mps", "emu-sv", "emu-base", "pulser-simulation", "qutip")


def _pyproject() -> dict[str, object]:
    return tomllib.loads((d.ROOT / "pyproject.toml").read_text())


def _pins(lock: str) -> dict[str, tuple[Version, list[str]]]:
    """name -> (version, sha256s) of every package a lock pins."""
    text = (s.DOCKER_DIR / "locks" / f"{lock}.txt").read_text().replace("\\\n", " ")
    pins = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.match(r"([A-Za-z0-9._-]+)==(\S+)", line)
        assert m, f"{lock}.txt: not a pin: {line}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
        pins[canonicalize_name(m.group(1))] = (Version(m.group(2)), hashes)
    return pins


# =========================================================================== build context


def test_dockerignore_patterns_follow_docker_s_rules() -> None:
    def sent(patterns: str, path: str) -> bool:
        return not dockerignore.ignored(path, dockerignore.parse(patterns))

    assert not sent("*", "README.md") and not sent("*", "api/app.py")  # a parent matches
    assert sent("*\n!api", "api/app.py") and not sent("*\n!api", "core/x.py")
    assert not sent("**/__pycache__", "__pycache__/a.pyc")  # `**` matches no directory too
    assert not sent("**/__pycache__", "api/routes/__pycache__/a.pyc")
    assert not sent("*.md", "README.md") and sent("*.md", "docs/guide.md")  # one segment
    assert sent("deploy\n!deploy/docker/locks", "deploy/docker/locks/api.txt")
    assert not sent("deploy\n!deploy/docker/locks", "deploy/compose.yaml")
    assert not sent("!api\napi", "api/app.py")  # the last match decides
    assert not sent("/tests/", "tests/test_x.py") and not sent("./tests", "tests/a")
    assert not sent("a?c", "abc") and sent("a?c", "a/c") and not sent("[ab]x", "bx")
    assert sent("# tests\n", "tests/a") and sent("\\#x", "y")


def test_docker_reads_the_dockerfile_s_own_ignore_file_before_the_context_s(
    tmp_path: Path,
) -> None:
    (tmp_path / "d").mkdir()
    for name in ("keep.txt", "drop.txt", "d/Dockerfile"):
        (tmp_path / name).write_text("x")
    (tmp_path / ".dockerignore").write_text("drop.txt\n.dockerignore\nd\n")
    assert dockerignore.context_files(tmp_path / "d" / "Dockerfile", tmp_path) == ["keep.txt"]
    (tmp_path / "d" / "Dockerfile.dockerignore").write_text("keep.txt\nd\n")
    assert dockerignore.context_files(tmp_path / "d" / "Dockerfile", tmp_path) == [
        ".dockerignore",
        "drop.txt",
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_build_context_sends_every_package_the_wheel_ships_and_nothing_else_of_ours(
    dockerfile: str,
) -> None:
    files = dockerignore.context_files(s.DOCKER_DIR / dockerfile, d.ROOT)
    for package in s.wheel_packages():
        assert f"{package}/__init__.py" in files, (
            f"the build context of {dockerfile} lacks {package}"
        )
    for kept_out in ("tests/", "bench/", ".venv/", ".git/", "deploy/kubernetes/"):
        assert not [f for f in files if f.startswith(kept_out)], f"{dockerfile} sends {kept_out}"
    assert f"deploy/docker/locks/{LOCK_OF[dockerfile]}.txt" in files


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_file_the_image_copies_is_in_its_build_context(dockerfile: str) -> None:
    path = s.DOCKER_DIR / dockerfile
    files = dockerignore.context_files(path, d.ROOT)
    for instruction, args in d.dockerfile_instructions(path):
        if instruction != "COPY" or "--from" in args:
            continue
        for source in args.split()[:-1]:
            source = source.rstrip("/")
            assert (
                source == "." or source in files or any(f.startswith(f"{source}/") for f in files)
            ), f"{dockerfile} copies {source}: missing, or left out by the .dockerignore"


def test_both_images_build_on_one_base_pinned_by_digest() -> None:
    bases = {
        name: [
            a.split()[0] for i, a in d.dockerfile_instructions(s.DOCKER_DIR / name) if i == "FROM"
        ]
        for name in DOCKERFILES
    }
    external = {ref for refs in bases.values() for ref in refs if ":" in ref}
    assert len(external) == 1, f"one base for both images: {bases}"
    (base,) = external
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", base), base


# =========================================================================== locks


@pytest.mark.parametrize("lock", ["build", "api", "worker"])
def test_every_lock_was_generated_from_the_current_pyproject_and_constraints(lock: str) -> None:
    script = s.lock_script()
    assert script.recorded_fingerprint(lock) == script.fingerprint(lock), (
        f"deploy/docker/locks/{lock}.txt was generated from other inputs than pyproject.toml "
        "and constraints.txt hold now: run `make lock` and commit the locks"
    )


@pytest.mark.parametrize("lock", ["build", "api", "worker"])
def test_each_lock_pins_every_requirement_within_its_bounds_with_hashes(lock: str) -> None:
    pins = _pins(lock)
    config = _pyproject()
    project, build_system = config["project"], config["build-system"]
    assert isinstance(project, dict) and isinstance(build_system, dict)
    if lock == "build":
        wanted = list(build_system["requires"])
    else:
        wanted = list(project["dependencies"]) + s.lock_script().constraint_lines()
        if lock == "worker":
            wanted += project["optional-dependencies"]["emulators"]
    for line in wanted:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if line in s.lock_script().constraint_lines() and name not in pins:
            continue  # a constraint bounds a package only where something needs it
        assert name in pins, f"{lock}.txt does not pin {requirement.name}: run `make lock`"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (
            f"{lock}.txt pins {name}=={pins[name][0]}, outside {requirement}: run `make lock`"
        )
    unhashed = [name for name, (_, hashes) in pins.items() if not hashes]
    assert not unhashed, f"{lock}.txt pins without a sha256: {unhashed}"


def test_the_worker_lock_holds_torch_s_cpu_build_and_the_api_lock_no_torch_nor_emulator() -> None:
    pinned = re.search(r"^torch==(\S+)$", (d.ROOT / "constraints.txt").read_text(), re.M)
    assert pinned, "constraints.txt pins no torch"
    assert str(_pins("worker")["torch"][0]) == f"{pinned.group(1)}+cpu"
    assert not set(_pins("api")) & set(WITHOUT_TORCH), "the API image needs neither"
    assert not [n for n in _pins("api") if n.startswith("nvidia-")]
    assert not [n for n in _pins("worker") if n.startswith("nvidia-")], "a CUDA torch came in"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_image_installs_nothing_but_its_locks_and_the_project_s_wheel(dockerfile: str) -> None:
    steps = d.dockerfile_instructions(s.DOCKER_DIR / dockerfile)
    copied = {a.split()[-1]: a.split()[0] for i, a in steps if i == "COPY" and "--from" not in a}
    installs = [
        cmd.strip()
        for i, a in steps
        if i == "RUN"
        for cmd in a.split("&&")
        if re.match(r"(python3? -m )?pip3? (install|wheel)\b", cmd.strip())
    ]
    locks = []
    for cmd in installs:
        assert "--require-hashes" in cmd or "--no-index" in cmd, f"{dockerfile}: unpinned: {cmd}"
        requirements = re.search(r"-r\s+(\S+)", cmd)
        if requirements:
            locks.append(copied[requirements.group(1)])
    assert locks == [
        "deploy/docker/locks/build.txt",
        f"deploy/docker/locks/{LOCK_OF[dockerfile]}.txt",
    ]


# =========================================================================== deploy/ -> images


def test_every_deployed_atomfleet_command_runs_in_one_of_our_images() -> None:
    everything = s.deployed()
    ours = [c for c in everything if c.argv[:1] == ["atomfleet"]]
    assert not [c.where for c in ours if c.dockerfile is None], "an image we do not build"
    compose = d.load_yaml(d.DEPLOY / "compose.yaml")["services"]
    for name, service in compose.items():
        if "build" in service:
            build_spec = service["build"]
            built = d.DEPLOY / build_spec["context"] / build_spec["dockerfile"]
            named = s.dockerfile_of(service["image"])
            assert named and named.resolve() == built.resolve(), (
                f"compose service {name}: image {service['image']} is not built by {built}"
            )
    for dockerfile in DOCKERFILES:
        assert [c for c in ours if c.dockerfile and c.dockerfile.name == dockerfile], dockerfile


# =========================================================================== the images, built


def _as_tested(argv: list[str]) -> list[str]:
    """How the test runs a deployed command: migrate for real, a server's `--help`, a
    healthcheck's code compiled by the image's Python, a base-image program found."""
    if argv[:2] == ["atomfleet", "migrate"]:
        return argv
    if argv[0] == "atomfleet" and argv[1] in SERVERS:
        return [*argv, "--help"]
    if argv[0] in ("python", "python3") and argv[1] == "-c":
        return [argv[0], "-c", f"compile({argv[2]!r}, 'healthcheck', 'exec')"]
    assert argv[0] in BASE_IMAGE_PROGRAMS, f"the test does not know how to run {argv}"
    return ["sh", "-c", f"command -v {argv[0]}"]


def _served(image: Stage) -> tuple[list[str], str, str, str]:
    """The image's CMD on a free port of 127.0.0.1, its HEALTHCHECK_URL on that port, the
    port the image serves and the one the test does."""
    cmd, url = list(image.cmd), image.env["HEALTHCHECK_URL"]
    option = "--port" if "--port" in cmd else "--metrics-port"
    served, port = cmd[cmd.index(option) + 1], str(free_port())
    assert f":{served}/" in url, f"the HEALTHCHECK probes {url}, the CMD serves {served}"
    cmd[cmd.index(option) + 1] = port
    if "--host" in cmd:
        cmd[cmd.index("--host") + 1] = "127.0.0.1"
    return cmd, url.replace(f":{served}/", f":{port}/"), served, port


@pytest.fixture
def image_dir(tmp_path: Path) -> Iterator[Path]:
    """Where an image is built; removed afterwards (the worker's holds 1.5 GB of torch)."""
    yield tmp_path / "image"
    shutil.rmtree(tmp_path / "image", ignore_errors=True)


@pytest.mark.e2e
@pytest.mark.timeout(900)
@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_image_runs_every_command_compose_and_kubernetes_give_it(
    dockerfile: str, image_dir: Path, tmp_path: Path, pg_url: str, redis_url: str, namespace: str
) -> None:
    # Given the image built as its Dockerfile says, from the build context Docker would send
    torch_wheels = s.lock_script().torch_wheel_sources()
    image = build(s.DOCKER_DIR / dockerfile, d.ROOT, image_dir, torch_wheels)
    commands: dict[tuple[str, ...], list[str]] = {}
    for c in s.deployed():
        if c.dockerfile and c.dockerfile.name == dockerfile:
            commands.setdefault(tuple(c.argv), []).append(c.where)
    commands.setdefault(tuple(image.cmd), []).append(f"{dockerfile} CMD")
    with s.throwaway_database(pg_url) as database_url:
        env = image.environment(
            ATOMFLEET_DATABASE_URL=database_url,
            ATOMFLEET_REDIS_URL=redis_url,
            ATOMFLEET_NAMESPACE=namespace,
            ATOMFLEET_SECRET_KEY="image-test-secret",
            ATOMFLEET_METRICS_HOST="127.0.0.1",
        )
        # Then every command deploy/ gives it runs (migrate first, as deploy/ orders it)
        for argv in sorted(commands, key=lambda a: a[:2] != ("atomfleet", "migrate")):
            done = s.run_in(image, _as_tested(list(argv)), env)
            assert done.returncode == 0, (
                f"{dockerfile}, as run by {', '.join(commands[argv])}: {' '.join(argv)} exited "
                f"{done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        if ("atomfleet", "migrate") in commands:
            assert {"jobs", "batches", "alembic_version"} <= s.table_names(database_url)
        # and its Python imports every package the wheel ships, away from the checkout
        imports = ", ".join(s.wheel_packages())
        done = s.run_in(image, ["python", "-c", f"import {imports}"], env)
        assert done.returncode == 0, f"{dockerfile}: import {imports}:\n{done.stderr}"
        # and its own command serves what its HEALTHCHECK probes, which fails once it stops
        cmd, url, served, port = _served(image)
        env["HEALTHCHECK_URL"] = url
        log = tmp_path / "served.log"
        with s.running(image, cmd, env, log) as proc:
            s.wait_healthy(image, env, proc, log, limit_s=300)
            # as do the healthchecks compose gives the same process (its port moved too)
            for argv, where in commands.items():
                if argv[:2] == ("python", "-c") and f":{served}/" in argv[2]:
                    code = argv[2].replace(f":{served}/", f":{port}/")
                    done = s.run_in(image, ["python", "-c", code], env, timeout_s=30)
                    assert done.returncode == 0, f"{', '.join(where)}: {done.stderr[-3000:]}"
        assert not s.healthcheck_passes(image, env), "the HEALTHCHECK passes with nothing served"
