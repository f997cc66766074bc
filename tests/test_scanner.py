"""Tests of the folder walk on real directory trees: what is yielded, skipped and reported."""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

import pytest

from florasync import errors
from florasync.local import scanner
from florasync.local.identity import FileStat
from florasync.local.rules import FolderRules
from florasync.local.scanner import ScanProblem

MEDIA = FolderRules(include=("*.png", "*.jpg", "*.mov"))


def touch(root: Path, *relpaths: str) -> None:
    for relpath in relpaths:
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(relpath.encode())


def run_scan(root: Path, rules: FolderRules = MEDIA, **kwargs):
    """Scan to the end; return (sorted relpaths, problems)."""
    problems: list[ScanProblem] = []
    found = [
        c.relpath for c in scanner.scan(root, rules=rules, on_problem=problems.append, **kwargs)
    ]
    return sorted(found), problems


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "folder"
    root.mkdir()
    return root


@pytest.fixture
def scandir_calls(monkeypatch) -> list[str]:
    """Record every directory the scanner lists."""
    calls: list[str] = []
    real_scandir = os.scandir

    def recording_scandir(path):
        calls.append(os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", recording_scandir)
    return calls


def test_recursive_and_flat_scan(folder):
    """A recursive scan yields wanted files at every depth; a flat one only the top level."""
    touch(folder, "a.png", "notes.txt", "sub/b.jpg", "sub/deep/c.mov", "sub/deep/d.txt")
    assert run_scan(folder) == (["a.png", "sub/b.jpg", "sub/deep/c.mov"], [])
    assert run_scan(folder, recursive=False) == (["a.png"], [])


def test_candidate_carries_path_and_lstat(folder):
    """Each candidate has the path as under the folder and the file's own stat."""
    touch(folder, "sub/b.png")
    (candidate,) = scanner.scan(folder, rules=MEDIA)
    assert candidate.relpath == "sub/b.png"
    assert Path(candidate.abspath) == folder / "sub" / "b.png"
    assert candidate.abspath == f"{folder}/sub/b.png"
    assert candidate.stat == FileStat.from_stat((folder / "sub" / "b.png").stat())


def test_relative_root_gives_absolute_paths(folder, monkeypatch):
    """A folder given as a relative path still yields absolute candidate paths."""
    touch(folder, "a.png")
    monkeypatch.chdir(folder.parent)
    (candidate,) = scanner.scan(Path("folder"), rules=MEDIA)
    assert Path(candidate.abspath) == folder / "a.png"
    assert Path(candidate.abspath).is_absolute()


def test_include_and_exclude(folder):
    """Include and exclude globs (with paths, "**" and case) decide which files come out."""
    touch(
        folder,
        "a.png",
        "B.PNG",
        "a.bak.png",
        "renders/x.jpg",
        "renders/old/y.jpg",
        "renders/v1/z.jpg",
        "other/w.jpg",
    )
    rules = FolderRules(include=("*.png", "renders/**/*.jpg"), exclude=("*.bak.png", "old/"))
    found, problems = run_scan(folder, rules)
    assert found == ["B.PNG", "a.png", "renders/v1/z.jpg", "renders/x.jpg"]
    assert problems == []


def test_ignored_and_excluded_dirs_are_not_entered(folder, scandir_calls):
    """Built-in ignored directories and directories an exclude covers are never listed."""
    touch(
        folder,
        "a.png",
        ".git/objects/x.png",
        "@eaDir/a.png/thumb.jpg",
        "#recycle/old.png",
        "photo.jpg.download/photo.jpg",
        "cache/big/x.png",
        "renders/keep.png",
    )
    rules = FolderRules(include=MEDIA.include, exclude=("cache/",))
    found, problems = run_scan(folder, rules)
    assert found == ["a.png", "renders/keep.png"]
    assert problems == []
    assert sorted(Path(p).name for p in scandir_calls) == ["folder", "renders"]


def test_temporary_and_hidden_files_are_skipped(folder):
    """Partial downloads, swap and lock files and dot-files never come out of a scan."""
    touch(folder, "a.png", "a.png.part", ".a.png.swp", "~$deck.png", ".DS_Store", "b.png~")
    assert run_scan(folder, FolderRules(include=("*",))) == (["a.png"], [])


def test_symlinked_directory_inside_is_walked_once(folder):
    """A link to a directory already walked adds nothing; its files come under the real path."""
    touch(folder, "real/x.png", "real/sub/y.png")
    (folder / "link").symlink_to("real")
    (folder / "real" / "sub" / "back").symlink_to("..")
    found, problems = run_scan(folder)
    assert found == ["real/sub/y.png", "real/x.png"]
    assert [p.code for p in problems] == ["symlink_loop"]


def test_symlink_to_unwalked_directory_inside_is_followed(folder):
    """A link to a directory the walk would not enter (hidden) is walked under the link's path."""
    touch(folder, ".store/shots/x.png")
    (folder / "store").symlink_to(".store/shots")
    assert run_scan(folder) == (["store/x.png"], [])


def test_symlinked_file_inside_has_the_target_stat(folder):
    """A link to a file inside the folder is a candidate carrying the target's stat."""
    touch(folder, "real/x.png")
    (folder / "alias.png").symlink_to("real/x.png")
    candidates = {c.relpath: c for c in scanner.scan(folder, rules=MEDIA)}
    assert set(candidates) == {"alias.png", "real/x.png"}
    assert candidates["alias.png"].stat == candidates["real/x.png"].stat
    assert Path(candidates["alias.png"].abspath) == folder / "alias.png"


def test_symlinks_leaving_the_folder_are_reported_not_followed(folder, tmp_path):
    """Links out of the folder (to a directory, a file, or a look-alike sibling) are refused."""
    touch(tmp_path, "outside/secret.png", "folder2/lookalike.png")
    (folder / "out").symlink_to(tmp_path / "outside")
    (folder / "leak.png").symlink_to(tmp_path / "outside" / "secret.png")
    (folder / "sibling").symlink_to("../folder2")
    (folder / "dotdot.png").symlink_to("../outside/secret.png")
    found, problems = run_scan(folder)
    assert found == []
    assert sorted((Path(p.path).name, p.code) for p in problems) == [
        ("dotdot.png", "symlink_escape"),
        ("leak.png", "symlink_escape"),
        ("out", "symlink_escape"),
        ("sibling", "symlink_escape"),
    ]
    assert all("outside the folder" in p.message for p in problems)


def test_symlink_loops_are_reported_and_the_scan_ends(folder):
    """Links to an enclosing directory and self-referencing links are reported as loops."""
    touch(folder, "a/x.png")
    (folder / "a" / "up").symlink_to("..")
    (folder / "a" / "here").symlink_to(".")
    (folder / "self.png").symlink_to("self.png")
    (folder / "ping").symlink_to("pong")
    (folder / "pong").symlink_to("ping")
    found, problems = run_scan(folder)
    assert found == ["a/x.png"]
    assert sorted((Path(p.path).name, p.code) for p in problems) == [
        ("here", "symlink_loop"),
        ("ping", "symlink_loop"),
        ("pong", "symlink_loop"),
        ("self.png", "symlink_loop"),
        ("up", "symlink_loop"),
    ]
    loop = next(p for p in problems if p.path.endswith("self.png"))
    assert "[Errno 40]" in loop.message


def test_dangling_symlink_is_skipped_silently(folder):
    """A link to nothing is neither a candidate nor a problem."""
    (folder / "gone.png").symlink_to("nowhere.png")
    assert run_scan(folder) == ([], [])


def test_folder_reached_through_a_symlink(folder, tmp_path):
    """A folder configured through a symlink is walked; links to its real path are inside."""
    touch(folder, "a.png", "sub/b.png")
    alias = tmp_path / "alias"
    alias.symlink_to(folder)
    (folder / "abs.png").symlink_to(folder / "a.png")
    found, problems = run_scan(alias)
    assert found == ["a.png", "abs.png", "sub/b.png"]
    assert problems == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists directories whatever their mode")
def test_unreadable_directory_is_reported_and_the_rest_scanned(folder):
    """A directory without permissions is reported with the OS error; other files still come."""
    touch(folder, "a.png", "locked/x.png", "open/y.png")
    locked = folder / "locked"
    locked.chmod(0)
    try:
        found, problems = run_scan(folder)
    finally:
        locked.chmod(0o755)
    assert found == ["a.png", "open/y.png"]
    assert [(p.path, p.code) for p in problems] == [(str(locked), "unreadable_dir")]
    assert "[Errno 13] Permission denied" in problems[0].message


def test_files_vanishing_mid_scan_are_skipped_silently(folder):
    """Files and directories deleted while the scan runs are skipped without problems."""
    names = [f"f{i:02}.png" for i in range(50)]
    touch(folder, *names, "sub/a.png", "sub/deeper/b.png")
    problems: list[ScanProblem] = []
    walk = scanner.scan(folder, rules=MEDIA, on_problem=problems.append)
    first = next(walk)
    for path in folder.rglob("*.png"):
        if path.name != first.relpath:
            path.unlink()
    (folder / "sub" / "deeper").rmdir()
    (folder / "sub").rmdir()
    rest = list(walk)
    assert problems == []
    assert all((folder / c.relpath).exists() for c in rest)


def test_directory_vanishing_before_it_is_listed_is_skipped_silently(folder):
    """A directory found by the walk and deleted before its turn is skipped without problems."""
    touch(folder, "s1/a.png", "s1/b.png", "s2/a.png", "s2/b.png")
    problems: list[ScanProblem] = []
    walk = scanner.scan(folder, rules=MEDIA, on_problem=problems.append)
    first = next(walk)
    pending = folder / ("s2" if first.relpath.startswith("s1/") else "s1")
    for path in pending.iterdir():
        path.unlink()
    pending.rmdir()
    rest = [c.relpath for c in walk]
    assert problems == []
    assert sorted([first.relpath, *rest]) == [
        f"{first.relpath[:2]}/a.png",
        f"{first.relpath[:2]}/b.png",
    ]


def test_missing_folder_is_reported(tmp_path):
    """A folder that does not exist yields nothing and one "vanished" problem."""
    found, problems = run_scan(tmp_path / "nope")
    assert found == []
    assert [p.code for p in problems] == ["vanished"]
    assert "[Errno 2]" in problems[0].message


def test_folder_that_is_a_file_is_reported(tmp_path):
    """A folder path naming a regular file is reported, not walked."""
    touch(tmp_path, "file.png")
    found, problems = run_scan(tmp_path / "file.png")
    assert found == []
    assert [p.code for p in problems] == ["unreadable_dir"]
    assert "[Errno 20] Not a directory" in problems[0].message


def test_fifo_and_socket_are_skipped_silently(folder):
    """A FIFO or a socket with a wanted name is skipped without blocking or a problem."""
    touch(folder, "a.png")
    os.mkfifo(folder / "pipe.png")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(folder / "sock.png"))
        assert run_scan(folder) == (["a.png"], [])


def test_ten_thousand_files(folder):
    """A tree of 10,000 wanted files in 100 directories yields each exactly once."""
    expected = set()
    for d in range(100):
        directory = folder / f"shot{d:03}" / "v1"
        directory.mkdir(parents=True)
        for f in range(100):
            (directory / f"frame{f:03}.png").touch()
            expected.add(f"shot{d:03}/v1/frame{f:03}.png")
    found = [c.relpath for c in scanner.scan(folder, rules=MEDIA)]
    assert len(found) == 10_000
    assert set(found) == expected


def test_stop_ends_the_scan(folder):
    """Setting stop ends the walk with StoppedError before the next directory."""
    touch(folder, "a.png", "sub/b.png", "sub2/c.png")
    stop = threading.Event()
    walk = scanner.scan(folder, rules=MEDIA, stop=stop)
    assert next(walk).relpath == "a.png"
    stop.set()
    with pytest.raises(errors.StoppedError):
        next(walk)


def test_start_walks_one_subdirectory(folder):
    """``start`` walks only that directory, with paths still relative to the folder."""
    touch(folder, "a.png", "new/b.png", "new/deep/c.png", "other/d.png")
    assert run_scan(folder, start="new") == (["new/b.png", "new/deep/c.png"], [])
    assert run_scan(folder, start="/new/deep/") == (["new/deep/c.png"], [])


def test_start_inside_an_ignored_or_escaping_directory(folder, tmp_path):
    """``start`` in an ignored directory yields nothing; through an escaping link, a problem."""
    touch(folder, ".git/x.png", "cache/y.png")
    touch(tmp_path, "outside/z.png")
    (folder / "out").symlink_to(tmp_path / "outside")
    rules = FolderRules(include=MEDIA.include, exclude=("cache/",))
    assert run_scan(folder, rules, start=".git") == ([], [])
    assert run_scan(folder, rules, start="cache") == ([], [])
    found, problems = run_scan(folder, rules, start="out")
    assert found == []
    assert [p.code for p in problems] == ["symlink_escape"]


def test_default_problem_handler_logs_a_warning(tmp_path, caplog):
    """Without on_problem, problems are logged as warnings naming the path and the cause."""
    with caplog.at_level(logging.WARNING, logger="florasync.local.scanner"):
        assert list(scanner.scan(tmp_path / "nope", rules=MEDIA)) == []
    assert "nope" in caplog.text
    assert "No such file or directory" in caplog.text
