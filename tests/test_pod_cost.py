"""The worker's pod deletion cost, against a tiny local HTTP server standing in for the
Kubernetes API server: the PATCH it sends, its token, its changes only, its failures."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import wait_for
from workers.pod_cost import ANNOTATION, PodCost, PodCostUpdater


class ApiServer:
    """Records every request; answers the given codes in turn (then 200 with the pod)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.answers: list[int] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_PATCH(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                server.requests.append(("PATCH", self.path, headers, json.loads(raw)))
                code = server.answers.pop(0) if server.answers else 200
                body = json.dumps({"kind": "Pod" if code == 200 else "Status"}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def costs(self) -> list[str]:
        return [body["metadata"]["annotations"][ANNOTATION] for _, _, _, body in self.requests]

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def api_server() -> Iterator[ApiServer]:
    server = ApiServer()
    yield server
    server.close()


def test_the_cost_is_patched_on_the_pod_with_the_token_and_only_when_it_changes(
    api_server: ApiServer, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("token-1\n")
    cost = PodCost(api_server.url, "atomfleet", "worker-abc", token.read_text)
    assert cost.set(1) and cost.set(1)
    token.write_text("token-2")  # the kubelet rotated it
    assert cost.set(0)
    [(method, path, headers, body), second] = api_server.requests
    assert method == "PATCH"
    assert path == "/api/v1/namespaces/atomfleet/pods/worker-abc"
    assert headers["authorization"] == "Bearer token-1"
    assert headers["content-type"] == "application/merge-patch+json"
    assert body == {"metadata": {"annotations": {ANNOTATION: "1"}}}
    assert second[2]["authorization"] == "Bearer token-2"
    assert api_server.costs() == ["1", "0"]


def test_a_refused_patch_is_retried_on_the_next_turn_and_never_raises(
    api_server: ApiServer, tmp_path: Path
) -> None:
    # Given an API server that first answers 403 (the Role is missing), then 200
    api_server.answers = [403]
    busy = [2]
    cost = PodCost(api_server.url, "atomfleet", "w", lambda: "t")
    updater = PodCostUpdater(cost, busy=lambda: busy[0])
    updater.turn()
    assert cost.sent is None
    updater.turn()  # the same cost, sent again since the first failed
    busy[0] = 0
    updater.turn()
    updater.turn()
    assert api_server.costs() == ["2", "2", "0"]
    # And an API server that is gone makes a failed turn, not an exception
    api_server.close()
    busy[0] = 1
    updater.turn()
    assert cost.sent == 0


def test_the_updater_thread_follows_the_busy_slots(api_server: ApiServer) -> None:
    busy = [0]
    cost = PodCost(api_server.url, "atomfleet", "w", lambda: "t")
    updater = PodCostUpdater(cost, busy=lambda: busy[0], interval_s=0.05).start()
    try:
        wait_for(lambda: cost.sent == 0, 10, "the idle cost")
        busy[0] = 1
        wait_for(lambda: cost.sent == 1, 10, "the busy cost")
    finally:
        updater.stop()
    assert api_server.costs() == ["0", "1"]


def test_outside_kubernetes_there_is_no_cost_to_keep(tmp_path: Path) -> None:
    account = tmp_path / "sa"
    account.mkdir()
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert PodCost.in_cluster(None, account, env) is None  # no ATOMFLEET_POD_NAME
    assert PodCost.in_cluster("w", account, env) is None  # no token mounted
    assert PodCost.in_cluster("w", account, {}) is None  # not in a cluster
