"""A sweep of one folder with the real engine against the sandbox: what is queued, what costs
only a stat, which problems are journaled, what is forgotten, and a stop in the middle."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from florasync.config import config
from florasync.config.runtime import Runtime
from florasync.sandbox import Sandbox
from florasync.sync.engine import Engine
from florasync.sync.outcomes import NoProgress
from florasync.sync.sweep import SweepCount, sweep_folder
from florasync.sync.transfer import Outcome

from .helpers import LONG_TIMEOUT, assert_exactly_once, mutating_requests, write_config, write_file
from .syncenv import FAST_RETRIES


class Harness:
    """One folder mapped to the sandbox's first project, and an engine to sweep it with."""

    def __init__(self, sb: Sandbox, root: Path, stack: ExitStack) -> None:
        self.sb, self.root, self._stack = sb, root, stack
        self.folder_path = root / "photos"
        self.folder_path.mkdir()
        self.project = sb.project_ids[0]
        folders = [{"path": str(self.folder_path), "project_id": self.project}]
        self.config = write_config(
            root / "florasync.yaml",
            base_url=sb.base_url,
            workspace_id=sb.workspace_id,
            folders=folders,
            state_dir=root / "state",
            settle_seconds=0,
            workers=2,
            retry=FAST_RETRIES,
        )

    def engine(self, progress=None) -> Engine:
        """A started engine; closed when the test ends (one at a time: it holds the run lock)."""
        env = {"FLORA_API_KEY": self.sb.api_key}
        rt = Runtime(cfg=config.load(self.config, env), path=self.config, env=env)
        return self._stack.enter_context(Engine(rt, retry_deferred=False, progress=progress))

    def close_engines(self) -> None:
        self._stack.close()

    def sweep(self, engine: Engine) -> SweepCount:
        """Sweep the folder and wait until every queued file has its outcome."""
        folder = engine.rt.cfg.folders[0]
        count = sweep_folder(
            folder, journal=engine.journal, pipeline=engine.pipeline, stop=engine.stop
        )
        assert engine.pipeline.wait_idle(LONG_TIMEOUT)
        return count

    def add(self, relpath: str, seed: int) -> Path:
        path = self.folder_path / relpath
        write_file(path, 2048, seed=seed)
        return path

    def known(self, engine: Engine, *paths: Path) -> set[Path]:
        """Which of ``paths`` the journal has a row for (what ``status`` counts)."""
        ws = engine.rt.cfg.workspace_id
        return {p for p in paths if engine.journal.cached_file(ws, str(p)) is not None}


@pytest.fixture
def harness(sandbox: Sandbox, tmp_path: Path) -> Iterator[Harness]:
    with ExitStack() as stack:
        yield Harness(sandbox, tmp_path, stack)


def test_sweep_queues_new_files_and_counts_unchanged_ones(harness) -> None:
    """New files are queued and synced once; a second sweep counts them unchanged and sends
    nothing."""
    files = [harness.add(name, seed) for seed, name in enumerate(["a.png", "b.jpg", "day/c.png"])]
    engine = harness.engine()
    assert harness.sweep(engine) == SweepCount(files=3, unchanged=0, queued=3, problems=0)
    state = harness.sb.state()
    assert_exactly_once(state, dict.fromkeys(files, harness.project))
    assert engine.pipeline.summary.counts[Outcome.UPLOADED] == 3
    assert harness.sweep(engine) == SweepCount(files=3, unchanged=3, queued=0, problems=0)
    assert engine.pipeline.summary.counts[Outcome.UNCHANGED] == 3
    assert mutating_requests(harness.sb.state()) == mutating_requests(state)


def test_escaping_symlink_is_journaled_and_skipped(harness, tmp_path) -> None:
    """A symlink leading outside the folder is a journaled symlink_escape, skipped, and its
    bytes never reach FLORA."""
    secret = tmp_path / "secret.png"
    write_file(secret, 2048, seed=99)
    link = harness.folder_path / "link.png"
    link.symlink_to(secret)
    inside = harness.add("inside.png", seed=1)
    engine = harness.engine()
    assert harness.sweep(engine) == SweepCount(files=1, unchanged=0, queued=1, problems=1)
    failures = engine.journal.failures(engine.rt.cfg.workspace_id, 10)
    assert [(f["path"], f["code"]) for f in failures] == [(str(link), "symlink_escape")]
    assert engine.pipeline.summary.counts[Outcome.SKIPPED] == 1
    assert_exactly_once(harness.sb.state(), {inside: harness.project})


def test_vanished_files_and_directories_are_forgotten(harness) -> None:
    """Files deleted since the last sweep, alone or with their directory, leave the journal."""
    kept = harness.add("kept.png", seed=1)
    deleted = harness.add("deleted.png", seed=2)
    in_dir = harness.add("day/x.png", seed=3)
    nested = harness.add("day/deep/y.png", seed=4)
    engine = harness.engine()
    harness.sweep(engine)
    assert harness.known(engine, kept, deleted, in_dir, nested) == {kept, deleted, in_dir, nested}
    deleted.unlink()
    (harness.folder_path / "day" / "deep" / "y.png").unlink()
    (harness.folder_path / "day" / "deep").rmdir()
    in_dir.unlink()
    assert harness.sweep(engine) == SweepCount(files=1, unchanged=1, queued=0, problems=0)
    assert harness.known(engine, kept, deleted, in_dir, nested) == {kept}


def test_emptied_folder_forgets_its_files(harness) -> None:
    """When the last file at the top of the folder is deleted, it leaves the journal too."""
    top = harness.add("top.png", seed=1)
    below = harness.add("day/below.png", seed=2)
    engine = harness.engine()
    harness.sweep(engine)
    top.unlink()
    assert harness.sweep(engine) == SweepCount(files=1, unchanged=1, queued=0, problems=0)
    assert harness.known(engine, top, below) == {below}


def test_folder_briefly_gone_forgets_nothing(harness, tmp_path) -> None:
    """A sweep of a folder that is gone (an unmounted drive) forgets nothing, so when it comes
    back its files cost a stat, not a read."""
    files = [harness.add(relpath, seed) for seed, relpath in enumerate(["a.png", "day/b.png"])]
    engine = harness.engine()
    harness.sweep(engine)
    harness.folder_path.rename(tmp_path / "unmounted")
    assert harness.sweep(engine) == SweepCount(problems=1)
    assert harness.known(engine, *files) == set(files)
    (tmp_path / "unmounted").rename(harness.folder_path)
    assert harness.sweep(engine) == SweepCount(files=2, unchanged=2)


def test_scan_problems_are_found_again_or_cleared(harness, tmp_path) -> None:
    """Each sweep clears the folder's old scan problems first: one still there is found
    again, one that went away leaves the journal."""
    secret = tmp_path / "secret.png"
    write_file(secret, 2048, seed=99)
    link = harness.folder_path / "link.png"
    link.symlink_to(secret)
    engine = harness.engine()
    workspace = engine.rt.cfg.workspace_id
    for _ in range(2):
        assert harness.sweep(engine).problems == 1
        assert [f["code"] for f in engine.journal.failures(workspace, 10)] == ["symlink_escape"]
    link.unlink()
    assert harness.sweep(engine) == SweepCount()
    assert engine.journal.failures(workspace, 10) == []
    assert harness.known(engine, link) == set()


class StopAfterFirstFile(NoProgress):
    """Sets ``stop`` once the first file is decided: a SIGTERM in the middle of a scan."""

    def __init__(self) -> None:
        self.stop: threading.Event | None = None

    def finished(self, outcome: Outcome, size_bytes: int) -> None:
        if self.stop is not None:
            self.stop.set()


def test_stop_mid_scan_ends_the_sweep_and_forgets_nothing(harness) -> None:
    """A stop during a sweep ends it without an error, and what it did not get to see stays
    in the journal."""
    files = [harness.add(f"dir{n}/f.png", seed=n) for n in range(5)]
    harness.sweep(harness.engine())
    harness.close_engines()  # a second engine needs the run lock
    progress = StopAfterFirstFile()
    engine = harness.engine(progress)
    progress.stop = engine.stop
    count = sweep_folder(
        engine.rt.cfg.folders[0], journal=engine.journal, pipeline=engine.pipeline, stop=engine.stop
    )
    assert count == SweepCount(files=1, unchanged=1, queued=0, problems=0)
    assert harness.known(engine, *files) == set(files)


def test_closing_pipeline_ends_the_sweep(harness) -> None:
    """A pipeline that stopped taking work ends the sweep; the rest waits for the next start."""
    for n in range(3):
        harness.add(f"f{n}.png", seed=n)
    engine = harness.engine()
    engine.pipeline.begin_close()
    count = sweep_folder(
        engine.rt.cfg.folders[0], journal=engine.journal, pipeline=engine.pipeline, stop=engine.stop
    )
    assert count == SweepCount(files=1, unchanged=0, queued=0, problems=0)
    assert harness.sb.state()["assets"] == []
