"""What ``florasync verify`` finds: the journal's, FLORA's and the disk's views compared, no I/O.

Owns the report's categories and its JSON (docs/verify.md), the adoption rule (a file the journal
does not know, matched to a ready asset already in its project by name, size and bytes) and the
deletion policy (a node removed in FLORA stays removed, or is restored). The command gathers the
views, downloads and hashes the candidates' bytes and applies the decisions; ``now`` (epoch
seconds) is an argument.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from florasync.flora.models import Asset, AssetStatus, Node
from florasync.state.lifecycle import AssetState, LinkState

SCHEMA = 1
REMOVED_IN_FLORA = LinkState.REMOVED  # the tombstone link state (issue 15)
NOT_IN_JOURNAL = "not_in_journal"  # the reason of a file on disk the journal has no link for
DEFAULT_ADOPT_MAX_BYTES = 256 << 20
_RESUMABLE = frozenset(
    {AssetState.RESERVED, AssetState.UPLOADING, AssetState.UPLOADED, AssetState.PROCESSING}
)
_JUDGED = frozenset({LinkState.ATTACHED, REMOVED_IN_FLORA})  # links FLORA should show


class Category(StrEnum):
    """What one file (or asset) is found to be. Values are the JSON keys."""

    IN_SYNC = "in_sync"  # attached, and FLORA shows the ready asset on the project's canvas
    MISSING_IN_FLORA = "missing_in_flora"  # attached, but FLORA lost the node or the asset
    UNKNOWN_TO_JOURNAL = "unknown_to_journal"  # on a mapped canvas; the journal has no record
    ORPHANS = "orphans"  # florasync's own reservation, still pending_upload in FLORA
    NOT_SYNCED = "not_synced"  # on disk, not attached (yet)
    REMOVED_IN_FLORA = "removed_in_flora"  # a tombstone: removed in FLORA, and left so


DIFFERENCES = (
    Category.MISSING_IN_FLORA,
    Category.UNKNOWN_TO_JOURNAL,
    Category.ORPHANS,
    Category.NOT_SYNCED,
)


class Missing(StrEnum):
    """Why an attached (content, project) is missing in FLORA."""

    NODE_REMOVED = "node_removed"  # the asset is ready; its node left the project's canvas
    ASSET_GONE = "asset_gone"  # the workspace no longer lists the asset
    ASSET_FAILED = "asset_failed"  # FLORA turned the asset to failed
    ASSET_NOT_READY = "asset_not_ready"  # FLORA shows it pending_upload again


class Action(StrEnum):
    """What the deletion policy asks the caller to do with one (content, project)."""

    TOMBSTONE = "tombstone"  # mark the link removed_in_flora; never attach it again by itself
    REATTACH = "reattach"  # attach the (ready) asset again
    REUPLOAD = "reupload"  # the asset is unusable: a new asset for the content, then attach
    FORGET_TOMBSTONE = "forget_tombstone"  # the node is back in FLORA: the link is attached


class RemoteDeletions(StrEnum):
    """The ``remote_deletions`` setting."""

    RESPECT = "respect"
    RESTORE = "restore"


@dataclass(frozen=True, slots=True)
class Options:
    """The policy: deletions respected or restored; bytes checked up to ``adopt_max_bytes``."""

    remote_deletions: RemoteDeletions = RemoteDeletions.RESPECT
    adopt_max_bytes: int = DEFAULT_ADOPT_MAX_BYTES


# -- the three views ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JournalLink:
    """What the journal says of one content in one project, and of the content's asset."""

    digest: str
    project_id: str
    state: str  # a LinkState value (REMOVED_IN_FLORA: a tombstone)
    asset_id: str | None = None
    node_id: str | None = None
    asset_state: str = AssetState.NEW
    reserved_at: float | None = None  # epoch seconds


@dataclass(frozen=True, slots=True)
class JournalFile:
    """A path the journal's stat cache holds, with the content it had."""

    folder: str
    path: str
    project_id: str
    digest: str | None


@dataclass(frozen=True, slots=True)
class JournalView:
    """The journal's links (with their contents' assets) and the paths of its stat cache."""

    links: Sequence[JournalLink] = ()
    files: Sequence[JournalFile] = ()


@dataclass(frozen=True, slots=True)
class FloraView:
    """The workspace's assets, and the nodes of every mapped project (by project id).

    Only the projects in ``nodes`` are judged: a project FLORA was not asked about is not checked.
    """

    assets: Sequence[Asset] = ()
    nodes: Mapping[str, Sequence[Node]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DiskFile:
    """A file of a mapped folder. ``digest`` None: not hashed, the journal's digest is used."""

    folder: str
    path: str
    project_id: str
    size_bytes: int
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class DiskView:
    """The files on disk, and the projects each folder maps (in config order)."""

    files: Sequence[DiskFile] = ()
    folders: Mapping[str, Collection[str]] = field(default_factory=dict)


# -- what comes out -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Item:
    """One entry of a category: a file path where there is one, else an asset."""

    project_id: str
    path: str | None = None
    digest: str | None = None
    asset_id: str | None = None
    node_id: str | None = None
    reason: str | None = None
    action: str | None = None
    age_seconds: float | None = None
    name: str | None = None
    size_bytes: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in _ITEM_KEYS}


_ITEM_KEYS = tuple(f.name for f in fields(Item))


@dataclass(frozen=True, slots=True)
class Decision:
    """The deletion policy's verdict on one (content, project); the caller applies it."""

    digest: str
    project_id: str
    asset_id: str | None
    node_id: str | None  # the node FLORA shows (FORGET_TOMBSTONE), else the journal's
    action: Action


@dataclass(frozen=True, slots=True)
class Adopt:
    """One ready asset matches the file; adopt it once the bytes are checked (or were)."""

    folder: str
    path: str
    project_id: str
    digest: str | None
    asset_id: str
    node_id: str
    needs_bytes_check: bool = True


@dataclass(frozen=True, slots=True)
class Ambiguous:
    """Several assets match the file: reported, never guessed."""

    folder: str
    path: str
    project_id: str
    asset_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unverifiable:
    """One asset matches, but its bytes cannot be compared: ``no_url``, ``too_large``,
    ``download_failed``. Never adopted."""

    folder: str
    path: str
    project_id: str
    asset_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One asset matches by name and size, but its bytes differ: the file is new content."""

    folder: str
    path: str
    project_id: str
    asset_id: str


Adoption = Adopt | Ambiguous | Unverifiable | Mismatch


@dataclass(frozen=True, slots=True)
class ProjectReport:
    """The items of each category for one project of a folder (every category present)."""

    project_id: str
    items: Mapping[Category, tuple[Item, ...]]

    def to_json(self) -> dict[str, Any]:
        return {
            "project_id": self.project_id,
            "counts": _counts(self.items),
            "items": {c.value: [i.to_json() for i in self.items[c]] for c in Category},
        }


@dataclass(frozen=True, slots=True)
class FolderReport:
    """One folder's projects; the folder ``None`` holds records no configured folder maps."""

    folder: str | None
    projects: tuple[ProjectReport, ...]

    def to_json(self) -> dict[str, Any]:
        merged = _merge(p.items for p in self.projects)
        return {
            "path": self.folder,
            "counts": _counts(merged),
            "projects": [p.to_json() for p in self.projects],
        }


@dataclass(frozen=True, slots=True)
class Report:
    """What ``verify`` found, per folder and project, with the decisions it calls for."""

    folders: tuple[FolderReport, ...]
    adoptions: tuple[Adoption, ...]
    decisions: tuple[Decision, ...]
    remote_deletions: RemoteDeletions
    checked_at: float

    @property
    def totals(self) -> dict[Category, tuple[Item, ...]]:
        return _merge(p.items for f in self.folders for p in f.projects)

    @property
    def clean(self) -> bool:
        """Nothing differs (exit 0); tombstones are no difference, they are the policy."""
        totals = self.totals
        return not any(totals[c] for c in DIFFERENCES)

    def to_json(self) -> dict[str, Any]:
        """The documented layout (docs/verify.md): keys are only ever added."""
        return {
            "schema": SCHEMA,
            "checked_at": datetime.fromtimestamp(self.checked_at, UTC).isoformat(),
            "clean": self.clean,
            "remote_deletions": self.remote_deletions.value,
            "totals": _counts(self.totals),
            "folders": [f.to_json() for f in self.folders],
            "adoptions": [adoption_json(a) for a in self.adoptions],
        }


def adoption_json(adoption: Adoption) -> dict[str, Any]:
    """One adoption verdict as docs/verify.md shows it."""
    doc: dict[str, Any] = {
        "folder": adoption.folder,
        "path": adoption.path,
        "project_id": adoption.project_id,
        "digest": None,
        "node_id": None,
        "reason": None,
    }
    ids: tuple[str, ...]
    match adoption:
        case Adopt():
            verdict = "needs_check" if adoption.needs_bytes_check else "adopt"
            ids = (adoption.asset_id,)
            doc.update(digest=adoption.digest, node_id=adoption.node_id)
        case Ambiguous():
            verdict, ids = "ambiguous", adoption.asset_ids
        case Unverifiable():
            verdict, ids = "unverifiable", (adoption.asset_id,)
            doc["reason"] = adoption.reason
        case Mismatch():
            verdict, ids = "mismatch", (adoption.asset_id,)
    return {"decision": verdict, "asset_ids": list(ids), **doc}


# -- the comparison -------------------------------------------------------------------------


def reconcile(
    journal: JournalView,
    flora: FloraView,
    disk: DiskView,
    *,
    now: float,
    options: Options = Options(),
    downloaded: Mapping[str, str | None] | None = None,
) -> Report:
    """Compare the three views at epoch ``now``.

    ``downloaded`` maps an asset id to the digest of the bytes the caller downloaded for it
    (``None``: the download failed); see ``match_adoptions``.
    """
    idx = _Index(journal, flora, disk)
    placed: list[tuple[str | None, Item, Category]] = []
    decisions: list[Decision] = []
    for link in idx.judged_links():
        presence = idx.presence(link)
        category, missing, decision = judge(link, presence, options.remote_deletions)
        decisions += [decision] if decision else []
        action = decision.action if decision else None
        node_id = presence[1] or link.node_id
        for folder, path in idx.where(link.digest, link.project_id):
            item = Item(link.project_id, path, link.digest, link.asset_id, node_id, missing, action)
            placed.append((folder, item, category))
    placed += _orphans(idx, now)
    placed += _unknown(idx)
    placed += _not_synced(idx)
    return Report(
        folders=_group(placed, disk.folders),
        adoptions=tuple(_adoptions(idx, options, downloaded or {})),
        decisions=tuple(decisions),
        remote_deletions=options.remote_deletions,
        checked_at=now,
    )


def judge(
    link: JournalLink, presence: tuple[Missing | None, str | None], policy: RemoteDeletions
) -> tuple[Category, str | None, Decision | None]:
    """The category of an attached (or tombstoned) link, why it is missing, and the decision.

    ``presence`` is what FLORA shows: why the link is missing (None: it is there) and the node.
    """
    missing, node_id = presence
    tombstone = link.state == REMOVED_IN_FLORA
    if missing is None:
        forget = Action.FORGET_TOMBSTONE if tombstone else None
        return Category.IN_SYNC, None, _decision(link, forget, node_id)
    if policy == RemoteDeletions.RESTORE:
        again = Action.REATTACH if missing == Missing.NODE_REMOVED else Action.REUPLOAD
        return Category.MISSING_IN_FLORA, missing, _decision(link, again, link.node_id)
    if tombstone:
        return Category.REMOVED_IN_FLORA, missing, None
    return Category.MISSING_IN_FLORA, missing, _decision(link, Action.TOMBSTONE, link.node_id)


def _decision(link: JournalLink, action: Action | None, node_id: str | None) -> Decision | None:
    if action is None:
        return None
    return Decision(link.digest, link.project_id, link.asset_id, node_id, action)


def match_adoptions(
    journal: JournalView,
    flora: FloraView,
    disk: DiskView,
    *,
    options: Options = Options(),
    downloaded: Mapping[str, str | None] | None = None,
) -> Iterator[Adoption]:
    """Each file on disk the journal has no link for, matched to the ready assets already on its
    project's canvas with the same name and ``size_bytes`` that the journal does not know.

    One candidate is adopted only once ``downloaded`` holds its bytes' digest and that equals
    the file's; until then it ``needs_bytes_check`` (the caller downloads and hashes). Several
    candidates are ``Ambiguous`` whatever their bytes: reported, never guessed.
    """
    return _adoptions(_Index(journal, flora, disk), options, downloaded or {})


def _adoptions(
    idx: _Index, options: Options, downloaded: Mapping[str, str | None]
) -> Iterator[Adoption]:
    for file, digest in idx.untracked():
        found = idx.candidates(file)
        if len(found) > 1:
            ids = tuple(a.asset_id for a, _ in found)
            yield Ambiguous(file.folder, file.path, file.project_id, ids)
        elif found:
            yield _check(file, digest, found[0], options, downloaded)


def _check(
    file: DiskFile,
    digest: str | None,
    candidate: tuple[Asset, str],
    options: Options,
    downloaded: Mapping[str, str | None],
) -> Adoption:
    """The verdict on a single candidate: adopted only on equal bytes."""
    asset, node_id = candidate
    where = (file.folder, file.path, file.project_id)
    problem = _unverifiable(asset, file.size_bytes, options, downloaded)
    if problem is not None:
        return Unverifiable(*where, asset.asset_id, problem)
    got = downloaded.get(asset.asset_id)
    if got is None or digest is None:  # not downloaded yet, or the file itself not hashed
        return Adopt(*where, digest, asset.asset_id, node_id, needs_bytes_check=True)
    if got != digest:
        return Mismatch(*where, asset.asset_id)
    return Adopt(*where, digest, asset.asset_id, node_id, needs_bytes_check=False)


def _unverifiable(
    asset: Asset, size_bytes: int, options: Options, downloaded: Mapping[str, str | None]
) -> str | None:
    """Why the candidate's bytes cannot be compared with the file's, if they cannot."""
    if not asset.url:
        return "no_url"
    if size_bytes > options.adopt_max_bytes:
        return "too_large"
    if asset.asset_id in downloaded and downloaded[asset.asset_id] is None:
        return "download_failed"
    return None


def _orphans(idx: _Index, now: float) -> Iterator[tuple[str | None, Item, Category]]:
    """Assets florasync reserved that FLORA still shows ``pending_upload``."""
    for link in idx.links.values():
        asset = idx.assets.get(link.asset_id or "")
        if asset is None or asset.status != AssetStatus.PENDING_UPLOAD:
            continue
        if link.asset_state == AssetState.READY:
            continue
        since = link.reserved_at if link.reserved_at is not None else asset.created_at
        age = None if since is None else round(max(0.0, now - since), 1)
        reason = "resumable" if link.asset_state in _RESUMABLE else "abandoned"
        for folder, path in idx.where(link.digest, link.project_id):
            item = Item(
                link.project_id,
                path,
                link.digest,
                asset.asset_id,
                reason=reason,
                age_seconds=age,
                name=asset.name,
            )
            yield folder, item, Category.ORPHANS


def _unknown(idx: _Index) -> Iterator[tuple[str | None, Item, Category]]:
    """Asset nodes on a mapped canvas the journal has no link for: candidates for adoption."""
    for project_id, nodes in idx.nodes.items():
        for node in nodes:
            if node.asset_id is None or (node.asset_id, project_id) in idx.known:
                continue
            asset = idx.assets.get(node.asset_id) or Asset(node.asset_id, status="")
            item = Item(
                project_id,
                asset_id=node.asset_id,
                node_id=node.node_id,
                reason=asset.status or None,  # None: FLORA did not list the asset
                name=asset.name,
                size_bytes=asset.size_bytes,
            )
            yield idx.home(project_id), item, Category.UNKNOWN_TO_JOURNAL


def _not_synced(idx: _Index) -> Iterator[tuple[str | None, Item, Category]]:
    """Files on disk whose content is not attached to their project (by the journal)."""
    for file in idx.disk.files:
        digest = idx.digest_of(file)
        link = idx.links.get((digest, file.project_id)) if digest else None
        if link is not None and link.state in _JUDGED:
            continue
        asset_id, reason = (link.asset_id, link.state) if link else (None, NOT_IN_JOURNAL)
        item = Item(
            file.project_id, file.path, digest, asset_id, reason=reason, size_bytes=file.size_bytes
        )
        yield file.folder, item, Category.NOT_SYNCED


# -- indexes over the views -----------------------------------------------------------------

# (project, name, size) -> asset id -> (the asset, its first node): the adoption candidates
_Candidates = dict[tuple[str, str, int | None], dict[str, tuple[Asset, str]]]


class _Index:
    """The views keyed for lookups; built once per comparison."""

    def __init__(self, journal: JournalView, flora: FloraView, disk: DiskView) -> None:
        self.disk = disk
        self.links = {(k.digest, k.project_id): k for k in journal.links}
        self.known = {(k.asset_id, k.project_id) for k in journal.links if k.asset_id}
        self.journal_assets = {k.asset_id for k in journal.links if k.asset_id}
        self.assets = {a.asset_id: a for a in flora.assets}
        self.nodes = dict(flora.nodes)
        self._shown = _nodes_by_asset(self.nodes)
        self._paths = _paths_by_content(journal.files, disk.files)
        self._homes = _homes(disk.folders)
        self._journal_digest = {(f.path, f.project_id): f.digest for f in journal.files}
        self._candidates: _Candidates | None = None

    def judged_links(self) -> Iterator[JournalLink]:
        """Links FLORA should show, in the projects FLORA was asked about."""
        for link in self.links.values():
            if link.state in _JUDGED and link.project_id in self.nodes:
                yield link

    def presence(self, link: JournalLink) -> tuple[Missing | None, str | None]:
        """Why FLORA does not show the link (None: it does), and the node it shows."""
        asset = self.assets.get(link.asset_id or "")
        if asset is None:
            return Missing.ASSET_GONE, None
        if asset.is_failed:
            return Missing.ASSET_FAILED, None
        if not asset.is_ready:
            return Missing.ASSET_NOT_READY, None
        nodes = self._shown.get((link.project_id, asset.asset_id), [])
        if not nodes:
            return Missing.NODE_REMOVED, None
        return None, link.node_id if link.node_id in nodes else nodes[0]

    def where(self, digest: str, project_id: str) -> list[tuple[str | None, str | None]]:
        """The (folder, path) of each file of this content in this project, or its home."""
        return self._paths.get((digest, project_id)) or [(self.home(project_id), None)]

    def home(self, project_id: str) -> str | None:
        """The first folder mapping the project (None: no folder does)."""
        return self._homes.get(project_id)

    def digest_of(self, file: DiskFile) -> str | None:
        return file.digest or self._journal_digest.get((file.path, file.project_id))

    def untracked(self) -> Iterator[tuple[DiskFile, str | None]]:
        """Files on disk whose content has no link in their project, with their digest."""
        for file in self.disk.files:
            digest = self.digest_of(file)
            if digest is None or (digest, file.project_id) not in self.links:
                yield file, digest

    def candidates(self, file: DiskFile) -> list[tuple[Asset, str]]:
        """Ready assets on the file's canvas, unknown to the journal, of its name and size."""
        if self._candidates is None:
            self._candidates = self._index_candidates()
        name = _nfc(file.path.rpartition("/")[2])
        found = self._candidates.get((file.project_id, name, file.size_bytes), {})
        return list(found.values())

    def _index_candidates(self) -> _Candidates:
        """(project, name, size) -> asset id -> (asset, its first node), for adoption."""
        index: _Candidates = {}
        for project_id, nodes in self.nodes.items():
            for node in nodes:
                asset = self.assets.get(node.asset_id or "")
                if asset is None or asset.asset_id in self.journal_assets or not asset.is_ready:
                    continue
                key = (project_id, _nfc(asset.name or ""), asset.size_bytes)
                index.setdefault(key, {}).setdefault(asset.asset_id, (asset, node.node_id))
        return index


def _nodes_by_asset(nodes: Mapping[str, Sequence[Node]]) -> dict[tuple[str, str], list[str]]:
    """(project, asset id) -> the ids of the nodes showing the asset on the project's canvas."""
    shown: dict[tuple[str, str], list[str]] = {}
    for project_id, project_nodes in nodes.items():
        for node in project_nodes:
            if node.asset_id is not None:
                shown.setdefault((project_id, node.asset_id), []).append(node.node_id)
    return shown


def _paths_by_content(
    journal: Iterable[JournalFile], disk: Iterable[DiskFile]
) -> dict[tuple[str, str], list[tuple[str | None, str | None]]]:
    """(digest, project) -> (folder, path); a path on disk has the content the disk says."""
    current = {(f.path, f.project_id): (f.folder, f.digest) for f in journal}
    for d in disk:
        known = current.get((d.path, d.project_id), (d.folder, None))[1]
        current[(d.path, d.project_id)] = (d.folder, d.digest or known)
    paths: dict[tuple[str, str], list[tuple[str | None, str | None]]] = {}
    for (path, project_id), (folder, digest) in current.items():
        if digest is not None:
            paths.setdefault((digest, project_id), []).append((folder, path))
    return paths


def _homes(folders: Mapping[str, Collection[str]]) -> dict[str, str]:
    homes: dict[str, str] = {}
    for folder, project_ids in folders.items():
        for project_id in project_ids:
            homes.setdefault(project_id, folder)
    return homes


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)  # macOS stores names decomposed


# -- grouping -------------------------------------------------------------------------------


def _group(
    placed: Iterable[tuple[str | None, Item, Category]], folders: Mapping[str, Collection[str]]
) -> tuple[FolderReport, ...]:
    """Items per folder (configured ones first, in order) and per project within it."""
    grouped: dict[str | None, dict[str, dict[Category, list[Item]]]] = {
        f: {p: _empty() for p in projects} for f, projects in folders.items()
    }
    for folder, item, category in placed:
        projects = grouped.setdefault(folder, {})
        if item.project_id not in projects:
            projects[item.project_id] = _empty()
        projects[item.project_id][category].append(item)
    unmapped = grouped.pop(None, None)  # the row of records no folder maps comes last
    if unmapped is not None:
        grouped[None] = unmapped
    return tuple(
        FolderReport(folder, tuple(_project(p, items) for p, items in projects.items()))
        for folder, projects in grouped.items()
    )


def _empty() -> dict[Category, list[Item]]:
    return {c: [] for c in Category}


def _project(project_id: str, items: Mapping[Category, list[Item]]) -> ProjectReport:
    return ProjectReport(project_id, {c: tuple(items[c]) for c in Category})


def _merge(
    parts: Iterable[Mapping[Category, tuple[Item, ...]]],
) -> dict[Category, tuple[Item, ...]]:
    """Items of several projects or folders, each once."""
    merged: dict[Category, dict[Item, None]] = {c: {} for c in Category}
    for items in parts:
        for category, entries in items.items():
            merged[category].update(dict.fromkeys(entries))
    return {c: tuple(entries) for c, entries in merged.items()}


def _counts(items: Mapping[Category, tuple[Item, ...]]) -> dict[str, int]:
    return {c.value: len(items[c]) for c in Category}
