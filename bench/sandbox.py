"""The FLORA sandbox as a child process (``florasync sandbox``), and a small client for it.

Owns starting it on a free loopback port, reading the ids it prints, and the few requests the
benchmarks make: the state document, the request log, a project's node count, a reservation.
It runs in its own process so that the benchmark's own work (writing files, polling, timing)
never competes with it for a GIL; it still shares the machine's cores with florasync.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import measure
from bench.session import Scope

START_SECONDS = 20.0
REQUEST_SECONDS = 120.0  # the state document of 20,000 assets takes a while
API_KEY_ENV = "FLORA_API_KEY"
ATTACH_ROUTE = "POST /projects/{id}/assets/{id}/attach"


@dataclass(frozen=True, slots=True)
class Endpoints:
    """What ``florasync sandbox`` printed at start."""

    origin: str
    base_url: str
    upload_url: str
    workspace_id: str
    project_ids: tuple[str, ...]


class SandboxProcess:
    """A running ``florasync sandbox``; stopped with its scope."""

    def __init__(self, scope: Scope, *, latency_seconds: float = 0.0) -> None:
        self.api_key = f"sk_test_bench_{secrets.token_hex(8)}"
        tmp = scope.subdir("sandbox-tmp")  # its blobs: removed with the scope
        out = scope.path("sandbox.out")
        argv = [sys.executable, "-m", "florasync", "sandbox", "--port", "0"]
        argv += ["--latency", str(latency_seconds)]
        env = {**os.environ, API_KEY_ENV: self.api_key, "TMPDIR": str(tmp)}
        with out.open("wb") as stdout, scope.path("sandbox.err").open("wb") as stderr:
            self.proc = scope.spawn(argv, env=env, stdout=stdout, stderr=stderr)
        self.endpoints = _wait_for_banner(self.proc.pid, out)
        self._http = _Http(self.endpoints.origin)

    @property
    def project(self) -> str:
        """The first project: the one every benchmark maps its folder to."""
        return self.endpoints.project_ids[0]

    def state(self, *, requests: bool = False) -> dict[str, Any]:
        """``GET /_sandbox/state`` (costs the sandbox O(assets): call it rarely)."""
        doc: dict[str, Any] = self._http.get_json(f"/_sandbox/state?requests={int(requests)}", {})
        return doc

    def requests(self) -> list[dict[str, Any]]:
        """The request log: every request with its monotonic arrival time ``t``."""
        log: list[dict[str, Any]] = self.state(requests=True)["requests"]
        return log

    def node_count(self, project_id: str | None = None) -> int:
        """How many nodes a project holds: one cheap API call (``meta.total_estimate``)."""
        path = f"/api/v1/projects/{project_id or self.project}/nodes?limit=1"
        doc = self._http.get_json(path, self._auth())
        return int(doc["meta"]["total_estimate"])

    def attached_names(self, name_part: str, project_id: str | None = None) -> set[str]:
        """Names of the assets attached to a project whose name contains ``name_part``: one
        API call, far cheaper for the sandbox than the state document (at most 100 names)."""
        project = project_id or self.project
        path = f"/api/v1/assets?project_id={project}&query={name_part}&limit=100"
        doc = self._http.get_json(path, self._auth())
        return {a["name"] for a in doc["assets"]}

    def reserve(self, file_name: str, content_type: str) -> dict[str, Any]:
        """``POST /assets``: a fresh signed upload (for the curl floors)."""
        body = {
            "source": "signed-url",
            "workspace_id": self.endpoints.workspace_id,
            "file_name": file_name,
            "content_type": content_type,
        }
        headers = {**self._auth(), "Idempotency-Key": f"bench-{secrets.token_hex(12)}"}
        doc: dict[str, Any] = self._http.post_json("/api/v1/assets", body, headers)
        return doc

    def cpu_seconds(self) -> float:
        return measure.proc_cpu_seconds(self.proc.pid)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def attach_times(log: list[dict[str, Any]], after_seq: int = 0) -> list[float]:
    """Arrival times of successful attach requests (seq > ``after_seq``), in log order."""
    return [
        float(r["t"])
        for r in log
        if r["seq"] > after_seq and r["route"] == ATTACH_ROUTE and r["status"] == 201
    ]


def posts_after(log: list[dict[str, Any]], after_seq: int) -> list[dict[str, Any]]:
    """Mutating requests (every POST, uploads included) logged after ``after_seq``."""
    return [r for r in log if r["seq"] > after_seq and r["method"] == "POST"]


def _wait_for_banner(pid: int, out: Path) -> Endpoints:
    """Parse the banner ``florasync sandbox`` prints once it is listening."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        text = out.read_text(encoding="utf-8")
        if "\n  data:" in text:
            return _parse_banner(text)
        if not measure.is_alive(pid):
            raise RuntimeError(f"florasync sandbox exited at start: {text!r}")
        time.sleep(0.05)
    raise RuntimeError(f"florasync sandbox printed no banner in {START_SECONDS:.0f} s")


def _parse_banner(text: str) -> Endpoints:
    def field(label: str) -> str:
        match = re.search(rf"^\s*{label}:?\s+(\S+)", text, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no {label!r} in the sandbox banner: {text!r}")
        return match.group(1)

    return Endpoints(
        origin=field("FLORA sandbox listening on").rstrip("/"),
        base_url=field("API base URL"),
        upload_url=field("upload URL"),
        workspace_id=field("workspace"),
        project_ids=tuple(re.findall(r"^ {4}(prj_\w+)", text, re.MULTILINE)),
    )


class _Http:
    """One keep-alive connection to the sandbox, reopened when it drops."""

    def __init__(self, origin: str) -> None:
        host, _, port = origin.removeprefix("http://").partition(":")
        self._address = (host, int(port))
        self._conn: http.client.HTTPConnection | None = None

    def get_json(self, path: str, headers: dict[str, str]) -> Any:
        return self._request("GET", path, None, headers)

    def post_json(self, path: str, body: Any, headers: dict[str, str]) -> Any:
        data = json.dumps(body).encode()
        return self._request("POST", path, data, {**headers, "Content-Type": "application/json"})

    def _request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Any:
        try:
            return self._send(method, path, body, headers)
        except (ConnectionError, http.client.HTTPException):
            self._close()  # a keep-alive connection the server dropped: one fresh try
            return self._send(method, path, body, headers)

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Any:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(*self._address, timeout=REQUEST_SECONDS)
        self._conn.request(method, path, body=body, headers=headers)
        response = self._conn.getresponse()
        data = response.read()
        if response.status >= 400:
            raise RuntimeError(f"sandbox: {method} {path} -> {response.status}: {data!r}")
        return json.loads(data)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
