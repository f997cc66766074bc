"""A full pass over the configured folders: scan, consult the stat cache, feed the pipeline.

Owns what a scan means (used by ``run --scan``, the daemon's catch-up scan, safety rescans and
rescans after lost events): every candidate is classified by the stat cache, unchanged files cost
a stat, the rest go to the pipeline, problems are journaled, vanished files are forgotten.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from florasync.config.config import FolderConfig
from florasync.errors import StoppedError
from florasync.local import after_upload, scanner
from florasync.local.rules import FolderRules
from florasync.state.catalog import Catalog
from florasync.state.journal.records import FileEntry
from florasync.state.journal.store import Journal
from florasync.state.lifecycle import Failure
from florasync.sync.pipeline import Pipeline
from florasync.sync.transfer import Outcome

log = logging.getLogger(__name__)

_SKIPPED_CODES = frozenset({"symlink_escape"})


@dataclass
class SweepCount:
    """What one sweep of one folder found."""

    files: int = 0
    unchanged: int = 0
    queued: int = 0
    problems: int = 0


def sweep_folder(
    folder: FolderConfig, *, journal: Journal, pipeline: Pipeline, stop: threading.Event
) -> SweepCount:
    """Scan ``folder`` once and queue everything not yet attached to its project."""
    count = SweepCount()
    root = str(folder.path)
    catalog = Catalog(journal, pipeline.workspace_id, full_scan=True)
    journal.clear_scan_problems(root)
    root_unread = False

    def on_problem(problem: scanner.ScanProblem) -> None:
        nonlocal root_unread
        root_unread = root_unread or problem.path == root  # vanished or unreadable itself
        count.problems += 1
        _record_problem(journal, pipeline, folder, problem)

    rules = FolderRules(include=tuple(folder.include), exclude=tuple(folder.exclude))
    candidates = scanner.scan(
        folder.path, rules=rules, recursive=folder.recursive, on_problem=on_problem, stop=stop
    )
    acts = after_upload.wants_action(folder)  # once per sweep, not once per file
    try:
        for cand in candidates:
            if not _take(cand, folder, catalog, pipeline, count, acts_after_upload=acts):
                return count  # closing: leave the rest for the next start
    except StoppedError:
        return count  # stopped (a signal, a refused key): whoever stopped us says why
    if not stop.is_set() and not pipeline.is_closing and not root_unread:
        # the folder itself too: its last top-level files may be gone (issue 11, item 7);
        # a folder that could not be read says nothing about what is gone
        catalog.finish()
        journal.forget_dirs_except(root, catalog.dirs_seen)
    return count


def _take(
    cand: scanner.Candidate,
    folder: FolderConfig,
    catalog: Catalog,
    pipeline: Pipeline,
    count: SweepCount,
    *,
    acts_after_upload: bool,
) -> bool:
    """Count or queue one candidate; False when the pipeline no longer takes work.

    An unchanged file is queued anyway when the folder acts after upload (delete or move).
    """
    count.files += 1
    path = cand.abspath
    verdict = catalog.classify(path, cand.stat, pipeline.known_project(folder, path))
    if verdict.unchanged and not acts_after_upload:
        count.unchanged += 1
        pipeline.note(Outcome.UNCHANGED, cand.stat.size)
        return True
    if not pipeline.offer(path, folder, stat=cand.stat, digest=verdict.digest, classified=True):
        return False
    count.queued += 1
    return True


def _record_problem(
    journal: Journal, pipeline: Pipeline, folder: FolderConfig, problem: scanner.ScanProblem
) -> None:
    failure = Failure(problem.code, problem.message, time.time())
    project_id = pipeline.known_project(folder, problem.path)
    entry = FileEntry(problem.path, str(folder.path), project_id, None, None, failure)
    journal.record_file(entry)
    skipped = problem.code in _SKIPPED_CODES
    log.warning(
        "%s: %s (%s)%s",
        problem.path,
        problem.message,
        problem.code,
        "; not followed" if skipped else "",
    )
    outcome = Outcome.SKIPPED if skipped else Outcome.FAILED
    pipeline.note(outcome, path=problem.path, code=problem.code, message=problem.message)
