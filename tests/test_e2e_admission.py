"""The one way in, end to end: symlinks, hard links and files swapped while they settle, through
the real CLI, in scan mode (`run --scan`) and watch mode (the daemon) (issue 11, item 1).

Whatever a path in a watched folder turns out to be, only a regular file inside the folder is
read: the bytes of a file outside never reach FLORA. A hard link is not a way out: it is a
directory entry inside the folder, naming bytes its creator could already read (the kernel's
``fs.protected_hardlinks`` stops users linking files they cannot read), so a hard link in the
folder is synced like any regular file, and two names for one file are one asset.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .daemonenv import running, synced
from .helpers import LONG_TIMEOUT, assert_exactly_once, sha256_of, wait_until, write_file
from .syncenv import SyncEnv

SETTLE = 2  # settle_seconds in the race tests: the test writes far more often than this


@dataclass
class Outside:
    """Files outside every watched folder."""

    secret: Path  # must never reach FLORA
    album: Path  # a directory of images, must never reach FLORA
    shared: Path  # hard-linked into a folder: synced through the link

    def forbidden(self) -> list[Path]:
        return [self.secret, *sorted(self.album.iterdir())]


@pytest.fixture
def outside(tmp_path: Path) -> Outside:
    """A secret image, a directory of images and a file to hard-link, next to the folders."""
    root = tmp_path / "outside"
    secret = root / "secret.png"
    write_file(secret, 7777, seed=1)
    album = root / "album"
    for n in range(3):
        write_file(album / f"a{n}.png", 3000 + n, seed=10 + n)
    shared = root / "shared.png"
    write_file(shared, 5000, seed=2)
    return Outside(secret, album, shared)


@dataclass
class Links:
    """The entries one scenario puts in folder 0."""

    original: Path  # a regular file
    alias: Path  # symlink to ``original``, inside
    twin: Path  # hard link to ``original``
    hard: Path  # hard link to ``outside.shared``
    escape: Path  # symlink to ``outside.secret``
    escape_dir: Path  # symlink to ``outside.album``


def make_links(folder: Path, outside: Outside) -> Links:
    """Create the scenario's entries, outside links first (the watcher sees them first)."""
    names = ("original.png", "alias.png", "twin.png", "hard.png", "escape.png", "album")
    links = Links(*(folder / name for name in names))
    links.escape_dir.symlink_to(outside.album, target_is_directory=True)
    links.escape.symlink_to(outside.secret)
    write_file(links.original, 4096, seed=3)
    links.alias.symlink_to(links.original.name)  # relative, as `ln -s original.png alias.png`
    os.link(links.original, links.twin)
    os.link(outside.shared, links.hard)
    return links


def sent_digests(state: dict[str, Any]) -> set[str]:
    """sha256 of every body FLORA stored or received, on any asset."""
    stored = {a["sha256"] for a in state["assets"]}
    received = {u["sha256"] for a in state["assets"] for u in a["uploads"]}
    return (stored | received) - {None}


def assert_never_sent(state: dict[str, Any], paths: list[Path]) -> None:
    """No asset holds, and no upload carried, the bytes of any of ``paths``."""
    sent = sent_digests(state)
    leaked = [p for p in paths if sha256_of(p) in sent]
    assert leaked == [], f"bytes from outside the folder reached FLORA: {leaked}"


def failure_codes(env: SyncEnv) -> dict[str, str]:
    """``status --json``: path -> problem code."""
    return {f["path"]: f["code"] for f in env.status()["failures"]}


def assert_links_outcome(
    env: SyncEnv, outside: Outside, links: Links, *also: Path
) -> dict[str, str]:
    """The escaping links are refused and reported; every content inside (the original, the
    hard link from elsewhere, ``also``) is one ready asset attached once; returns the codes."""
    state = env.sb.state()
    assert_never_sent(state, outside.forbidden())
    inside = [links.original, links.hard, *also]
    assert_exactly_once(state, dict.fromkeys(inside, env.projects[0]))
    codes = failure_codes(env)
    assert codes[str(links.escape)] == "symlink_escape"
    return codes


# -- symlinks and hard links -------------------------------------------------------------------


def test_links_in_scan_mode(env: SyncEnv, outside: Outside) -> None:
    """run --scan: links leading outside are skipped (exit 0) and listed; inside links and hard
    links are synced, one asset per content."""
    links = make_links(env.folders[0], outside)
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed, 2 skipped" in result.stdout
    codes = assert_links_outcome(env, outside, links)
    assert codes[str(links.escape_dir)] == "symlink_escape"
    folder = env.status()["folders"][0]
    assert (folder["synced"], folder["skipped"], folder["failed"]) == (4, 2, 0)


def test_links_in_watch_mode(env: SyncEnv, outside: Outside, tmp_path: Path) -> None:
    """The daemon: links created while it watches are admitted like in a scan, and it goes on
    syncing the files written after them."""
    with running(env, tmp_path):
        links = make_links(env.folders[0], outside)
        after = env.add(0, "after.png")
        wait_until(lambda: synced(env, after), message="a file written after the links")
        wait_until(lambda: synced(env, links.hard), message="the hard link from elsewhere")
        wait_until(
            lambda: failure_codes(env).get(str(links.escape)) == "symlink_escape",
            message="the escaping symlink reported",
        )
        # every name of the original counted as synced: duplicates would have been sent by now
        wait_until(lambda: env.status()["folders"][0]["synced"] == 5, message="five names synced")
    assert_links_outcome(env, outside, links, after)


def test_retry_never_puts_back_an_escaping_symlink(
    env: SyncEnv, outside: Outside, tmp_path: Path
) -> None:
    """`florasync retry` after a symlink_escape leaves it out, and the daemon that follows
    still never uploads the bytes it points to."""
    escape = env.folders[0] / "escape.png"
    escape.symlink_to(outside.secret)
    assert env.scan().returncode == 0
    every = env.cli("retry")
    assert "queued again" not in every.stdout
    assert "0 file(s) put back in the queue" in every.stdout
    named = env.cli("retry", str(escape))
    assert f"not failed (nothing to retry): {escape}" in named.stdout
    with running(env, tmp_path):
        later = env.add(0, "later.png")
        wait_until(lambda: synced(env, later), message="the daemon syncing")
        wait_until(
            lambda: failure_codes(env).get(str(escape)) == "symlink_escape",
            message="the catch-up scan refusing the symlink again",
        )
    assert_never_sent(env.sb.state(), [outside.secret])
    assert_exactly_once(env.sb.state(), {later: env.projects[0]})


# -- a file swapped while it settles -----------------------------------------------------------


def write_until(f: io.BufferedWriter, done: Callable[[], bool]) -> None:
    """Keep writing through ``f`` (never closing it: the file never settles) until ``done()``."""

    def write_then_look() -> bool:
        f.write(b"\0" * 512)
        f.flush()
        return done()

    wait_until(write_then_look, interval=0.05, message="the file seen while it is written")


def swap(path: Path, outside: Outside, replacement: str) -> bytes:
    """Rename a staged entry over ``path`` (``os.replace``); return its bytes before the swap."""
    before = path.read_bytes()
    staged = path.with_name(".staged")  # hidden: never a candidate itself
    if replacement == "symlink":
        staged.symlink_to(outside.secret)
    else:
        write_file(staged, 6000, seed=5)
    staged.replace(path)
    return before


def assert_swap_outcome(
    env: SyncEnv, outside: Outside, race: Path, before: bytes, replacement: str, *also: Path
) -> None:
    """What was there before the swap never settled, so never left; after it, an outside
    symlink is refused and reported, a regular file lands once."""
    state = env.sb.state()
    assert hashlib.sha256(before).hexdigest() not in sent_digests(state)
    assert_never_sent(state, [outside.secret])
    expected = dict.fromkeys(also, env.projects[0])
    if replacement == "file":
        expected[race] = env.projects[0]
    else:
        assert failure_codes(env)[str(race)] == "symlink_escape"
    assert_exactly_once(state, expected)


@pytest.mark.parametrize("replacement", ["symlink", "file"])
def test_swap_while_settling_in_scan_mode(env: SyncEnv, outside: Outside, replacement: str) -> None:
    """run --scan: a file replaced (rename) while it settles, by an outside symlink or by another
    file: the outside bytes never leave, the final file lands once, exit 0."""
    race = env.folders[0] / "race.png"
    marker = env.add(0, "sub/marker.png")
    env.write_config(settle_seconds=SETTLE)
    with race.open("wb") as f:
        f.write(b"\0" * 4096)
        scan = env.popen("run", "--scan")
        try:
            # the marker is walked after race.png (files before subdirectories): once it is
            # being sent, race.png has been seen and is waiting to settle
            write_until(f, lambda: _reserved(env))
            before = swap(race, outside, replacement)
        except BaseException:
            env.kill(scan)
            raise
    out, err = scan.communicate(timeout=LONG_TIMEOUT)
    assert scan.returncode == 0, out + err
    assert ("1 skipped" in out) == (replacement == "symlink"), out
    assert_swap_outcome(env, outside, race, before, replacement, marker)


@pytest.mark.parametrize("replacement", ["symlink", "file"])
def test_swap_while_settling_in_watch_mode(
    env: SyncEnv, outside: Outside, tmp_path: Path, replacement: str
) -> None:
    """The daemon: a file replaced (rename) while it settles, by an outside symlink or by
    another file: the outside bytes never leave, the final file lands once."""
    race = env.folders[0] / "race.png"
    env.write_config(settle_seconds=SETTLE)
    with running(env, tmp_path) as daemon:
        with race.open("wb") as f:
            write_until(f, lambda: any("settling 1" in m for m in daemon.notify.drain()))
            before = swap(race, outside, replacement)
        if replacement == "file":
            wait_until(lambda: synced(env, race), message="the final file synced")
        else:
            wait_until(
                lambda: failure_codes(env).get(str(race)) == "symlink_escape",
                message="the swapped-in symlink refused",
            )
        after = env.add(0, "after.png")
        wait_until(lambda: synced(env, after), message="the daemon going on")
    assert_swap_outcome(env, outside, race, before, replacement, after)


def _reserved(env: SyncEnv) -> bool:
    """Whether florasync has asked FLORA for an asset yet."""
    return any(r["route"] == "POST /assets" for r in env.sb.state()["requests"])
