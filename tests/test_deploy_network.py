"""deploy/kubernetes' NetworkPolicy and Ingress, offline: validated like the other manifests,
every atomfleet pod selected, each port the policies name is a container's, each process may
reach what it needs (and workers never the database), and the Ingress serves the public API
over TLS on ATOMFLEET_PUBLIC_URL's host."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import yaml

from api.app import create_app
from core.config import Settings
from tests import deploy_support as d

DEFAULT_PORTS = {"http": 80, "https": 443, "redis": 6379, "rediss": 6379, "postgresql": 5432}
PROBES = {"/metrics", "/healthz", "/readyz"}
KUBERNETES_API = {443, 6443}  # the `kubernetes` Service's port and its endpoints' usual one


def _pods() -> dict[str, tuple[dict[str, str], list[dict[str, Any]]]]:
    """Every atomfleet workload's pod: its labels and containers."""
    return {
        f"{o['kind']} {name}": (o["spec"]["template"]["metadata"]["labels"], d.containers(o))
        for kind in ("Deployment", "Job")
        for name, o in d.objects_of(kind).items()
    }


def _policies() -> dict[str, dict[str, Any]]:
    return d.objects_of("NetworkPolicy")


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    assert set(selector) <= {"matchLabels"}, "only matchLabels are read here"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _port_of(url: str) -> int:
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    return parts.port or DEFAULT_PORTS[scheme]


def _egress(labels: dict[str, str]) -> list[dict[str, Any]]:
    """The egress rules that apply to a pod (policies add up)."""
    return [
        rule
        for policy in _policies().values()
        if "Egress" in policy["spec"]["policyTypes"] and _selects(policy, labels)
        for rule in policy["spec"].get("egress", [])
    ]


def _reaches(rules: list[dict[str, Any]], port: int, protocol: str = "TCP") -> str | None:
    """Where a pod may open `port`: "anywhere", "public" (a rule of public address blocks),
    or None."""
    found = None
    for rule in rules:
        ports = rule.get("ports")
        if ports is not None and not any(
            p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports
        ):
            continue
        if "to" not in rule:
            return "anywhere"
        found = "public"
    return found


def test_the_network_policy_and_the_ingress_are_validated_strictly_with_the_rest() -> None:
    # test_deploy.py validates every deploy/kubernetes/*.yaml: these are among them
    names = {p.name for p in d.KUBERNETES_DIR.glob("*.yaml")}
    assert {"80-network-policy.yaml", "90-ingress.yaml"} <= names
    validate = d.tool("kubernetes-validate", "pip install kubernetes-validate (a dev dependency)")
    files = ["deploy/kubernetes/80-network-policy.yaml", "deploy/kubernetes/90-ingress.yaml"]
    result = d.run([validate, "--strict", *files])
    d.assert_ok(result)
    checked = set(re.findall(r"passed for resource (\w+)/([\w-]+)", result.stdout + result.stderr))
    expected = {("networkpolicy", n) for n in _policies()} | {("ingress", "atomfleet-api")}
    assert checked == expected


def test_ingress_is_denied_by_default_and_every_pod_is_selected_on_ports_it_has() -> None:
    policies = _policies()
    [deny] = [
        p for p in policies.values()
        if p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"]
    ]  # fmt: skip
    assert "ingress" not in deny["spec"], "the default denies all ingress"
    for where, (labels, containers) in _pods().items():
        selecting = [p for p in policies.values() if _selects(p, labels)]
        assert deny in selecting, where
        assert any("Egress" in p["spec"]["policyTypes"] for p in selecting), f"{where}: no egress"
        ports = {(c["name"], c["containerPort"]) for ct in containers for c in ct.get("ports", [])}
        allowed = [
            port["port"]
            for p in selecting
            if "Ingress" in p["spec"]["policyTypes"]
            for rule in p["spec"].get("ingress", [])
            for port in rule.get("ports", [])
        ]
        # Each port the pod serves is admitted by some rule (Prometheus scrapes them all)
        for name, number in ports:
            assert name in allowed or number in allowed, f"{where}: port {name} never admitted"
    # and each port an ingress rule names is a port of some pod it selects
    for name, policy in policies.items():
        served = {
            key
            for labels, containers in _pods().values()
            if _selects(policy, labels)
            for ct in containers
            for c in ct.get("ports", [])
            for key in (c["name"], c["containerPort"])
        }
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                assert port["port"] in served, f"{name}: no selected pod has port {port['port']}"


def test_prometheus_of_the_monitoring_namespace_may_scrape_what_the_pod_monitor_scrapes() -> None:
    rule = next(
        r
        for p in _policies().values()
        for r in p["spec"].get("ingress", [])
        if "from" in r and "namespaceSelector" in r["from"][0]
    )
    namespace = rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
    keda = {t["metadata"]["serverAddress"] for so in d.objects_of("ScaledObject").values()
            for t in so["spec"]["triggers"]}  # fmt: skip
    assert all(f".{namespace}.svc" in address for address in keda), (namespace, keda)
    [monitor] = d.objects_of("PodMonitor").values()
    scraped = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    assert scraped <= {p["port"] for p in rule["ports"]}


def test_each_process_may_reach_what_it_needs_and_workers_never_the_database() -> None:
    config = d.objects_of("ConfigMap")["atomfleet-config"]["data"]
    redis = _port_of(config["ATOMFLEET_REDIS_URL"])
    qpus = {_port_of(url) for url in yaml.safe_load(config["ATOMFLEET_QPUS"]).values()}
    database = re.search(r"database-url='([^']+)'", (d.DEPLOY / "README.md").read_text())
    assert database, "deploy/README.md shows the database URL"
    postgres = _port_of(database.group(1))
    needs = {
        "api": {postgres, redis},
        "scheduler": {postgres, redis, *qpus},
        # and the Kubernetes API server, for its pod deletion cost (workers/pod_cost.py)
        "worker": {redis, *KUBERNETES_API},
        "migrate": {postgres},
    }
    everything = {postgres, redis, *qpus, *KUBERNETES_API}
    for where, (labels, _) in _pods().items():
        rules = _egress(labels)
        assert _reaches(rules, 53, "UDP") == "anywhere", f"{where}: no DNS"
        wanted = set(needs[labels["app.kubernetes.io/component"]])
        if labels.get("atomfleet.io/device-type") == "FRESNEL":
            wanted |= qpus  # the QPU's worker talks to the QPU API
        for port in wanted:
            assert _reaches(rules, port) == "anywhere", f"{where} cannot reach port {port}"
        for port in everything - wanted:
            # (the scheduler's webhooks reach public addresses on any port, 6443 included)
            allowed = {None, "public"} if port in KUBERNETES_API else {None}
            assert _reaches(rules, port) in allowed, f"{where} may reach port {port}"
    # Webhooks: the scheduler alone reaches public addresses on any port, never private ones
    scheduler = _egress(
        {"app.kubernetes.io/name": "atomfleet", "app.kubernetes.io/component": "scheduler"}
    )
    [public] = [r for r in scheduler if "to" in r]
    assert "ports" not in public
    v4 = next(t["ipBlock"] for t in public["to"] if t["ipBlock"]["cidr"] == "0.0.0.0/0")
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(v4["except"])
    for where, (labels, _) in _pods().items():
        if labels["app.kubernetes.io/component"] != "scheduler":
            assert not [r for r in _egress(labels) if "to" in r], f"{where} reaches the internet"


def test_the_ingress_serves_the_public_api_over_tls_on_the_public_url() -> None:
    [ingress] = d.objects_of("Ingress").values()
    public = urlsplit(d.objects_of("ConfigMap")["atomfleet-config"]["data"]["ATOMFLEET_PUBLIC_URL"])
    assert public.scheme == "https", "results links must be https behind TLS"
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == public.hostname
    assert any(
        public.hostname in tls["hosts"] and tls["secretName"] for tls in ingress["spec"]["tls"]
    )
    assert "cert-manager.io/cluster-issuer" in ingress["metadata"]["annotations"]
    # Every path goes to the API's Service, on a port the Service has
    service = d.objects_of("Service")["atomfleet-api"]
    ports = {p["name"] for p in service["spec"]["ports"]} | {
        p["port"] for p in service["spec"]["ports"]
    }
    paths = rule["http"]["paths"]
    for path in paths:
        backend = path["backend"]["service"]
        assert backend["name"] == "atomfleet-api"
        assert backend["port"].get("name", backend["port"].get("number")) in ports
    # Each route of the API is served, except the probes and metrics, which stay inside
    app = create_app(Settings(database_url="postgresql+psycopg://x@127.0.0.1:1/x",
                              redis_url="redis://127.0.0.1:1/0", secret_key="s"))  # fmt: skip
    routes = set(app.openapi()["paths"]) | {app.openapi_url, app.docs_url, app.redoc_url}

    def served(route: str) -> bool:
        return any(
            route == p["path"] or (p["pathType"] == "Prefix" and route.startswith(p["path"] + "/"))
            for p in paths
        )

    assert routes > PROBES
    for route in routes:
        assert served(route) == (route not in PROBES), route
    # Bodies up to the API's own limit get through
    size = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert int(size.removesuffix("m")) * 1024 * 1024 >= Settings().max_body_bytes
