"""A worker's pod deletion cost: busy pods are the last a scale-down removes.

When KEDA's HPA scales a Deployment down, the ReplicaSet deletes the pods with the lowest
`controller.kubernetes.io/pod-deletion-cost` annotation first. The worker keeps that
annotation at its number of busy slots (an idle pod: 0), patched through the in-cluster
API with the pod's service account token, whenever that number changes. Best effort: a
failed patch is logged and retried on the next change or turn; it never stops a job.

It runs only in Kubernetes, when `ATOMFLEET_POD_NAME` (the downward API's `metadata.name`)
is set and the service account's token is mounted (50-workers.yaml gives the workers a
ServiceAccount whose Role may patch pods, and only that).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
INTERVAL_S = 5.0
TIMEOUT_S = 5.0


class PodCost:
    """Patches one pod's deletion cost through the Kubernetes API."""

    def __init__(
        self,
        api_url: str,
        namespace: str,
        pod: str,
        token: Callable[[], str],
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = f"{api_url.rstrip('/')}/api/v1/namespaces/{namespace}/pods/{pod}"
        self.token = token
        self.context = context
        self.sent: int | None = None  # the cost last patched successfully

    @classmethod
    def in_cluster(
        cls, pod: str | None, account: Path = SERVICE_ACCOUNT, env: dict[str, str] | None = None
    ) -> PodCost | None:
        """The pod's own PodCost, or None outside Kubernetes (no pod name, no token)."""
        env = dict(os.environ) if env is None else env
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
        token = account / "token"
        if not pod or not host or not token.exists():
            return None
        namespace = (account / "namespace").read_text().strip()
        context = ssl.create_default_context(cafile=str(account / "ca.crt"))
        host = f"[{host}]" if ":" in host else host  # an IPv6 service address
        # The token is re-read on each patch: the kubelet rotates projected tokens.
        return cls(
            f"https://{host}:{port or 443}", namespace, pod, token.read_text, context=context
        )

    def set(self, cost: int) -> bool:
        """Patch the annotation to `cost` unless it already is; False when the patch failed."""
        if cost == self.sent:
            return True
        body = json.dumps({"metadata": {"annotations": {ANNOTATION: str(cost)}}}).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            method="PATCH",
            headers={
                "Authorization": f"Bearer {self.token().strip()}",
                "Content-Type": "application/merge-patch+json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=self.context) as r:
                r.read()
        except (urllib.error.URLError, OSError) as exc:
            detail = exc.read().decode(errors="replace")[:300] if isinstance(
                exc, urllib.error.HTTPError
            ) else ""  # fmt: skip
            log.warning("cannot set the pod's deletion cost to %d: %s %s", cost, exc, detail)
            return False
        self.sent = cost
        return True


class PodCostUpdater:
    """Every `interval_s`, sets the pod's deletion cost to `busy()` (in a daemon thread)."""

    def __init__(
        self, cost: PodCost, busy: Callable[[], int], interval_s: float = INTERVAL_S
    ) -> None:
        self.cost = cost
        self.busy = busy
        self.interval_s = interval_s
        self._stop = threading.Event()

    def start(self) -> PodCostUpdater:
        threading.Thread(target=self._run, name="pod-cost", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def turn(self) -> None:
        try:
            self.cost.set(self.busy())
        except Exception:  # a bug here must not stop the worker
            log.exception("pod deletion cost")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.turn()
            self._stop.wait(self.interval_s)
