"""The sandbox's state: workspace, projects, assets and their reservations, nodes, idempotency.

Owns the records, the one lock that guards them, ids, and persistence: with a ``data_dir``,
``state.json`` is rewritten atomically after every change and blobs live in ``blobs/``;
without one, blobs go to a temporary directory removed by ``close()``. Knows nothing of HTTP.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_VERSION = 1
PROJECT_NAMES = ("Spring Campaign", "Product Shots")
WORKSPACE_NAME = "Sandbox Workspace"


@dataclass(slots=True)
class Workspace:
    workspace_id: str
    name: str
    created_at: float


@dataclass(slots=True)
class Project:
    project_id: str
    name: str
    workspace_id: str
    origin: str | None
    created_at: float
    last_modified: float
    seq: int


@dataclass(slots=True)
class Reservation:
    """One set of signed upload instructions; ``state`` is active, used or dead (superseded)."""

    token: str
    expire: int
    fields: dict[str, str]
    state: str = "active"


@dataclass(slots=True)
class UploadAttempt:
    """What the upload target did with one request for this asset."""

    token: str
    status: int | None
    size_bytes: int | None
    sha256: str | None
    at: float


@dataclass(slots=True)
class Asset:
    """An asset and its lifecycle (CONTRACT §7.2).

    ``status`` is pending_upload, ready or failed; ``has_bytes`` says the upload target stored
    bytes for the current reservation; ``processing_until`` (epoch seconds) keeps a completed
    asset in pending_upload until then (CONTRACT §14 Q3).
    """

    asset_id: str
    workspace_id: str
    name: str | None
    file_name: str
    declared_type: str | None
    folder: str | None
    created_at: float
    seq: int
    status: str = "pending_upload"
    failure_message: str | None = None
    has_bytes: bool = False
    part_type: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    processing_until: float | None = None
    reservations: list[Reservation] = field(default_factory=list)
    uploads: list[UploadAttempt] = field(default_factory=list)

    @property
    def reservation(self) -> Reservation | None:
        """The current (newest) reservation."""
        return self.reservations[-1] if self.reservations else None


@dataclass(slots=True)
class Node:
    node_id: str
    project_id: str
    asset_id: str
    type: str
    label: str | None


@dataclass(slots=True)
class IdempotencyRecord:
    """A remembered answer (2xx, or 4xx with ``replay_errors``) to a keyed request."""

    at: float
    body_digest: str
    status: int
    body: Any
    headers: dict[str, str]


class Store:
    """All sandbox records behind one re-entrant lock; use ``mutate()`` to change them."""

    def __init__(self, data_dir: Path | None = None, api_key: str | None = None) -> None:
        self.lock = threading.RLock()
        self._data_dir = data_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.seq = 0
        self.projects: dict[str, Project] = {}
        self.assets: dict[str, Asset] = {}
        self.nodes: dict[str, list[Node]] = {}
        self.idempotency: dict[str, IdempotencyRecord] = {}
        self.tokens: dict[str, str] = {}
        if data_dir is not None and (data_dir / STATE_FILE).exists():
            self._load(data_dir / STATE_FILE)
        else:
            self._create()
        if api_key is not None:
            self.api_key = api_key
        self.blob_dir = self._blob_dir()
        self._save()

    @contextmanager
    def mutate(self) -> Iterator[None]:
        """Hold the lock for a change, then persist it (state.json) if the block succeeded."""
        with self.lock:
            yield
            self._save()

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def add_project(self, name: str, *, origin: str | None = "api") -> Project:
        now = time.time()
        project = Project(
            new_id("prj_"), name, self.workspace.workspace_id, origin, now, now, self.next_seq()
        )
        self.projects[project.project_id] = project
        self.nodes[project.project_id] = []
        return project

    def add_asset(self, asset: Asset) -> None:
        self.assets[asset.asset_id] = asset

    def add_reservation(self, asset: Asset, reservation: Reservation) -> None:
        """Make ``reservation`` the asset's current one; every earlier token dies (§7.2)."""
        for old in asset.reservations:
            if old.state == "active":
                old.state = "dead"
        asset.reservations.append(reservation)
        self.tokens[reservation.token] = asset.asset_id

    def owner_of(self, token: str) -> tuple[Asset, Reservation] | None:
        """The asset and reservation that issued ``token``, if any."""
        asset = self.assets.get(self.tokens.get(token, ""))
        if asset is None:
            return None
        for reservation in asset.reservations:
            if reservation.token == token:
                return asset, reservation
        return None

    def blob_path(self, asset_id: str) -> Path:
        """Where the bytes of ``asset_id`` live (the file may not exist)."""
        return self.blob_dir / asset_id

    def discard_bytes(self, asset: Asset) -> None:
        asset.has_bytes = False
        asset.size_bytes = asset.sha256 = asset.part_type = None
        asset.processing_until = None
        self.blob_path(asset.asset_id).unlink(missing_ok=True)

    def close(self) -> None:
        """Remove the temporary blob directory (a ``data_dir`` is kept)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _create(self) -> None:
        self.api_key = "sk_test_" + secrets.token_hex(16)
        self.public_key = "public_sandbox_" + secrets.token_hex(8)
        self.private_key = "private_sandbox_" + secrets.token_hex(16)
        self.workspace = Workspace(new_id("ws_"), WORKSPACE_NAME, time.time())
        for name in PROJECT_NAMES:
            project = self.add_project(name)
            project.created_at = project.last_modified = self.workspace.created_at

    def _blob_dir(self) -> Path:
        if self._data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="florasync-sandbox-")
            return Path(self._tmp.name)
        path = self._data_dir / "blobs"
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob(".upload-*.part"):  # uploads cut off by an earlier stop or crash
            stale.unlink(missing_ok=True)
        return path

    def _save(self) -> None:
        if self._data_dir is None:
            return
        with self.lock:
            text = json.dumps(self._snapshot(), separators=(",", ":"))
        target = self._data_dir / STATE_FILE
        fd, tmp = tempfile.mkstemp(dir=self._data_dir, prefix=".state-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            Path(tmp).replace(target)  # atomic: a reader sees the old or the new file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _snapshot(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "seq": self.seq,
            "api_key": self.api_key,
            "public_key": self.public_key,
            "private_key": self.private_key,
            "workspace": dataclasses.asdict(self.workspace),
            "projects": [dataclasses.asdict(p) for p in self.projects.values()],
            "assets": [dataclasses.asdict(a) for a in self.assets.values()],
            "nodes": {pid: [dataclasses.asdict(n) for n in ns] for pid, ns in self.nodes.items()},
            "idempotency": {k: dataclasses.asdict(r) for k, r in self.idempotency.items()},
        }

    def _load(self, path: Path) -> None:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") != STATE_VERSION:
            raise ValueError(f"{path}: unsupported sandbox state version {doc.get('version')!r}")
        self.seq = doc["seq"]
        self.api_key = doc["api_key"]
        self.public_key = doc["public_key"]
        self.private_key = doc["private_key"]
        self.workspace = Workspace(**doc["workspace"])
        self.projects = {p["project_id"]: Project(**p) for p in doc["projects"]}
        self.assets = {a["asset_id"]: _asset_from(a) for a in doc["assets"]}
        self.nodes = {pid: [Node(**n) for n in ns] for pid, ns in doc["nodes"].items()}
        self.idempotency = {k: IdempotencyRecord(**r) for k, r in doc["idempotency"].items()}
        self.tokens = {r.token: a.asset_id for a in self.assets.values() for r in a.reservations}
        log.info("sandbox state loaded from %s (%d assets)", path, len(self.assets))


def new_id(prefix: str) -> str:
    """A public id: the type prefix (CONTRACT §1) and 24 random hex digits."""
    return prefix + secrets.token_hex(12)


def _asset_from(doc: dict[str, Any]) -> Asset:
    values = dict(doc)
    values["reservations"] = [Reservation(**r) for r in doc["reservations"]]
    values["uploads"] = [UploadAttempt(**u) for u in doc["uploads"]]
    return Asset(**values)
