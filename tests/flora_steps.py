"""What florasync's transfer does for one file, step by step with the real client: for tests
that need an asset made the usual way without running florasync (the sandbox's own tests)."""

from __future__ import annotations

from pathlib import Path

from florasync.flora import api, models, upload
from florasync.sandbox import Sandbox

PNG = "image/png"


def upload_ready(client: api.FloraClient, sb: Sandbox, path: Path) -> models.Asset:
    """Reserve, upload and complete ``path`` (keys derived from its name); the ready asset."""
    asset = client.create_asset(
        sb.workspace_id, file_name=path.name, content_type=PNG, idempotency_key=f"k-{path.name}"
    )
    assert asset.upload is not None
    target = upload.UploadTarget()
    try:
        with path.open("rb") as stream:
            target.upload(asset.upload, stream, file_name=path.name, content_type=PNG)
    finally:
        target.close()
    ready = client.complete_asset(asset.asset_id)
    assert ready.is_ready
    return ready
