"""``florasync run --scan --dry-run``: what a sync would do, and why, without doing it.

Owns the dry-run report: every wanted file is classified as upload (new content), attach (the
content is already an asset: reuse it), resume (an earlier run stopped half-way), duplicate
(same bytes as another file of this run), unchanged, or skipped with the reason. A project
mapped by name that the journal does not know is looked up in FLORA (``GET`` only): "would
create project" when it is missing. No mutating request is sent and the journal is only read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from florasync import errors
from florasync.config import config, runtime
from florasync.config.config import FolderConfig
from florasync.errors import ExitCode
from florasync.local import identity, scanner
from florasync.local.placement import Target, Unplaced, target_for
from florasync.local.rules import FolderRules
from florasync.progress import human_bytes
from florasync.state.catalog import Catalog
from florasync.state.journal import opening, store
from florasync.state.lifecycle import AssetState, LinkState
from florasync.sync import projects

if TYPE_CHECKING:
    from florasync.flora import api


@dataclass
class _Plan:
    ws: str
    journal: store.Journal | None
    client: Callable[[], api.FloraClient]
    counts: dict[str, int] = field(default_factory=dict)
    seen: dict[tuple[str, str], str] = field(default_factory=dict)  # (digest, project) -> path
    names: dict[str, str | None] = field(default_factory=dict)  # None: would be created
    failed: dict[str, errors.FlorasyncError] = field(default_factory=dict)

    def say(self, action: str, path: str, why: str) -> None:
        self.counts[action] = self.counts.get(action, 0) + 1
        print(f"{action:<9} {path}  ({why})")

    def project(self, target: Target) -> str | None:
        """The project id of ``target``; None when it would be created.

        Raises:
            errors.FlorasyncError: the name cannot be used (missing, ambiguous, not asked).
        """
        if target.project_id is not None:
            return target.project_id
        name = target.name or ""
        if name in self.failed:
            raise self.failed[name]
        if name not in self.names:
            try:
                self.names[name] = self._look_up(name, create=target.create)
            except errors.FlorasyncError as exc:
                self.failed[name] = exc  # asked once per name, not once per file
                raise
        return self.names[name]

    def _look_up(self, name: str, *, create: bool) -> str | None:
        known = self.journal.project_name(self.ws, name) if self.journal else None
        if known is not None and known.project_id is not None:
            return known.project_id
        found = projects.find_by_name(self.client(), self.ws, name)
        if len(found) > 1:
            raise projects.ambiguous(name, (p.project_id for p in found))
        if found:
            return found[0].project_id
        if not create:
            raise projects.missing(name)
        print(f"would create project {name!r}")
        return None


def dry_run(*, config_path: str | None) -> ExitCode:
    """Print the plan for every folder; exit 0 (2 for a bad config)."""
    rt = runtime.load(config_path)
    config.check_folders(rt.cfg)
    j = opening.open_journal(rt.cfg, rt.env) if opening.journal_exists(rt.cfg, rt.env) else None
    clients: list[api.FloraClient] = []

    def client() -> api.FloraClient:  # only when a name must be looked up
        if not clients:
            clients.append(rt.client())
        return clients[0]

    plan = _Plan(rt.cfg.workspace_id, j, client)
    try:
        for folder in rt.cfg.folders:
            _plan_folder(folder, plan)
    finally:
        for c in clients:
            c.close()
        if j is not None:
            j.close()
    summary = ", ".join(f"{n} {action}" for action, n in sorted(plan.counts.items()))
    print(f"dry run: {summary or 'no files'}; nothing was sent and nothing was changed")
    return ExitCode.OK


def _plan_folder(folder: FolderConfig, plan: _Plan) -> None:
    rules = FolderRules(tuple(folder.include), tuple(folder.exclude))
    j = plan.journal
    catalog = Catalog(j, plan.ws, full_scan=False) if j is not None else None

    def on_problem(problem: scanner.ScanProblem) -> None:
        plan.say("skip", problem.path, f"{problem.message} ({problem.code})")

    for path, reason in _skipped(folder, rules):
        plan.say("skip", path, reason)
    for cand in scanner.scan(
        folder.path, rules=rules, recursive=folder.recursive, on_problem=on_problem
    ):
        path = cand.abspath
        target = target_for(folder, rules, path)
        if isinstance(target, Unplaced):
            plan.say("skip", path, f"{target.message} ({target.code})")
            continue
        try:
            project_id = plan.project(target)
        except errors.ConfigError:
            raise
        except errors.FlorasyncError as exc:
            plan.say("fail", path, str(exc))
            continue
        verdict = None
        if catalog is not None and project_id is not None:
            verdict = catalog.classify(path, cand.stat, project_id)
        if verdict is not None and verdict.unchanged:
            plan.say("unchanged", path, f"already attached to {project_id}")
            continue
        digest = verdict.digest if verdict else None
        where = project_id or f"{target} (to be created)"
        _plan_file(path, where, digest, cand.stat.size, plan)


def _plan_file(path: str, project_id: str, digest: str | None, size: int, plan: _Plan) -> None:
    if identity.content_type_for(path) is None:
        plan.say("skip", path, "FLORA does not accept this file type")
        return
    if digest is None:
        try:
            digest = identity.hash_file(Path(path))[0].digest
        except errors.LocalFileError as exc:
            plan.say("skip", path, f"{exc.message} ({exc.code})")
            return
    twin = plan.seen.setdefault((digest, project_id), path)
    if twin != path:
        plan.say("duplicate", path, f"same bytes as {twin}: synced once")
        return
    j, ws = plan.journal, plan.ws
    asset = j.asset(ws, digest) if j else None
    link = j.link(ws, digest, project_id) if j else None
    if link is not None and link.state == LinkState.ATTACHED:
        plan.say("unchanged", path, f"same bytes already attached to {project_id}")
    elif asset is not None and asset.state == AssetState.READY:
        plan.say("attach", path, f"reuse {asset.asset_id}, attach to {project_id}")
    elif asset is not None and asset.state == AssetState.FAILED:
        why = asset.error.message if asset.error else "failed"
        plan.say("failed", path, f"failed before: {why}; `florasync retry` to try again")
    elif asset is not None and asset.state != AssetState.NEW:
        plan.say("resume", path, f"interrupted at {asset.state}; continue with {asset.asset_id}")
    else:
        plan.say("upload", path, f"new content, {human_bytes(size)}, then attach to {project_id}")


def _skipped(folder: FolderConfig, rules: FolderRules) -> list[tuple[str, str]]:
    """Files the scan leaves out, with the rule that leaves them out."""
    out = []
    stack = [(str(folder.path), "")]
    while stack:
        directory, rel = stack.pop()
        try:
            entries = list(Path(directory).iterdir())
        except OSError:
            continue  # the scan reports unreadable directories itself
        for entry in entries:
            relpath = f"{rel}{entry.name}"
            if entry.is_dir() and not entry.is_symlink():
                if folder.recursive and not rules.is_ignored_dir(entry.name):
                    stack.append((str(entry), relpath + "/"))
            elif (why := rules.describe_skip(relpath)) is not None:
                out.append((str(entry), why))
    return sorted(out)
