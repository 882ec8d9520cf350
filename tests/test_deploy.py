"""deploy/: images, compose, Kubernetes, Prometheus alerts and the Grafana dashboard, offline.

Validators are real tools (check-jsonschema, kubernetes-validate, promtool, a Prometheus
server); a missing one fails with what to install. Nothing here needs Docker or a cluster.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from atomfleet.cli import parser
from core.catalog import CATALOG
from core.config import Settings
from core.enums import DeviceType
from tests import deploy_support as d
from tests.metric_names import SERIES, TARGET_LABELS
from tests.promql import selectors

# What the manifests already use and the code does not have yet. Each entry makes
# test_the_awaited_pieces_are_still_missing fail once it lands: then delete the entry, and
# the checks below hold it like everything else.
AWAITED_OPTIONS: set[tuple[str, str]] = set()
AWAITED_SUBCOMMANDS: set[str] = set()
AWAITED_SETTINGS: set[str] = set()
AWAITED_CATALOG_DEVICES: set[DeviceType] = set()

EXPECTED_ALERTS = {
    "AtomfleetDeviceWithoutWorkers",  # a backlog and no live worker for a device
    "AtomfleetOldestWaitingJobTooOld",
    "AtomfleetJobErrorRatioHigh",
    "AtomfleetQpuDown",
    "AtomfleetEventsBacklogGrowing",
    "AtomfleetSchedulerLoopStalled",
    "AtomfleetApiErrorRatioHigh",
    "AtomfleetDeviceStalled",
    "AtomfleetApiDown",
    "AtomfleetRedisMemoryNearLimit",
    "AtomfleetWebhookDeliveriesFailing",
    "AtomfleetAutoscalerFailing",
}
# Served by default (core/catalog.py) but deployed only on demand (deploy/README.md).
UNDEPLOYED_DEFAULT_DEVICES = {DeviceType.EMU_TN}  # the legacy name of EMU_MPS
SECRET_SETTINGS = {"ATOMFLEET_DATABASE_URL", "ATOMFLEET_SECRET_KEY", "ATOMFLEET_QPU_TOKEN"}
API_IMAGE, WORKER_IMAGE = (
    "registry.example.com/atomfleet/api",
    "registry.example.com/atomfleet/worker",
)


@pytest.fixture(scope="module")
def promtool() -> str:
    return d.tool("promtool", d.DEBIAN_PROMETHEUS)


def _parse_error(argv: list[str]) -> str | None:
    """argparse's complaint about `atomfleet argv...`, or None when it parses."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser().parse_args(argv)
        except SystemExit:
            return stderr.getvalue().strip() or "exit"
    return None


def _without_awaited(argv: list[str]) -> list[str]:
    out = list(argv)
    for subcommand, name in AWAITED_OPTIONS:
        if out[0] == subcommand and name in out:
            i = out.index(name)
            del out[i : i + 2]
    return out


def _deployed_devices(devices_json: str) -> list[str]:
    return [str(x) for x in json.loads(devices_json)]


def _configmap() -> dict[str, str]:
    return d.objects_of("ConfigMap")["atomfleet-config"]["data"]  # type: ignore[no-any-return]


def _compose() -> dict[str, Any]:
    return d.load_yaml(d.DEPLOY / "compose.yaml")  # type: ignore[no-any-return]


def _port(url: str) -> int:
    m = re.search(r"://[^/:]+:(\d+)", url)
    assert m, url
    return int(m.group(1))


def _seconds(duration: str) -> int:
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)([hms])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


# =========================================================================== images


# What the images send, install and run: tests/test_images.py.


def test_the_images_run_as_a_non_root_user_with_a_healthcheck_on_their_own_port() -> None:
    for dockerfile in d.dockerfiles():
        steps = d.dockerfile_instructions(dockerfile)
        users = [args for i, args in steps if i == "USER"]
        assert users and users[-1] not in ("root", "0"), f"{dockerfile.name} runs as root"
        assert any(i == "HEALTHCHECK" for i, _ in steps), f"{dockerfile.name} has no HEALTHCHECK"
        base = next(args for i, args in steps if i == "FROM")
        assert base.startswith("python:3.11"), base
        env = " ".join(args for i, args in steps if i == "ENV")
        health = re.search(r"HEALTHCHECK_URL=(\S+)", env)
        cmd = json.loads([args for i, args in steps if i == "CMD"][-1])
        port = d.option(cmd, "--port") or d.option(cmd, "--metrics-port")
        assert health and port and _port(health.group(1)) == int(port), (dockerfile.name, cmd)


# =========================================================================== commands, settings


def test_every_atomfleet_command_in_deploy_parses_with_the_cli() -> None:
    commands = d.atomfleet_commands()
    assert {c.argv[1] for c in commands} >= {"api", "scheduler", "worker", "migrate"}
    for command in commands:
        assert command.argv[0] == "atomfleet", command
        if command.argv[1] in AWAITED_SUBCOMMANDS:
            continue
        error = _parse_error(_without_awaited(command.argv[1:]))
        assert error is None, f"{command.where}: {' '.join(command.argv)}: {error}"


def _environments() -> list[tuple[str, dict[str, str]]]:
    """Every set of environment variables deploy/ gives a process (literal values only)."""
    found = [("ConfigMap atomfleet-config", dict(_configmap()))]
    for path, obj in d.kubernetes_objects():
        if obj["kind"] in ("Deployment", "Job"):
            for c in d.containers(obj):
                env = {e["name"]: e.get("value", "<from a Secret>") for e in c.get("env", [])}
                found.append((f"{path.name} {obj['metadata']['name']}", env))
    for name, service in _compose()["services"].items():
        found.append((f"compose service {name}", dict(service.get("environment") or {})))
    for dockerfile in d.dockerfiles():
        env = " ".join(a for i, a in d.dockerfile_instructions(dockerfile) if i == "ENV")
        found.append((dockerfile.name, dict(re.findall(r"(\w+)=(\S+)", env))))
    return found


def test_every_atomfleet_variable_in_deploy_is_a_setting_with_a_valid_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    known = {f"ATOMFLEET_{name.upper()}" for name in Settings.model_fields}
    for where, env in _environments():
        ours = {k: v for k, v in env.items() if k.startswith("ATOMFLEET_")}
        unknown = set(ours) - known - AWAITED_SETTINGS
        assert not unknown, f"{where}: not settings of core/config.py: {sorted(unknown)}"
        for k in [k for k in os.environ if k.startswith("ATOMFLEET_")]:
            monkeypatch.delenv(k)
        for k, v in ours.items():
            if k in AWAITED_SETTINGS or "${" in v or v == "<from a Secret>":
                continue
            if k == "ATOMFLEET_DEVICES":
                names = _deployed_devices(v)
                v = json.dumps([n for n in names if n not in AWAITED_CATALOG_DEVICES])
            monkeypatch.setenv(k, str(v))
        Settings()  # raises on a value of the wrong type or a device outside the catalog


def test_compose_and_kubernetes_deploy_every_default_device_and_their_qpus() -> None:
    """A device the catalog serves by default gets a worker everywhere (EMU_TN aside)."""
    defaults = {d.value for d, e in CATALOG.items() if e.enabled_by_default}
    defaults -= {d.value for d in UNDEPLOYED_DEFAULT_DEVICES}
    for where, env in (
        ("compose", _compose()["services"]["api"]["environment"]),
        ("10-config.yaml", _configmap()),
    ):
        expected = defaults | set(json.loads(env["ATOMFLEET_QPUS"]))
        assert set(_deployed_devices(env["ATOMFLEET_DEVICES"])) == expected, where


def test_the_awaited_pieces_are_still_missing() -> None:
    """Fails once the lead adds one: then remove it from the AWAITED_* sets above."""
    landed = [
        " ".join(c.argv)
        for c in d.atomfleet_commands()
        for s, o in AWAITED_OPTIONS
        if c.argv[1] == s and o in c.argv and _parse_error(c.argv[1:]) is None
    ]
    landed += [
        f"atomfleet {s}"
        for s in AWAITED_SUBCOMMANDS
        if "invalid choice" not in (_parse_error([s]) or "")
    ]
    fields = {f"ATOMFLEET_{n.upper()}" for n in Settings.model_fields}
    landed += sorted(AWAITED_SETTINGS & fields)
    landed += [f"{x.value} in the catalog" for x in AWAITED_CATALOG_DEVICES if x in CATALOG]
    assert not landed, f"these now exist; remove them from the AWAITED_* sets: {landed}"


# =========================================================================== compose


def test_compose_is_valid_against_the_compose_specification() -> None:
    check = d.tool("check-jsonschema", "pip install check-jsonschema (a dev dependency)")
    d.assert_ok(d.run([check, "--builtin-schema", "vendor.compose-spec", "deploy/compose.yaml"]))


def test_compose_starts_each_service_after_what_it_needs_and_checks_its_health() -> None:
    services = _compose()["services"]
    assert set(services) >= {
        "postgres", "redis", "migrate", "api", "scheduler", "qpu-simulator", "prometheus",
        "grafana", "worker-emu-mps", "worker-emu-sv", "worker-emu-free", "worker-emu-fresnel",
        "worker-fresnel",
    }  # fmt: skip
    for name, service in services.items():
        one_shot = service.get("restart") == "no"
        assert one_shot or "healthcheck" in service, f"{name} has no healthcheck"
        assert one_shot or service.get("restart") == "unless-stopped", name
        for needed, how in (service.get("depends_on") or {}).items():
            condition = how["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[needed], f"{name} waits on {needed}'s health"
            else:
                assert condition == "service_completed_successfully", (name, needed, condition)
                assert services[needed].get("restart") == "no", f"{needed} is not a one-shot"
    for name in ("api", "scheduler"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert {"postgres", "redis"} <= set(depends), name
    assert services["migrate"]["command"] == ["atomfleet", "migrate"]


def test_compose_healthchecks_probe_the_port_each_process_serves() -> None:
    for name, service in _compose()["services"].items():
        argv = service.get("command")
        if not (isinstance(argv, list) and argv[0] == "atomfleet" and "healthcheck" in service):
            continue
        port = d.option(argv, "--metrics-port") or d.option(argv, "--port")
        url = re.search(r"http://[^'\"]+", " ".join(service["healthcheck"]["test"]))
        assert url and port and _port(url.group(0)) == int(port), name
        if argv[1] == "api":
            assert url.group(0).endswith("/readyz"), "the API is healthy when it can serve"


def test_compose_runs_one_worker_per_deployed_device_and_lets_its_job_finish_on_stop() -> None:
    services = _compose()["services"]
    workers = {
        d.option(s["command"], "--device"): (name, s)
        for name, s in services.items()
        if s.get("command", [None, None])[:2] == ["atomfleet", "worker"]
    }
    env = services["api"]["environment"]
    assert sorted(workers) == sorted(_deployed_devices(env["ATOMFLEET_DEVICES"]))
    limit = int(env["ATOMFLEET_JOB_TIME_LIMIT_S"])
    for device, (name, service) in workers.items():
        assert _seconds(service["stop_grace_period"]) > limit, f"{name} is killed mid-job"
        assert service["environment"]["ATOMFLEET_JOB_TIME_LIMIT_S"] == str(limit), name
        assert {"ATOMFLEET_DATABASE_URL", "ATOMFLEET_SECRET_KEY"}.isdisjoint(
            service["environment"]
        ), f"{name}: workers never touch the store"
        if device == "FRESNEL":
            assert "deploy" not in service and "scale" not in service, "one QPU worker"
            assert "qpu-simulator" in service["environment"]["ATOMFLEET_QPUS"]


def test_compose_takes_the_secret_key_from_the_operator_never_from_the_file() -> None:
    for name in ("api", "scheduler", "migrate"):
        value = _compose()["services"][name]["environment"]["ATOMFLEET_SECRET_KEY"]
        assert re.fullmatch(r"\$\{ATOMFLEET_SECRET_KEY:\?[^}]+\}", value), (name, value)


def test_compose_prometheus_scrapes_every_process_on_its_metrics_port(promtool: str) -> None:
    d.assert_ok(d.run([promtool, "check", "config", "deploy/prometheus/prometheus.yml"]))
    config = d.load_yaml(d.PROMETHEUS_DIR / "prometheus.yml")
    scraped = {
        (name, sd["port"])
        for job in config["scrape_configs"]
        for sd in job["dns_sd_configs"]
        for name in sd["names"]
    }
    expected = set()
    for name, service in _compose()["services"].items():
        argv = service.get("command") or []
        if argv[:1] == ["atomfleet"] and argv[1] in ("api", "scheduler", "worker"):
            port = d.option(argv, "--metrics-port") or d.option(argv, "--port")
            expected.add((name, int(str(port))))
    assert scraped == expected


def test_compose_provisions_grafana_with_the_dashboard_and_prometheus() -> None:
    services = _compose()["services"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in services["grafana"]["volumes"]}
    provisioning = d.GRAFANA_DIR / "provisioning"
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = d.load_yaml(provisioning / "dashboards" / "atomfleet.yaml")
    assert providers["apiVersion"] == 1
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    assert Path(mounts["./grafana/atomfleet.json"]).parent == Path(provider["options"]["path"])
    sources = d.load_yaml(provisioning / "datasources" / "prometheus.yaml")
    assert sources["apiVersion"] == 1
    [source] = sources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090" and "prometheus" in services
    assert "/etc/prometheus" in " ".join(services["prometheus"]["volumes"])


# =========================================================================== Kubernetes


def test_kubernetes_core_objects_pass_the_kubernetes_schema_strictly() -> None:
    validate = d.tool("kubernetes-validate", "pip install kubernetes-validate (a dev dependency)")
    files = sorted(str(p.relative_to(d.ROOT)) for p in d.KUBERNETES_DIR.glob("*.yaml"))
    result = d.run([validate, "--strict", *files])
    d.assert_ok(result)
    # It only warns for custom resources: every other kind must really have been checked.
    unchecked = set(
        re.findall(r"Couldn't find schema for kind (\w+)", result.stdout + result.stderr)
    )
    assert unchecked <= {"ScaledObject", "PrometheusRule", "PodMonitor"}, unchecked


def test_every_workload_has_probes_resources_and_no_privileges() -> None:
    for path, obj in d.kubernetes_objects():
        if obj["kind"] not in ("Deployment", "Job"):
            continue
        pod = obj["spec"]["template"]["spec"]
        where = f"{path.name} {obj['metadata']['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["automountServiceAccountToken"] is False, where
        for c in pod["containers"]:
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
            assert "memory" in c["resources"]["limits"], where
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
            image = WORKER_IMAGE if component == "worker" else API_IMAGE
            assert c["image"].split(":")[0] == image, where
            if obj["kind"] == "Deployment":
                assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(c), where
                _assert_probes_hit_the_served_port(c, where)


def _assert_probes_hit_the_served_port(container: dict[str, Any], where: str) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    served = d.option(container["command"], "--metrics-port") or d.option(
        container["command"], "--port"
    )
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert ports[get["port"]] == int(str(served)), f"{where} {probe} port"
        assert get["path"] in ("/healthz", "/readyz"), f"{where} {probe} path"


def test_the_api_runs_two_ready_replicas_and_the_scheduler_exactly_one() -> None:
    deployments = d.objects_of("Deployment")
    api = deployments["atomfleet-api"]
    assert api["spec"]["replicas"] == 2
    [container] = d.containers(api)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    scheduler = deployments["atomfleet-scheduler"]
    assert scheduler["spec"]["replicas"] == 1
    assert scheduler["spec"]["strategy"] == {"type": "Recreate"}
    [container] = d.containers(scheduler)
    assert container["command"][:2] == ["atomfleet", "scheduler"]


def test_a_job_migrates_the_schema_and_is_applied_before_the_api() -> None:
    [(path, job)] = [(p, o) for p, o in d.kubernetes_objects() if o["kind"] == "Job"]
    assert d.containers(job)[0]["command"] == ["atomfleet", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    later = {p.name for p, o in d.kubernetes_objects() if o["kind"] == "Deployment"}
    assert all(path.name < other for other in later), "apply order: the migration first"


def test_each_deployed_device_has_one_worker_whose_grace_period_covers_the_job_time_limit() -> None:
    config = _configmap()
    limit = int(config["ATOMFLEET_JOB_TIME_LIMIT_S"])
    workers = {}
    for name, dep in d.objects_of("Deployment").items():
        [c] = d.containers(dep)
        if c["command"][:2] == ["atomfleet", "worker"]:
            workers[d.option(c["command"], "--device")] = (name, dep, c)
    assert sorted(workers) == sorted(_deployed_devices(config["ATOMFLEET_DEVICES"]))
    for device, (name, dep, c) in workers.items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > limit, f"{name} is killed mid-job"
        # A hung worker must not hold its pod for the whole grace period.
        assert c["livenessProbe"]["terminationGracePeriodSeconds"] <= 300, name
        assert dep["metadata"]["labels"]["atomfleet.io/device-type"] == device
        threads = {e["name"]: e.get("value") for e in c["env"]}["ATOMFLEET_TORCH_THREADS"]
        cpu = c["resources"]["requests"]["cpu"]
        cores = int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
        concurrency = int(str(d.option(c["command"], "--concurrency")))
        assert int(threads) * concurrency <= max(cores, 1), f"{name} oversubscribes its cores"
    assert (
        "controller.kubernetes.io/pod-deletion-cost"
        in (d.KUBERNETES_DIR / "50-workers.yaml").read_text()
    )


def test_the_qpu_worker_is_one_replica_recreated_never_autoscaled() -> None:
    fresnel = d.objects_of("Deployment")["atomfleet-worker-fresnel"]
    assert fresnel["spec"]["replicas"] == 1
    assert fresnel["spec"]["strategy"] == {"type": "Recreate"}, "two QPU workers must never overlap"
    [c] = d.containers(fresnel)
    assert d.option(c["command"], "--concurrency") == "1"
    targets = {so["spec"]["scaleTargetRef"]["name"] for so in d.objects_of("ScaledObject").values()}
    assert "atomfleet-worker-fresnel" not in targets


def test_secrets_are_referenced_by_name_and_never_written() -> None:
    objects = d.kubernetes_objects()
    assert not [o for _, o in objects if o["kind"] == "Secret"], "create the Secret out of band"
    assert not SECRET_SETTINGS & set(_configmap()), "secrets in the ConfigMap"
    needs = {"api": {"ATOMFLEET_DATABASE_URL", "ATOMFLEET_SECRET_KEY"}}
    needs |= {"scheduler": needs["api"], "migrate": {"ATOMFLEET_DATABASE_URL"}}
    for path, obj in objects:
        if obj["kind"] not in ("Deployment", "Job"):
            continue
        component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
        for c in d.containers(obj):
            env = {e["name"]: e for e in c.get("env", [])}
            assert [f["configMapRef"]["name"] for f in c["envFrom"]] == ["atomfleet-config"]
            for name in SECRET_SETTINGS & set(env):
                ref = env[name]["valueFrom"]["secretKeyRef"]
                assert ref["name"] == "atomfleet-secrets" and "value" not in env[name], name
            assert needs.get(component, set()) <= set(env), f"{path.name} {component}"
            if component == "worker":
                assert "ATOMFLEET_DATABASE_URL" not in env, "workers never touch the store"


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_services_and_disruption_budgets_select_existing_pods() -> None:
    pods = {
        n: dep["spec"]["template"]["metadata"]["labels"]
        for n, dep in d.objects_of("Deployment").items()
    }
    for name, service in d.objects_of("Service").items():
        [target] = [
            n for n, labels in pods.items() if _selects(service["spec"]["selector"], labels)
        ]
        names = {p["name"] for p in d.containers(d.objects_of("Deployment")[target])[0]["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= names, name
    budgets = {}
    for pdb in d.objects_of("PodDisruptionBudget").values():
        selector = pdb["spec"]["selector"]["matchLabels"]
        [target] = [n for n, labels in pods.items() if _selects(selector, labels)]
        budgets[target] = pdb
    autoscaled = {
        so["spec"]["scaleTargetRef"]["name"] for so in d.objects_of("ScaledObject").values()
    }
    assert set(budgets) == {"atomfleet-api"} | autoscaled, (
        "single replicas get none: it would block drains"
    )


def test_every_emulator_worker_is_autoscaled_by_keda_on_its_jobs() -> None:
    deployments = d.objects_of("Deployment")
    devices = {}
    for name, so in d.objects_of("ScaledObject").items():
        assert so["apiVersion"] == "keda.sh/v1alpha1" and so["kind"] == "ScaledObject"
        spec = so["spec"]
        target = deployments[spec["scaleTargetRef"]["name"]]
        assert "replicas" not in target["spec"], f"{name}: a replica count would fight KEDA"
        [c] = d.containers(target)
        device = d.option(c["command"], "--device")
        assert (
            device
            and CATALOG.get(DeviceType(device)) is not None
            and CATALOG[DeviceType(device)].is_emulator
        )
        devices[device] = name
        assert (
            spec["minReplicaCount"] >= 1
            or float(spec["triggers"][0]["metadata"]["activationThreshold"]) < 1
        )
        assert spec["maxReplicaCount"] >= max(spec["minReplicaCount"], 1)
        assert spec["fallback"]["failureThreshold"] >= 1 and spec["fallback"]["replicas"] >= 1
        [trigger] = spec["triggers"]
        assert trigger["type"] == "prometheus"
        meta = trigger["metadata"]
        assert meta["serverAddress"].startswith(("http://", "https://"))
        assert meta["threshold"] == d.option(c["command"], "--concurrency"), "one job per slot"
        assert meta["ignoreNullValues"] == "false", "missing data must fall back, not scale down"
        found = {
            (s.name, dict((lab, v) for lab, _, v in s.matchers).get("device_type"))
            for s in selectors(meta["query"])
        }
        assert {
            ("atomfleet_jobs_dispatchable", device),
            ("atomfleet_jobs_running", device),
        } <= found
    emulators = {
        x
        for x in _deployed_devices(_configmap()["ATOMFLEET_DEVICES"])
        if CATALOG.get(DeviceType(x)) and CATALOG[DeviceType(x)].is_emulator
    }
    assert set(devices) == emulators


def test_the_keda_queries_count_dispatchable_plus_running_jobs_and_fail_without_the_scheduler(
    promtool: str, tmp_path: Path
) -> None:
    scheduler = 'namespace="atomfleet",job="atomfleet-scheduler",instance="scheduler:9101"'
    loop = {
        "series": f"atomfleet_scheduler_last_loop_timestamp_seconds{{{scheduler}}}",
        "values": "0+60x5",
    }
    store = {"series": f"atomfleet_batches_open{{{scheduler}}}", "values": "3x5"}
    api_only = {
        "series": 'atomfleet_build_info{version="0.1.0",namespace="atomfleet",job="atomfleet-api",'
        'instance="api:8000"}',
        "values": "1x5",
    }
    tests = []
    deployments = d.objects_of("Deployment")
    for name, query in d.keda_queries().items():
        target = d.objects_of("ScaledObject")[name]["spec"]["scaleTargetRef"]["name"]
        device = deployments[target]["metadata"]["labels"]["atomfleet.io/device-type"]

        def waiting(value: int, dev: str = device) -> dict[str, str]:
            labels = f'device_type="{dev}",{scheduler}'
            return {"series": f"atomfleet_jobs_dispatchable{{{labels}}}", "values": f"{value}x5"}

        def running(value: int, dev: str = device) -> dict[str, str]:
            labels = f'device_type="{dev}",{scheduler}'
            return {"series": f"atomfleet_jobs_running{{{labels}}}", "values": f"{value}x5"}

        cases = [
            # dispatchable plus running; another device's jobs are not counted
            ([waiting(5), running(4), waiting(50, "X"), loop, store], [9]),
            # the queue is empty but a job runs: its worker must stay
            ([waiting(0), running(1), loop, store], [1]),
            # nothing of this device exported at all: zero, as one sample
            ([running(7, "X"), loop, store], [0]),
            # no scheduler scraped: no sample, so KEDA errs and falls back instead of scaling down
            ([api_only], []),
            # the scheduler is scraped but cannot read the store (its store gauges are left
            # out): no sample either, not a zero that would scale busy workers down
            ([loop], []),
        ]
        for input_series, values in cases:
            samples = [{"labels": "{}", "value": v} for v in values]
            test = {"expr": query, "eval_time": "3m", "exp_samples": samples}
            tests.append(
                {"interval": "1m", "input_series": input_series, "promql_expr_test": [test]}
            )
    (tmp_path / "keda_test.yml").write_text(yaml.safe_dump({"rule_files": [], "tests": tests}))
    d.assert_ok(d.run([promtool, "test", "rules", str(tmp_path / "keda_test.yml")]))


def test_the_prometheus_rule_carries_exactly_the_alerts_of_deploy_prometheus() -> None:
    [rule] = d.objects_of("PrometheusRule").values()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == d.alert_groups(), (
        "deploy/kubernetes/60-monitoring.yaml differs from deploy/prometheus/alerts.yml; "
        "regenerate it with the command written above its PrometheusRule"
    )


def test_the_pod_monitor_scrapes_every_process_on_a_port_it_names() -> None:
    [monitor] = d.objects_of("PodMonitor").values()
    endpoints = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    scraped = set()
    for name, dep in d.objects_of("Deployment").items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert _selects(monitor["spec"]["selector"]["matchLabels"], labels), name
        ports = {p["name"] for c in d.containers(dep) for p in c.get("ports", [])}
        assert ports & endpoints, f"{name} exposes no port the PodMonitor scrapes"
        scraped.add(name)
    assert all(e["path"] == "/metrics" for e in monitor["spec"]["podMetricsEndpoints"])


# =========================================================================== Prometheus alerts


def test_prometheus_rules_pass_promtool(promtool: str) -> None:
    d.assert_ok(d.run([promtool, "check", "rules", "deploy/prometheus/alerts.yml"]))


def test_every_alert_has_a_severity_and_a_runbook() -> None:
    rules = d.alert_rules()
    assert set(rules) == EXPECTED_ALERTS
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        for annotation in ("summary", "description", "runbook"):
            assert len(rule["annotations"].get(annotation, "")) > 20, f"{name}: {annotation}"
        assert rule.get("for"), f"{name} fires on one bad sample"


def test_every_alert_has_a_firing_and_a_quiet_unit_test_and_they_pass(promtool: str) -> None:
    suite = d.load_yaml(d.PROMETHEUS_DIR / "alerts_test.yml")
    firing, quiet = set(), set()
    for group in suite["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert firing == EXPECTED_ALERTS, f"no firing case: {EXPECTED_ALERTS - firing}"
    assert quiet == EXPECTED_ALERTS, f"no quiet case: {EXPECTED_ALERTS - quiet}"
    d.assert_ok(d.run([promtool, "test", "rules", "deploy/prometheus/alerts_test.yml"]))


# =========================================================================== Grafana


def _rectangles_overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def test_the_dashboard_is_templated_on_device_type_and_every_panel_has_queries() -> None:
    board = d.dashboard()
    assert board["uid"] == "atomfleet" and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    device = variables["device_type"]
    assert device["multi"] and device["includeAll"] and "device_type" in device["definition"]
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids repeat"
    for p in panels:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], f"{p['title']} has no query"
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]
        assert all(t["expr"].strip() for t in p["targets"]), p["title"]
    for i, a in enumerate(panels):
        for b in panels[i + 1 :]:
            assert not _rectangles_overlap(a["gridPos"], b["gridPos"]), (a["title"], b["title"])
    titles = " ".join(p["title"].lower() for p in panels)
    for subject in (
        "waiting",
        "running",
        "slots",
        "error",
        "run time",
        "qpu",
        "latency",
        "5xx",
        "loop",
    ):
        assert subject in titles, f"the dashboard has no panel on {subject}"


def test_every_dashboard_query_parses(promtool: str, tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{i}", "expr": d.substitute_grafana_variables(expr)}
        for i, (_, expr) in enumerate(d.dashboard_queries())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    d.assert_ok(d.run([promtool, "check", "rules", str(path)]))


def test_every_dashboard_query_follows_the_device_variable() -> None:
    for where, expr in d.dashboard_queries():
        for s in selectors(expr):
            if s.name in SERIES and "device_type" in SERIES[s.name].labels:
                assert ("device_type", "=~", "$device_type") in s.matchers, f"{where}: {s.name}"


def _queries() -> list[tuple[str, str]]:
    found = [(f"dashboard {w}", e) for w, e in d.dashboard_queries()]
    found += [(f"alert {n}", r["expr"]) for n, r in d.alert_rules().items()]
    found += [(f"ScaledObject {n}", q) for n, q in d.keda_queries().items()]
    return found


def test_dashboard_alerts_and_autoscaling_read_only_exported_metrics_and_labels() -> None:
    for where, expr in _queries():
        for s in selectors(expr):
            assert s.name in SERIES, f"{where}: {s.name} is not in tests/metric_names.py"
            labels = SERIES[s.name].series_labels(s.name) | TARGET_LABELS
            assert s.labels() <= labels, f"{where}: {s.name} has no label {s.labels() - labels}"
            for label, _, value in s.matchers:
                if label == "status" and s.name.startswith("atomfleet_jobs"):
                    assert set(value.split("|")) <= {
                        "PENDING",
                        "RUNNING",
                        "DONE",
                        "ERROR",
                        "CANCELED",
                    }


def test_the_query_reader_finds_names_and_matchers_but_not_functions_or_label_lists() -> None:
    expr = (
        'sum by (device_type, le) (rate(a_bucket{x="1", y=~"a|b"}[5m] offset 1h)) / on (z) '
        'group_left(w) b * 1e3 > bool 2 unless count_values("v", c) and topk(3, d{q!="}"})'
    )
    assert [(s.name, s.matchers) for s in selectors(expr)] == [
        ("a_bucket", (("x", "=", "1"), ("y", "=~", "a|b"))),
        ("b", ()),
        ("c", ()),
        ("d", (("q", "!=", "}"),)),
    ]


def test_every_query_and_alert_evaluates_on_a_real_prometheus(tmp_path: Path) -> None:
    prometheus = d.tool("prometheus", d.DEBIAN_PROMETHEUS)
    with d.live_prometheus(tmp_path, prometheus) as live:
        for where, expr in d.dashboard_queries():
            assert live.query(d.substitute_grafana_variables(expr)), f"{where} reads nothing"
        for name, query in d.keda_queries().items():
            [sample] = live.query(query)
            expected = d.DISPATCHABLE_PER_DEVICE + d.RUNNING_PER_DEVICE
            assert float(sample["value"][1]) == expected, name
        for rule in d.alert_rules().values():
            live.query(rule["expr"])  # evaluates without a matching error on realistic series
        groups = live.get("/api/v1/rules")["data"]["groups"]
        health = {r["name"]: (r["health"], r.get("lastError")) for g in groups for r in g["rules"]}
        assert set(health) == EXPECTED_ALERTS
        assert all(h == "ok" for h, _ in health.values()), health


# =========================================================================== the operator's guide


def test_the_operator_guide_covers_apply_order_secrets_scaling_and_every_runbook() -> None:
    guide = (d.DEPLOY / "README.md").read_text()
    for path in sorted(d.KUBERNETES_DIR.glob("*.yaml")):
        assert path.name in guide, f"deploy/README.md does not say when to apply {path.name}"
    for needed in (
        "atomfleet-secrets",
        "database-url",
        "secret-key",
        "qpu-token",
        "pod-deletion-cost",
    ):
        assert needed in guide, needed
    for alert in EXPECTED_ALERTS:
        assert alert in guide, f"deploy/README.md has no runbook entry for {alert}"
