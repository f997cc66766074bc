"""The watcher on real inotify and real directories: which events become offers, walks,
forgets and rescans, and that its threads survive what the daemon throws at them."""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from florasync.config.config import FolderConfig
from florasync.local.watcher import Callbacks, Hint, Watcher

from .helpers import SHORT_TIMEOUT, wait_until


class Recorder:
    """Callbacks that remember every call (the drain and observer threads call them)."""

    def __init__(self, on_offer: Callable[[str], object] | None = None) -> None:
        self._lock = threading.Lock()
        self._calls: list[tuple[str, ...]] = []
        self._on_offer = on_offer

    def callbacks(self) -> Callbacks:
        return Callbacks(
            offer=self._offer, walk=self._walk, forget=self._forget, rescan=self._rescan
        )

    def calls(self, kind: str) -> list[tuple[str, ...]]:
        with self._lock:
            return [call[1:] for call in self._calls if call[0] == kind]

    def offered(self) -> set[str]:
        return {path for path, _, _ in self.calls("offer")}

    def forgotten(self) -> set[str]:
        return {path for (path,) in self.calls("forget")}

    def _add(self, *call: str) -> None:
        with self._lock:
            self._calls.append(call)

    def _offer(self, path: str, folder: FolderConfig, closed: bool) -> None:
        self._add("offer", path, folder.project_id or "", "closed" if closed else "open")
        if self._on_offer is not None:
            self._on_offer(path)

    def _walk(self, folder: FolderConfig, relpath: str) -> None:
        self._add("walk", folder.project_id or "", relpath)

    def _forget(self, path: str) -> None:
        self._add("forget", path)

    def _rescan(self, root: str, reason: str) -> None:
        self._add("rescan", root, reason)


def folder_at(path: Path, project_id: str = "prj_a", **kw) -> FolderConfig:
    path.mkdir(parents=True, exist_ok=True)
    return FolderConfig(path=path, project_id=project_id, **kw)


@pytest.fixture
def folder(tmp_path: Path) -> FolderConfig:
    return folder_at(tmp_path / "watched", exclude=("drafts/",))


@pytest.fixture
def start_watcher():
    """Start watchers with their own stop event; every one is stopped at teardown."""
    started: list[Watcher] = []

    def start(folders, recorder: Recorder, *, polled=(), stop=None, **kw) -> Watcher:
        watcher = Watcher(folders, recorder.callbacks(), stop=stop or threading.Event(), **kw)
        started.append(watcher)
        assert watcher.start(set(polled)) == []
        return watcher

    yield start
    for watcher in started:
        watcher.stop()


def wait_offered(recorder: Recorder, path: Path, closed: bool | None = None) -> None:
    wanted = {"closed", "open"} if closed is None else {"closed" if closed else "open"}
    wait_until(
        lambda: any(p == str(path) and c in wanted for p, _, c in recorder.calls("offer")),
        timeout=SHORT_TIMEOUT,
        message=f"offer of {path.name} ({'/'.join(sorted(wanted))})",
    )


def test_written_file_is_offered_as_closed(folder, start_watcher) -> None:
    """A file written and closed is offered with closed=True, for its folder's project."""
    recorder = Recorder()
    start_watcher([folder], recorder)
    path = folder.path / "shot.png"
    path.write_bytes(b"png" * 100)
    wait_offered(recorder, path, closed=True)
    assert {(p, project) for p, project, _ in recorder.calls("offer")} == {(str(path), "prj_a")}


def test_file_still_open_is_offered(folder, start_watcher) -> None:
    """A file created and written but not yet closed is offered (to settle), closed=False."""
    recorder = Recorder()
    start_watcher([folder], recorder)
    path = folder.path / "render.png"
    with path.open("wb") as f:
        f.write(b"first part")
        f.flush()
        wait_offered(recorder, path, closed=False)
        f.write(b"second part")
    wait_offered(recorder, path, closed=True)


def test_temporary_hidden_and_excluded_files_are_never_offered(folder, start_watcher) -> None:
    """Hidden, partial, Office-owner, excluded and not-included files produce no offer."""
    root = folder.path
    (root / "drafts").mkdir()
    (root / ".hidden").mkdir()
    recorder = Recorder()
    start_watcher([folder], recorder)
    for relpath in (".x.png", "a.png.part", "~$doc.png", "notes.txt", "drafts/x.png"):
        (root / relpath).write_bytes(b"not for FLORA")
    (root / ".hidden" / "y.png").write_bytes(b"not for FLORA")
    sentinel = root / "zz.png"  # events come in order: once it is offered, the rest were seen
    sentinel.write_bytes(b"for FLORA")
    wait_offered(recorder, sentinel, closed=True)
    assert recorder.offered() == {str(sentinel)}


def test_new_directory_is_walked_at_once(folder, start_watcher) -> None:
    """A directory that appears is walked right away (its files may predate its watch)."""
    recorder = Recorder()
    start_watcher([folder], recorder)
    (folder.path / "day1").mkdir()
    wait_until(
        lambda: ("prj_a", "day1") in recorder.calls("walk"),
        timeout=SHORT_TIMEOUT,
        message="walk of day1",
    )
    assert recorder.offered() == set()


def test_deleted_file_is_forgotten(folder, start_watcher) -> None:
    """A deleted file is forgotten, so status stops counting it at once."""
    recorder = Recorder()
    start_watcher([folder], recorder)
    path = folder.path / "gone.png"
    path.write_bytes(b"x")
    wait_offered(recorder, path, closed=True)
    path.unlink()
    wait_until(lambda: str(path) in recorder.forgotten(), timeout=SHORT_TIMEOUT, message="forget")


def test_deleted_directory_is_forgotten(folder, start_watcher) -> None:
    """rm -r of a directory forgets the directory itself (and with it all under it; issue 11
    item 7: vanished directories lingered in status until the next rescan)."""
    day = folder.path / "day1"
    (day / "deep").mkdir(parents=True)
    recorder = Recorder()
    start_watcher([folder], recorder)
    inner = day / "deep" / "a.png"
    inner.write_bytes(b"x")
    wait_offered(recorder, inner, closed=True)
    shutil.rmtree(day)
    wait_until(
        lambda: str(day) in recorder.forgotten(),
        timeout=SHORT_TIMEOUT,
        message="forget of the deleted directory",
    )


def test_directory_moved_out_or_renamed_is_forgotten(folder, start_watcher, tmp_path) -> None:
    """A directory moved out of the folder is forgotten; one renamed inside is forgotten under
    its old name and walked under its new one."""
    leaving, renamed = folder.path / "leaving", folder.path / "before"
    for directory in (leaving, renamed):
        directory.mkdir()
    recorder = Recorder()
    start_watcher([folder], recorder)
    for directory in (leaving, renamed):
        (directory / "a.png").write_bytes(directory.name.encode())
        wait_offered(recorder, directory / "a.png", closed=True)
    leaving.rename(tmp_path / "elsewhere")
    renamed.rename(folder.path / "after")
    wait_until(
        lambda: {str(leaving), str(renamed)} <= recorder.forgotten(),
        timeout=SHORT_TIMEOUT,
        message="forget of both old names",
    )
    wait_until(
        lambda: ("prj_a", "after") in recorder.calls("walk"),
        timeout=SHORT_TIMEOUT,
        message="walk of the new name",
    )


def test_symlink_is_offered_never_followed(folder, start_watcher, tmp_path) -> None:
    """A symlink is offered as a path for admission to judge, even one to a directory, which
    is not walked; nothing behind a link is seen."""
    recorder = Recorder()
    start_watcher([folder], recorder)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"must not leave")
    file_link, dir_link = folder.path / "photo.png", folder.path / "album.png"
    file_link.symlink_to(outside / "secret.png")
    dir_link.symlink_to(outside, target_is_directory=True)
    (folder.path / "album").symlink_to(outside, target_is_directory=True)
    (outside / "later.png").write_bytes(b"written behind the links")
    sentinel = folder.path / "zz.png"
    sentinel.write_bytes(b"x")
    wait_offered(recorder, sentinel, closed=True)
    assert recorder.offered() == {str(file_link), str(dir_link), str(sentinel)}
    assert recorder.calls("walk") == []


def test_overflow_rescans_every_watched_folder(tmp_path, start_watcher) -> None:
    """An inotify queue overflow (told by a call or by watchdog's log line) rescans every
    watched folder; a polled folder is left to its polling."""
    recorder = Recorder()
    watched, polled = folder_at(tmp_path / "a"), folder_at(tmp_path / "b", "prj_b")
    watcher = start_watcher([watched, polled], recorder, polled={1})
    watcher.overflowed()
    assert recorder.calls("rescan") == [(str(watched.path), "inotify queue overflow")]
    logging.getLogger("watchdog.observers.inotify_c").warning(
        "Inotify queue overflowed; filesystem events were lost"
    )
    assert recorder.calls("rescan") == [(str(watched.path), "inotify queue overflow")] * 2


def test_full_pending_set_asks_for_a_rescan(folder, start_watcher) -> None:
    """When more paths are pending than max_pending, the folder is rescanned instead."""
    release = threading.Event()
    recorder = Recorder(on_offer=lambda _: release.wait(SHORT_TIMEOUT))
    start_watcher([folder], recorder, max_pending=2)
    try:
        (folder.path / "first.png").write_bytes(b"x")
        wait_offered(recorder, folder.path / "first.png")  # the drain is now held in offer
        for n in range(6):
            (folder.path / f"burst{n}.png").write_bytes(b"x")
        wait_until(
            lambda: (str(folder.path), "too many pending events") in recorder.calls("rescan"),
            timeout=SHORT_TIMEOUT,
            message="rescan on a full pending set",
        )
    finally:
        release.set()


def test_pending_events_move_to_the_next_watcher(tmp_path, start_watcher) -> None:
    """Events a watcher recorded but never acted on are acted on by its successor (reload),
    for the folders the successor watches; the others are dropped."""
    kept, dropped = folder_at(tmp_path / "kept"), folder_at(tmp_path / "dropped", "prj_b")
    (kept.path / "old").mkdir()
    idle = threading.Event()
    idle.set()  # its drain ends at once: what it records stays pending
    old = start_watcher([kept, dropped], Recorder(), stop=idle)
    new_file, gone_dir = kept.path / "new.png", kept.path / "old"
    new_file.write_bytes(b"x")
    gone_dir.rmdir()
    (dropped.path / "other.png").write_bytes(b"x")
    pending: dict[str, Hint] = {}

    def collect() -> bool:
        for path, hint in old.take_pending():
            pending[path] = pending.get(path, Hint.CHANGED) | hint
        closed = [pending.get(str(p), Hint.CHANGED) for p in (new_file, dropped.path / "other.png")]
        return all(Hint.CLOSED in hint for hint in closed) and str(gone_dir) in pending

    wait_until(collect, timeout=SHORT_TIMEOUT, message="the old watcher's events")
    old.stop()
    recorder = Recorder()
    new = start_watcher([kept], recorder)
    new.adopt(list(pending.items()))
    wait_offered(recorder, new_file, closed=True)
    wait_until(
        lambda: str(gone_dir) in recorder.forgotten(), timeout=SHORT_TIMEOUT, message="forget"
    )
    assert recorder.offered() == {str(new_file)}


def test_a_watcher_stopped_mid_batch_hands_over_the_rest(folder, start_watcher) -> None:
    """A drain stopped in the middle of a batch puts the rest back for its successor."""
    paths = [folder.path / f"{name}.png" for name in ("a", "b", "c")]
    for path in paths:
        path.write_bytes(path.name.encode())
    stop, release = threading.Event(), threading.Event()
    first = Recorder(on_offer=lambda _: release.wait(SHORT_TIMEOUT))
    old = Watcher([folder], first.callbacks(), stop=stop)
    old.adopt([(str(path), Hint.CLOSED) for path in paths])  # one batch of three
    try:
        old.start(set())
        # held in the first offer of the batch: the newest path's (a save made now goes first)
        wait_offered(first, paths[-1], closed=True)
        stop.set()
    finally:
        release.set()
        old.stop()
    assert first.offered() == {str(paths[-1])}
    second = Recorder()
    start_watcher([folder], second).adopt(old.take_pending())
    for path in paths[:-1]:
        wait_offered(second, path, closed=True)
    assert second.offered() == {str(paths[0]), str(paths[1])}


def test_a_save_is_acted_on_before_a_burst_pending_in_another_directory(folder) -> None:
    """With a burst's paths pending, a file saved in another directory is offered first, the
    newest of the burst's directory next, and every path once (issue 12, fresh files first)."""
    burst = [folder.path / "renders" / f"frame{n:03}.png" for n in range(40)]
    save = folder.path / "comps" / "shot.png"
    for path in [*burst, save]:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(path.name.encode())
    recorder, stop = Recorder(), threading.Event()
    watcher = Watcher([folder], recorder.callbacks(), stop=stop)
    watcher.adopt([(str(path), Hint.CLOSED) for path in [*burst, save]])  # in writing order
    try:
        watcher.start(set())
        wait_until(
            lambda: len(recorder.calls("offer")) == len(burst) + 1,
            timeout=SHORT_TIMEOUT,
            message="every pending path offered",
        )
    finally:
        stop.set()
        watcher.stop()
    order = [path for path, _, _ in recorder.calls("offer")]
    assert order[0] == str(save)
    assert order[1:] == [str(path) for path in reversed(burst)]


def test_failing_callback_leaves_the_drain_alive(folder, start_watcher) -> None:
    """A callback that raises costs a rescan of the folder, not the drain thread."""

    def explode(path: str) -> None:
        if path.endswith("boom.png"):
            raise RuntimeError("the daemon could not take it")

    recorder = Recorder(on_offer=explode)
    watcher = start_watcher([folder], recorder)
    (folder.path / "boom.png").write_bytes(b"x")
    wait_until(
        lambda: (str(folder.path), "event handling error") in recorder.calls("rescan"),
        timeout=SHORT_TIMEOUT,
        message="rescan after the failed callback",
    )
    assert watcher.is_healthy()
    later = folder.path / "later.png"
    later.write_bytes(b"x")
    wait_offered(recorder, later, closed=True)


def test_restart_rearms_a_stopped_observer(folder, start_watcher) -> None:
    """After the observer dies, restart() arms a new one and events arrive again."""
    observers: list[BaseObserver] = []

    def make_observer() -> BaseObserver:
        observers.append(Observer())
        return observers[-1]

    recorder = Recorder()
    watcher = start_watcher([folder], recorder, observer_factory=make_observer)
    observers[0].stop()
    observers[0].join(SHORT_TIMEOUT)
    assert not watcher.is_healthy()
    watcher.restart()
    assert watcher.is_healthy()
    assert watcher.restarts == 1
    assert watcher.watched_roots() == [str(folder.path)]
    path = folder.path / "after.png"
    path.write_bytes(b"x")
    wait_offered(recorder, path, closed=True)


def test_watchdog_stop_race_never_reaches_the_log(caplog) -> None:
    """watchdog's ERROR from an emitter read that returns while it stops (seen during reloads)
    is dropped; its other messages, the overflow warning included, still get through."""
    inotify_log = logging.getLogger("watchdog.observers.inotify")
    with caplog.at_level(logging.WARNING, logger="watchdog.observers.inotify"):
        inotify_log.error("InotifyEmitter.queue_events() called when the thread is inactive")
        inotify_log.warning("inotify event queue overflowed")
    assert [r.getMessage() for r in caplog.records] == ["inotify event queue overflowed"]


def test_an_overflow_tells_the_user_once_how_to_avoid_it(tmp_path, start_watcher, caplog) -> None:
    """The first overflow logs one WARNING naming fs.inotify.max_queued_events and its value;
    later ones only rescan (a long burst may overflow again and again)."""
    recorder = Recorder()
    watcher = start_watcher([folder_at(tmp_path / "a")], recorder)
    with caplog.at_level(logging.WARNING, logger="florasync.local.watcher"):
        watcher.overflowed()
        watcher.overflowed()
    told = [r.getMessage() for r in caplog.records if r.name == "florasync.local.watcher"]
    assert len(told) == 1, told
    limit = Path("/proc/sys/fs/inotify/max_queued_events").read_text().strip()
    assert f"fs.inotify.max_queued_events is {limit}" in told[0]
    assert len(recorder.calls("rescan")) == 2
