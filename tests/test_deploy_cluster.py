"""A shared cluster: a second install (staging) scraped by the same Prometheus changes
neither production's alerts nor its autoscaling (promtool unit tests on constructed series).

Every alert's firing and quiet cases of deploy/prometheus/alerts_test.yml are run again with
the other case's series copied into namespace "staging": production's firing alerts fire
unchanged, its quiet ones stay quiet. Then the cases the issue names: a staging worker does
not silence production's "device without workers"; staging's jobs do not scale production's
workers, and a staging scheduler does not stand in for production's missing one.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import deploy_support as d

PRODUCTION, STAGING = 'namespace="atomfleet"', 'namespace="staging"'


@pytest.fixture(scope="module")
def promtool() -> str:
    return d.tool("promtool", d.DEBIAN_PROMETHEUS)


def _suite() -> dict[str, Any]:
    return d.load_yaml(d.PROMETHEUS_DIR / "alerts_test.yml")  # type: ignore[no-any-return]


def _to_staging(series: list[dict[str, str]]) -> list[dict[str, str]]:
    moved = []
    for s in series:
        name = s["series"]
        assert PRODUCTION in name or "exported_namespace" in name or "namespace=" not in name, name
        if PRODUCTION in name:
            name = name.replace(PRODUCTION, STAGING)
        elif 'exported_namespace="atomfleet"' in name:  # KEDA's own series
            name = name.replace('exported_namespace="atomfleet"', 'exported_namespace="staging"')
        else:
            continue  # a series of no install: not the second install's
        moved.append({**s, "series": name})
    return moved


def _cases() -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """alert -> (its firing test groups, its quiet test groups)."""
    found: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for group in _suite()["tests"]:
        for case in group.get("alert_rule_test", []):
            firing, quiet = found.setdefault(case["alertname"], ([], []))
            one = {**group, "alert_rule_test": [case]}
            (firing if case.get("exp_alerts") else quiet).append(one)
    return found


def _run(promtool: str, tmp_path: Path, tests: list[dict[str, Any]]) -> None:
    rules = (d.PROMETHEUS_DIR / "alerts.yml").resolve()
    path = tmp_path / "cluster_test.yml"
    path.write_text(yaml.safe_dump({"rule_files": [str(rules)], "tests": tests}))
    d.assert_ok(d.run([promtool, "test", "rules", str(path)]))


def _mixed(own: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """`own` (production) with `other`'s series copied into staging, expecting what `own` did."""
    mixed = copy.deepcopy(own)
    mixed["input_series"] = own["input_series"] + _to_staging(other["input_series"])
    return mixed


def test_every_alert_reads_only_its_own_install_and_keeps_the_namespace() -> None:
    for name, rule in d.alert_rules().items():
        expr = rule["expr"]
        for selector in re.findall(r"[a-z_]+\{[^}]*\}", expr):
            assert PRODUCTION in selector or 'exported_namespace="atomfleet"' in selector, (
                f"{name}: {selector} reads every install"
            )
        bare = re.findall(r"\b(atomfleet_[a-z_]+)\b(?![{a-z_])", expr)
        assert not bare, f"{name}: {bare} without a namespace matcher"
        for by in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
            if name != "AtomfleetAutoscalerFailing":  # KEDA's namespace is its own
                assert "namespace" in by, f"{name}: `by ({by})` drops the namespace"


def test_a_second_install_changes_neither_a_firing_nor_a_quiet_alert(
    promtool: str, tmp_path: Path
) -> None:
    tests = []
    for name, (firing, quiet) in sorted(_cases().items()):
        assert firing and quiet, name
        for case in firing:  # staging healthy: production's alert still fires, once
            tests.append(_mixed(case, quiet[0]))
        for case in quiet:  # staging in trouble: production stays quiet
            tests.append(_mixed(case, firing[0]))
        for case in firing:  # staging in the same trouble: production's alert, not staging's
            tests.append(_mixed(case, case))
    _run(promtool, tmp_path, tests)


def _series(name: str, labels: str, values: str) -> dict[str, str]:
    return {"series": f"{name}{{{labels}}}", "values": values}


def test_a_staging_worker_does_not_silence_productions_device_without_workers(
    promtool: str, tmp_path: Path
) -> None:
    prod = f'{PRODUCTION},job="atomfleet-scheduler",instance="scheduler.atomfleet:9101"'
    stag = f'{STAGING},job="atomfleet-scheduler",instance="scheduler.staging:9101"'
    rule = d.alert_rules()["AtomfleetDeviceWithoutWorkers"]
    test = {
        "interval": "1m",
        "input_series": [
            _series(
                "atomfleet_jobs_waiting", f'device_type="EMU_SV",priority="HIGH",{prod}', "3x30"
            ),
            _series("atomfleet_workers", f'device_type="EMU_SV",{prod}', "0x30"),
            # staging serves EMU_SV with 4 workers, and has EMU_MPS jobs without workers
            _series("atomfleet_workers", f'device_type="EMU_SV",{stag}', "4x30"),
            _series(
                "atomfleet_jobs_waiting", f'device_type="EMU_MPS",priority="LOW",{stag}', "9x30"
            ),
            _series("atomfleet_workers", f'device_type="EMU_MPS",{stag}', "0x30"),
        ],
        "alert_rule_test": [
            {
                "eval_time": "15m",
                "alertname": "AtomfleetDeviceWithoutWorkers",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "critical",
                            "namespace": "atomfleet",
                            "device_type": "EMU_SV",
                        },
                        "exp_annotations": {
                            "summary": "EMU_SV: 3 jobs wait and no worker serves the device",
                            "description": "3 EMU_SV jobs are PENDING and the scheduler has"
                            " seen no live worker of that device type for 10 minutes: nothing"
                            " will run them.",
                            "runbook": rule["annotations"]["runbook"].replace(
                                "{{ $labels.device_type }}", "EMU_SV"
                            ),
                        },
                    }
                ],
            }
        ],
    }
    _run(promtool, tmp_path, [test])


def _keda_tests() -> list[dict[str, Any]]:
    deployments = d.objects_of("Deployment")
    tests = []

    def labels(ns: str, extra: str = "") -> str:
        where = f'namespace="{ns}",job="atomfleet-scheduler",instance="scheduler.{ns}:9101"'
        return f"{extra},{where}" if extra else where

    def install(ns: str, device: str, dispatchable: int, running: int) -> list[dict[str, str]]:
        device_label = f'device_type="{device}"'
        return [
            _series("atomfleet_jobs_dispatchable", labels(ns, device_label), f"{dispatchable}x5"),
            _series(
                "atomfleet_jobs_waiting",
                labels(ns, f'{device_label},priority="LOW"'),
                f"{dispatchable + 40}x5",
            ),
            _series("atomfleet_jobs_running", labels(ns, device_label), f"{running}x5"),
            _series("atomfleet_batches_open", labels(ns), "2x5"),
            _series("atomfleet_scheduler_last_loop_timestamp_seconds", labels(ns), "0+60x5"),
        ]

    for name, query in d.keda_queries().items():
        target = d.objects_of("ScaledObject")[name]["spec"]["scaleTargetRef"]["name"]
        device = deployments[target]["metadata"]["labels"]["atomfleet.io/device-type"]
        cases = [
            # production alone: 3 dispatchable (40 more held back by a project's cap) + 2 running
            (install("atomfleet", device, 3, 2), [5]),
            # staging's 50 jobs of the same device change nothing
            (install("atomfleet", device, 3, 2) + install("staging", device, 50, 8), [5]),
            # production's scheduler not scraped, staging's is: no sample (KEDA falls back)
            (install("staging", device, 50, 8), []),
        ]
        for series, values in cases:
            samples = [{"labels": "{}", "value": v} for v in values]
            tests.append(
                {
                    "interval": "1m",
                    "input_series": series,
                    "promql_expr_test": [
                        {"expr": query, "eval_time": "3m", "exp_samples": samples}
                    ],
                }
            )
    return tests


def test_staging_does_not_scale_production_and_capped_jobs_are_no_demand(
    promtool: str, tmp_path: Path
) -> None:
    tests = _keda_tests()
    assert tests, "no ScaledObject"
    (tmp_path / "keda.yml").write_text(yaml.safe_dump({"rule_files": [], "tests": tests}))
    d.assert_ok(d.run([promtool, "test", "rules", str(tmp_path / "keda.yml")]))


def test_every_process_that_calls_the_qpu_gets_its_token() -> None:
    """The scheduler's QPU watch and the FRESNEL worker call the QPU API with the token; the
    compose QPU simulator requires it, so compose exercises the token end to end."""
    callers = {"atomfleet-scheduler", "atomfleet-worker-fresnel"}
    for name in callers:
        [container] = d.containers(d.objects_of("Deployment")[name])
        env = {e["name"]: e for e in container.get("env", [])}
        ref = env["ATOMFLEET_QPU_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("atomfleet-secrets", "qpu-token"), name
    compose = d.load_yaml(d.DEPLOY / "compose.yaml")["services"]
    simulator = compose["qpu-simulator"]
    token = simulator["command"][simulator["command"].index("--token") + 1]
    for name in ("scheduler", "worker-fresnel"):
        assert compose[name]["environment"]["ATOMFLEET_QPU_TOKEN"] == token, name
    assert "Authorization" in " ".join(simulator["healthcheck"]["test"])
    guide = (d.DEPLOY / "README.md").read_text()
    assert "| scheduler |" in guide and "qpu-token" in guide
