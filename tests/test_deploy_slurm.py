"""deploy/ for the SLURM worker pool (issue 17), offline like tests/test_deploy.py: the image
has SLURM's clients and munge, compose and Kubernetes pass their schemas, run a command the
CLI parses with settings core/config.py accepts, and give the worker the munge key, the
cluster's slurm.conf and the shared directory where its settings say."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from atomfleet.cli import parser
from core.config import Settings
from core.enums import Backend, DeviceType
from tests import deploy_support as d

DOCKERFILE = d.DEPLOY / "docker" / "Dockerfile.slurm-worker"
COMPOSE = d.DEPLOY / "compose.slurm.yaml"
MANIFEST = d.KUBERNETES_DIR / "slurm" / "60-slurm-worker-emu-mps.yaml"


def _objects() -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in yaml.safe_load_all(MANIFEST.read_text()) if o}


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in [k for k in os.environ if k.startswith("ATOMFLEET_")]:
        monkeypatch.delenv(key)
    known = {f"ATOMFLEET_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= known, sorted(set(env) - known)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def _parses(argv: list[str]) -> None:
    assert argv[0] == "atomfleet"
    args = parser().parse_args(argv[1:])
    assert args.command == "worker" and args.device == "EMU_MPS"


def test_the_slurm_worker_image_has_slurm_s_clients_and_munge() -> None:
    steps = d.dockerfile_instructions(DOCKERFILE)
    runs = " ".join(args for i, args in steps if i == "RUN")
    assert "apt-get install" in runs and "slurm-client" in runs and "munge" in runs
    users = [args for i, args in steps if i == "USER"]
    assert users[-1] == "10001"
    cmd = json.loads([args for i, args in steps if i == "CMD"][-1])
    _parses(cmd)
    # the same base and locks as the worker image
    worker = d.dockerfile_instructions(d.DEPLOY / "docker" / "Dockerfile.worker")
    assert [a for i, a in steps if i == "FROM"] == [a for i, a in worker if i == "FROM"]
    assert [a for i, a in steps if i == "COPY"] == [a for i, a in worker if i == "COPY"]


def test_the_slurm_kubernetes_objects_pass_the_kubernetes_schema_strictly() -> None:
    validate = d.tool("kubernetes-validate", "pip install kubernetes-validate (a dev dependency)")
    d.assert_ok(d.run([validate, "--strict", str(MANIFEST.relative_to(d.ROOT))]))


def test_the_slurm_compose_file_is_valid_against_the_compose_specification() -> None:
    check = d.tool("check-jsonschema", "pip install check-jsonschema (a dev dependency)")
    d.assert_ok(d.run([check, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)]))


def test_kubernetes_gives_the_slurm_worker_its_key_conf_and_shared_dir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = _objects()
    env = dict(objects["ConfigMap"]["data"])
    settings = _settings_from(env, monkeypatch)
    assert settings.backend(DeviceType.EMU_MPS) == Backend.SLURM
    _, cluster = settings.slurm_cluster(DeviceType.EMU_MPS)
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    [worker] = pod["containers"]
    _parses(worker["command"])
    mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    # the shared directory where the settings say, on the claim
    shared = volumes[mounts[str(settings.slurm_shared_dir)]]
    claim = shared["persistentVolumeClaim"]["claimName"]
    assert claim == objects["PersistentVolumeClaim"]["metadata"]["name"]
    assert "ReadWriteMany" in objects["PersistentVolumeClaim"]["spec"]["accessModes"]
    # slurm.conf where the cluster's configuration says
    assert cluster.slurm_conf is not None
    conf = volumes[mounts[str(Path(cluster.slurm_conf).parent)]]
    assert conf["configMap"]["name"] == "atomfleet-slurm-conf"
    # munged runs beside it with the key from a Secret, sharing munge's default socket
    [munge] = pod["initContainers"]
    assert munge["restartPolicy"] == "Always" and munge["command"][0] == "munged"
    assert "--socket=/run/munge/munge.socket.2" in munge["command"]
    munge_mounts = {m["mountPath"]: m["name"] for m in munge["volumeMounts"]}
    assert munge_mounts["/run/munge"] == mounts["/run/munge"]
    key = volumes[munge_mounts["/etc/munge-key"]]
    assert key["secret"]["secretName"] == "atomfleet-munge-key"
    assert pod["securityContext"]["runAsNonRoot"] is True
    for c in [worker, munge]:
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_compose_runs_the_slurm_worker_instead_of_the_pod_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = d.load_yaml(COMPOSE)["services"]
    assert services["worker-emu-mps"]["deploy"]["replicas"] == 0
    worker = services["worker-slurm-emu-mps"]
    _parses(worker["command"])
    assert worker["build"]["dockerfile"] == "deploy/docker/Dockerfile.slurm-worker"
    settings = _settings_from(dict(worker["environment"]), monkeypatch)
    assert settings.backend(DeviceType.EMU_MPS) == Backend.SLURM
    targets = {v.removesuffix(":ro").rsplit(":", 1)[1] for v in worker["volumes"]}
    assert {str(settings.slurm_shared_dir), "/etc/slurm", "/run/munge"} <= targets
    assert "munge-socket:/run/munge" in services["munge"]["volumes"]
