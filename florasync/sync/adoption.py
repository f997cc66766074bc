"""Adopting what is already in FLORA instead of uploading it again (issue 15, ``adopt: true``).

Owns the run-time check made before a new content is reserved: a ready asset of the workspace
with the file's name (compared in NFC) and size, on the canvas of the file's project, whose
bytes (downloaded, at most ``adopt_max_bytes``) hash to the file's digest, is this file's: no
upload, no attach. Several such assets are reported (the file fails as ``adoption_ambiguous``
until someone cleans up and runs ``retry``), never guessed. The same rules as
``verify --adopt`` (docs/verify.md); the comparison of whole libraries is ``reconcile``'s.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

from florasync import errors
from florasync.flora.models import AssetStatus

if TYPE_CHECKING:
    from florasync.flora import api
    from florasync.flora.download import Downloader
    from florasync.state.journal.store import Journal

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Found:
    """The asset (and its node in the project) that already holds the file's bytes."""

    asset_id: str
    node_id: str


class AmbiguousError(errors.FlorasyncError):
    """Several assets on the project's canvas look like the file: nothing is guessed."""

    code = "adoption_ambiguous"

    def __init__(self, name: str, asset_ids: list[str]) -> None:
        self.asset_ids = asset_ids
        super().__init__(
            f"{len(asset_ids)} assets on the project's canvas are called {name!r} with this "
            f"size ({', '.join(asset_ids)}); remove the duplicates in FLORA, then `florasync "
            "retry` the file (or set adopt: false to upload it as new content)"
        )


class Adopter:
    """Looks for the file's bytes in FLORA before a new upload; one per run, thread-safe."""

    def __init__(
        self,
        *,
        client: api.FloraClient,
        downloader: Downloader,
        journal: Journal,
        workspace_id: str,
        max_bytes: int,
    ) -> None:
        self._client = client
        self._downloader = downloader
        self._journal = journal
        self._workspace_id = workspace_id
        self._max_bytes = max_bytes

    def find(
        self, *, file_name: str, size_bytes: int, digest: str, project_id: str
    ) -> Found | None:
        """The asset that holds these bytes in the project, or None (upload as new content).

        Raises:
            AmbiguousError: several candidates.
            errors.ApiError: FLORA could not be asked (the caller retries the file later).
        """
        if size_bytes > self._max_bytes:
            return None  # its bytes would not be checked: never adopted
        name = _nfc(file_name)
        candidates = [
            a
            for a in self._client.list_assets(workspace_id=self._workspace_id, query=file_name)
            if a.status == AssetStatus.READY
            and _nfc(a.name or "") == name
            and a.size_bytes == size_bytes
            and self._journal.asset_id_free(a.asset_id)
        ]
        if not candidates:
            return None
        on_canvas = {n.asset_id: n.node_id for n in self._client.list_nodes(project_id)}
        placed = [a for a in candidates if a.asset_id in on_canvas]
        if len(placed) > 1:
            raise AmbiguousError(file_name, [a.asset_id for a in placed])
        if not placed or placed[0].url is None:
            return None
        asset = placed[0]
        try:
            got = self._downloader.fetch(asset.url or "", max_bytes=self._max_bytes)
        except (errors.NotFoundError, errors.RejectedError):
            return None  # gone meanwhile, or not readable: not adopted
        if got is None or got.digest != digest:
            return None
        log.info("adopted %s: asset %s already holds its bytes", file_name, asset.asset_id)
        return Found(asset.asset_id, on_canvas[asset.asset_id])


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)
