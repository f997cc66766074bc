"""Typed FLORA API objects, parsed leniently from JSON (CONTRACT.md §6 to §9).

Owns the shapes florasync reads from the API: unknown keys are ignored, both spellings of the
upload object are accepted (§8), timestamps of either unit or format are normalised (Q9). Knows
nothing of HTTP; parsing failures raise ``ValueError`` for the client to wrap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class AssetStatus(StrEnum):
    """The asset lifecycle the API reports (closed enum in the spec, §7.1)."""

    PENDING_UPLOAD = "pending_upload"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class UploadInstructions:
    """Where and how to push the bytes of one reservation (the ``upload`` object, §8)."""

    url: str
    fields: Mapping[str, str] = field(default_factory=dict)
    file_field: str = "file"
    method: str = "POST"
    expires_at: float | None = None  # epoch seconds

    def to_json(self) -> str:
        """Serialise for the journal (the signed fields are needed to resume an upload)."""
        return json.dumps(
            {
                "url": self.url,
                "fields": dict(self.fields),
                "file_field": self.file_field,
                "method": self.method,
                "expires_at": self.expires_at,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> UploadInstructions:
        """The inverse of ``to_json``."""
        raw = json.loads(text)
        return cls(
            url=raw["url"],
            fields=dict(raw["fields"]),
            file_field=raw["file_field"],
            method=raw["method"],
            expires_at=raw["expires_at"],
        )

    def expires_within(self, seconds: float, now: float) -> bool:
        """True when the instructions are expired or will be within ``seconds`` (epoch ``now``)."""
        return self.expires_at is not None and self.expires_at - seconds <= now


@dataclass(frozen=True, slots=True)
class Asset:
    """An asset as any of create / complete / retry / get / list returns it."""

    asset_id: str
    status: str  # an AssetStatus value, or an unknown future value kept verbatim
    url: str | None = None
    name: str | None = None
    content_type: str | None = None
    size_bytes: int | None = None
    failure_message: str | None = None
    created_at: float | None = None  # epoch seconds
    upload: UploadInstructions | None = None

    @property
    def is_ready(self) -> bool:
        return self.status == AssetStatus.READY

    @property
    def is_failed(self) -> bool:
        return self.status == AssetStatus.FAILED


@dataclass(frozen=True, slots=True)
class Workspace:
    workspace_id: str
    name: str
    role: str | None = None


@dataclass(frozen=True, slots=True)
class Project:
    project_id: str
    name: str
    workspace_id: str | None = None
    origin: str | None = None


@dataclass(frozen=True, slots=True)
class Node:
    """A visible canvas node of a project (§9.5)."""

    node_id: str
    type: str | None = None
    asset_id: str | None = None
    label: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """The answer of attach (§9.6)."""

    project_id: str
    asset_id: str
    node_id: str
    canvas_url: str | None = None


def parse_time(value: object) -> float | None:
    """Epoch seconds from an ISO-8601 string or a number of seconds or milliseconds (Q9)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return value / 1000.0 if value > 1e11 else float(value)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    return None


def parse_upload(body: Mapping[str, Any]) -> UploadInstructions | None:
    """The upload instructions of an asset response in either spelling, or None (§8)."""
    upload = body.get("upload")
    upload = upload if isinstance(upload, Mapping) else {}
    url = upload.get("url") or body.get("upload_url")
    if not url:
        return None
    fields = upload.get("form_fields")
    if fields is None:
        fields = upload.get("formFields")
    return UploadInstructions(
        url=str(url),
        fields={str(k): str(v) for k, v in (fields or {}).items()},
        file_field=str(upload.get("file_field") or upload.get("fileField") or "file"),
        method=str(upload.get("method") or "POST").upper(),
        expires_at=parse_time(body.get("expires_at")),
    )


def parse_asset(body: Mapping[str, Any]) -> Asset:
    """An ``Asset`` from any asset-shaped response."""
    return Asset(
        asset_id=_required_str(body, "asset_id"),
        status=_required_str(body, "status"),
        url=_optional_str(body, "url"),
        name=_optional_str(body, "name"),
        content_type=_optional_str(body, "content_type"),
        size_bytes=_optional_int(body, "size_bytes"),
        failure_message=_optional_str(body, "failure_message"),
        created_at=parse_time(body.get("created_at")),
        upload=parse_upload(body),
    )


def parse_workspace(body: Mapping[str, Any]) -> Workspace:
    return Workspace(
        workspace_id=_required_str(body, "workspace_id"),
        name=_optional_str(body, "name") or "",
        role=_optional_str(body, "role"),
    )


def parse_project(body: Mapping[str, Any]) -> Project:
    return Project(
        project_id=_required_str(body, "project_id"),
        name=_optional_str(body, "name") or "",
        workspace_id=_optional_str(body, "workspace_id"),
        origin=_optional_str(body, "origin"),
    )


def parse_node(body: Mapping[str, Any]) -> Node:
    return Node(
        node_id=_required_str(body, "node_id"),
        type=_optional_str(body, "type"),
        asset_id=_optional_str(body, "asset_id"),
        label=_optional_str(body, "label"),
        url=_optional_str(body, "url"),
    )


def parse_attachment(body: Mapping[str, Any]) -> Attachment:
    return Attachment(
        project_id=_required_str(body, "project_id"),
        asset_id=_required_str(body, "asset_id"),
        node_id=_required_str(body, "node_id"),
        canvas_url=_optional_str(body, "canvas_url"),
    )


def _required_str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"response field {key!r} is missing or not a string")
    return value


def _optional_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) else None


def _optional_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
