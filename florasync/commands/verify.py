"""``florasync verify``: compare the journal and the folders with FLORA (issue 15).

Owns gathering the three views ``sync.reconcile`` compares (FLORA read-only: the workspace's
assets and the mapped projects' nodes; the journal; the folders through the scanner and the
stat cache), the byte check of adoption candidates (download and hash), applying what the
report calls for (tombstones always; adoptions with ``--adopt``; re-attach, re-upload and
orphans with ``--repair``, through a one-shot sync of the files concerned) and the output.
The comparison itself is pure and lives in ``sync.reconcile``; docs/verify.md is the spec.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from florasync import errors
from florasync.config import runtime
from florasync.config.config import Config, FolderConfig
from florasync.errors import ConfigError, ExitCode
from florasync.local import identity, scanner
from florasync.local.placement import Unplaced, target_for
from florasync.local.rules import FolderRules
from florasync.state import lifecycle
from florasync.state.journal import opening
from florasync.state.journal.records import FileEntry, KnownFile
from florasync.state.journal.store import Journal
from florasync.state.lifecycle import AssetRecord, AssetState, LinkRecord, LinkState
from florasync.sync import reconcile
from florasync.sync.reconcile import Action, Adopt, Category, RemoteDeletions, Report

if TYPE_CHECKING:
    from florasync.flora import api


def run_from_args(args: argparse.Namespace) -> ExitCode:
    return verify(
        config_path=args.config,
        folder=args.folder,
        as_json=args.json,
        adopt=args.adopt,
        repair=args.repair,
    )


@dataclass
class _Applied:
    """What this run of ``verify`` changed, for the output."""

    tombstones: list[str] = field(default_factory=list)
    tombstones_forgotten: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, list[str]]:
        return {
            "tombstones": self.tombstones,
            "tombstones_forgotten": self.tombstones_forgotten,
            "adopted": self.adopted,
            "repaired": self.repaired,
        }


def verify(
    *, config_path: str | None, folder: str | None, as_json: bool, adopt: bool, repair: bool
) -> ExitCode:
    rt = runtime.load(config_path)
    folders = _chosen(rt.cfg, folder)
    applied = _Applied()
    report = _check(rt, folders, adopt=adopt or rt.cfg.adopt, repair=repair, applied=applied)
    if repair and applied.repaired:
        _sync(rt, folders, applied.repaired)
        report = _check(rt, folders, adopt=False, repair=False, applied=_Applied())
    _print(report, applied, as_json=as_json)
    return ExitCode.OK if report.clean else ExitCode.FAILED


def _check(
    rt: runtime.Runtime,
    folders: tuple[FolderConfig, ...],
    *,
    adopt: bool,
    repair: bool,
    applied: _Applied,
) -> Report:
    """One comparison (and the fixes asked for), with the journal and a client of its own."""
    journal = opening.open_journal(rt.cfg, rt.env)
    try:
        client = rt.client()
        try:
            return _Check(rt, journal, client, folders).run(
                adopt=adopt, repair=repair, applied=applied
            )
        finally:
            client.close()
    finally:
        journal.close()


def _chosen(cfg: Config, folder: str | None) -> tuple[FolderConfig, ...]:
    if folder is None:
        return cfg.folders
    wanted = Path(folder).expanduser().absolute()
    chosen = tuple(f for f in cfg.folders if Path(f.path) == wanted)
    if not chosen:
        known = ", ".join(str(f.path) for f in cfg.folders)
        raise ConfigError("--folder", f"{wanted} is not a configured folder (configured: {known})")
    return chosen


class _Check:
    """One comparison: the views, the report, and the fixes the options ask for."""

    def __init__(
        self,
        rt: runtime.Runtime,
        journal: Journal,
        client: api.FloraClient,
        folders: tuple[FolderConfig, ...],
    ) -> None:
        self.rt = rt
        self.ws = rt.cfg.workspace_id
        self.journal = journal
        self.client = client
        self.folders = folders
        self.options = reconcile.Options(
            remote_deletions=RemoteDeletions(rt.cfg.remote_deletions),
            adopt_max_bytes=rt.cfg.adopt_max_bytes,
        )
        self._names: dict[str, str | None] = {}
        self._stats: dict[str, identity.FileStat] = {}
        self._dirs: dict[str, dict[str, KnownFile]] = {}  # the directory being read

    def run(self, *, adopt: bool, repair: bool, applied: _Applied) -> Report:
        disk = self._disk()
        flora = self._flora(disk)
        report = self._reconcile(disk, flora)
        if adopt and report.adoptions:
            disk, downloaded = self._check_bytes(report, disk, flora)
            checked = self._reconcile(disk, flora, downloaded)
            self._adopt(checked, applied)
            report = self._reconcile(disk, flora, downloaded)
        self._apply(report, applied, repair=repair)
        return report

    # -- the three views ----------------------------------------------------------------------

    def _reconcile(
        self,
        disk: reconcile.DiskView,
        flora: reconcile.FloraView,
        downloaded: dict[str, str | None] | None = None,
    ) -> Report:
        links = [
            reconcile.JournalLink(
                digest, project_id, state, asset_id, node_id, asset_state or "new", reserved_at
            )
            for digest, project_id, state, asset_id, node_id, asset_state, reserved_at in (
                self.journal.all_links(self.ws)
            )
        ]
        files = [reconcile.JournalFile(*row) for row in self.journal.host_files()]
        view = reconcile.JournalView(links=links, files=files)
        return reconcile.reconcile(
            view, flora, disk, now=time.time(), options=self.options, downloaded=downloaded
        )

    def _flora(self, disk: reconcile.DiskView) -> reconcile.FloraView:
        projects = sorted({p for ps in disk.folders.values() for p in ps})
        assets = list(self.client.list_assets(workspace_id=self.ws))
        _progress(f"FLORA: {len(assets)} asset(s)")
        nodes = {p: list(self.client.list_nodes(p)) for p in projects}
        _progress(f"FLORA: nodes of {len(nodes)} project(s)")
        return reconcile.FloraView(assets=assets, nodes=nodes)

    def _disk(self) -> reconcile.DiskView:
        files: list[reconcile.DiskFile] = []
        mapped: dict[str, list[str]] = {}
        for folder in self.folders:
            root = str(folder.path)
            mapped[root] = self._projects_of(folder)
            rules = FolderRules(tuple(folder.include), tuple(folder.exclude))
            for found in scanner.scan(folder.path, rules=rules, recursive=folder.recursive):
                project_id = self._project_of(folder, rules, found.abspath)
                if project_id is None:
                    continue  # a name not resolved yet: nothing to compare it with
                if project_id not in mapped[root]:
                    mapped[root].append(project_id)
                self._stats[found.abspath] = found.stat
                digest = self._known_digest(found.abspath, found.stat)
                files.append(
                    reconcile.DiskFile(root, found.abspath, project_id, found.stat.size, digest)
                )
        return reconcile.DiskView(files=files, folders=mapped)

    def _projects_of(self, folder: FolderConfig) -> list[str]:
        """The projects a folder maps that are known without asking FLORA to create any."""
        if folder.project_id is not None:
            own = [folder.project_id]
        elif folder.project is not None:
            known = self._name(folder.project.name)
            own = [known] if known else []
        else:
            own = []
        return own

    def _project_of(self, folder: FolderConfig, rules: FolderRules, path: str) -> str | None:
        target = target_for(folder, rules, path)
        if isinstance(target, Unplaced):
            return None
        return target.project_id or self._name(target.name or "")

    def _name(self, name: str) -> str | None:
        if name not in self._names:
            row = self.journal.project_name(self.ws, name)
            self._names[name] = row.project_id if row else None
        return self._names[name]

    def _known_digest(self, path: str, stat: identity.FileStat) -> str | None:
        """The content of ``path``: the stat cache's when the file did not change since, read
        again when it did, None when the journal never saw it (hashed only if needed). The
        cache is read one directory at a time (one query, as a rescan reads it)."""
        directory, _, name = path.rpartition("/")
        if directory not in self._dirs:
            self._dirs = {directory: self.journal.dir_entries(self.ws, directory or "/", "")}
        known = self._dirs[directory].get(name)
        if known is None:
            return None
        _, digest, _, _, dev, ino, size, mtime_ns, ctime_ns = known
        if digest and (dev, ino, size, mtime_ns, ctime_ns) == (
            stat.dev,
            stat.ino,
            stat.size,
            stat.mtime_ns,
            stat.ctime_ns,
        ):
            return digest
        return _hash(path)

    # -- adoption -----------------------------------------------------------------------------

    def _check_bytes(
        self, report: Report, disk: reconcile.DiskView, flora: reconcile.FloraView
    ) -> tuple[reconcile.DiskView, dict[str, str | None]]:
        """Hash each file with a single candidate, and download and hash the candidate."""
        from florasync.flora.download import Downloader

        urls = {a.asset_id: a.url for a in flora.assets}
        wanted = [a for a in report.adoptions if isinstance(a, Adopt) and a.needs_bytes_check]
        digests = {a.path: _hash(a.path) for a in wanted}
        downloaded: dict[str, str | None] = {}
        with Downloader(
            timeouts=self.rt.timeouts(), stop=self.rt.stop, gate=self.rt.gate
        ) as downloader:
            for adoption in wanted:
                url = urls.get(adoption.asset_id)
                if url is None:
                    continue
                try:
                    got = downloader.fetch(url, max_bytes=self.options.adopt_max_bytes)
                except errors.FlorasyncError:
                    got = None
                downloaded[adoption.asset_id] = got.digest if got else None
        files = [replace(f, digest=digests.get(f.path) or f.digest) for f in disk.files]
        return replace(disk, files=files), downloaded

    def _adopt(self, report: Report, applied: _Applied) -> None:
        for adoption in report.adoptions:
            if not isinstance(adoption, Adopt) or adoption.needs_bytes_check:
                continue
            if adoption.digest is None:
                continue
            stat = self._stats[adoption.path]
            name = Path(adoption.path).name
            kind = identity.content_type_for(adoption.path) or "application/octet-stream"
            asset = AssetRecord(
                self.ws,
                adoption.digest,
                stat.size,
                name,
                kind,
                state=AssetState.READY,
                asset_id=adoption.asset_id,
            )
            link = LinkRecord(
                self.ws,
                adoption.digest,
                adoption.project_id,
                LinkState.ATTACHED,
                node_id=adoption.node_id,
            )
            entry = FileEntry(
                adoption.path, adoption.folder, adoption.project_id, stat, adoption.digest
            )
            self.journal.adopt(asset, link, entry)
            applied.adopted.append(adoption.path)

    # -- what the policy calls for ------------------------------------------------------------

    def _apply(self, report: Report, applied: _Applied, *, repair: bool) -> None:
        """Tombstones (and their removal) always: they record what FLORA shows. Re-attach,
        re-upload and resuming orphans only with ``--repair``."""
        for decision in report.decisions:
            link = self.journal.link(self.ws, decision.digest, decision.project_id)
            if link is None:
                continue
            where = decision.asset_id or decision.digest[:12]
            if decision.action == Action.TOMBSTONE:
                self.journal.mark_removed(link, _why(report, link))
                applied.tombstones.append(where)
            elif decision.action == Action.FORGET_TOMBSTONE and decision.node_id:
                self.journal.begin(lifecycle.attach_found(link, decision.node_id))
                applied.tombstones_forgotten.append(where)
            elif repair and decision.action in (Action.REATTACH, Action.REUPLOAD):
                self._redo(link, decision.action, report, applied)
        for item in _items(report, Category.ORPHANS) if repair else ():
            if item.reason == "resumable" and item.path:
                applied.repaired.append(item.path)

    def _redo(self, link: LinkRecord, action: Action, report: Report, applied: _Applied) -> None:
        """Under ``restore``: attach again (a new key), or upload again first."""
        if action == Action.REUPLOAD:
            asset = self.journal.asset(self.ws, link.digest)
            if asset is not None:
                self.journal.begin(lifecycle.upload_again(asset))
        self.journal.begin(lifecycle.attach_again(link))
        paths = [
            i.path
            for i in _items(report, Category.MISSING_IN_FLORA)
            if i.digest == link.digest and i.project_id == link.project_id and i.path
        ]
        applied.repaired.extend(paths)


def _why(report: Report, link: LinkRecord) -> str:
    """How a link went missing in FLORA (node_removed, asset_gone, ...), as the report says."""
    return next(
        (
            i.reason
            for i in _items(report, Category.MISSING_IN_FLORA)
            if i.digest == link.digest and i.project_id == link.project_id and i.reason
        ),
        "node_removed",
    )


def _items(report: Report, category: Category) -> Iterable[reconcile.Item]:
    return report.totals[category]


def _hash(path: str) -> str | None:
    try:
        content, _ = identity.hash_file(Path(path))
    except errors.LocalFileError:
        return None
    return content.digest


def _sync(rt: runtime.Runtime, folders: tuple[FolderConfig, ...], paths: list[str]) -> None:
    """``--repair``: a one-shot sync of the files the repair put back (as ``run --scan`` would
    sync them, through the same pipeline)."""
    from florasync.sync.engine import Engine

    by_root = {str(f.path): f for f in folders}
    with Engine(rt, retry_deferred=False) as engine:
        for path in dict.fromkeys(paths):
            folder = next((f for root, f in by_root.items() if path.startswith(root + "/")), None)
            if folder is not None:
                engine.pipeline.offer(path, folder)
        engine.pipeline.wait_idle()


def _progress(text: str) -> None:
    if sys.stderr.isatty():
        print(f"\r{text}", end="", file=sys.stderr, flush=True)


def _print(report: Report, applied: _Applied, *, as_json: bool) -> None:
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if as_json:
        print(json.dumps(report.to_json() | {"applied": applied.to_json()}, indent=2))
        return
    print(
        f"checked:   {datetime.fromtimestamp(report.checked_at, UTC).isoformat(timespec='seconds')}"
    )
    for folder in report.folders:
        for project in folder.projects:
            counts = ", ".join(f"{len(v)} {k.value}" for k, v in project.items.items() if v)
            print(f"folder:    {folder.folder} -> {project.project_id}: {counts or 'nothing'}")
            for category in reconcile.DIFFERENCES:
                for item in project.items[category]:
                    print(f"  {category.value}: {_shown(item)}")
    for adoption in report.adoptions:
        shown = reconcile.adoption_json(adoption)
        print(f"adoption:  {shown['path']}: {shown['decision']} {', '.join(shown['asset_ids'])}")
    for kind, done in applied.to_json().items():
        if done:
            print(f"{kind.replace('_', ' ')}: {len(done)}")
    print("in sync" if report.clean else "differences found (exit 1)")


def _shown(item: reconcile.Item) -> str:
    what = item.path or f"asset {item.asset_id} ({item.name})"
    extra = [x for x in (item.reason, item.action) if x]
    age = f", {item.age_seconds:.0f} s old" if item.age_seconds is not None else ""
    return f"{what}" + (f" ({', '.join(extra)}{age})" if extra or age else "")
