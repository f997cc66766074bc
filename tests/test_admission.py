"""The one way in: what Gate.admit lets through, and open_admitted's proof of the file opened."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from florasync import errors
from florasync.local import admission
from florasync.local.admission import Gate, Refusal
from florasync.local.identity import FileStat
from florasync.local.rules import FolderRules


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "watched"
    folder.mkdir()
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    away = tmp_path / "outside"
    away.mkdir()
    (away / "secret.png").write_bytes(b"not for FLORA")
    return away


def gate(root: Path, *, recursive: bool = True, exclude: tuple[str, ...] = ()) -> Gate:
    return Gate(str(root), FolderRules(("*.png",), exclude), recursive)


def refusal_code(result: FileStat | Refusal | None) -> str | None:
    return result.code if isinstance(result, Refusal) else None


def test_a_regular_file_inside_is_admitted_with_its_stat(root):
    """A regular file inside the folder is admitted with the stat of the file itself."""
    f = root / "a.png"
    f.write_bytes(b"x" * 10)
    assert gate(root).admit(str(f)) == FileStat.from_stat(f.stat())


def test_a_symlink_inside_to_a_file_inside_is_admitted_as_its_target(root):
    """A link to a file inside the folder is admitted, with the target's stat."""
    target = root / "real.png"
    target.write_bytes(b"y")
    (root / "link.png").symlink_to(target)
    assert gate(root).admit(str(root / "link.png")) == FileStat.from_stat(target.stat())


def test_a_symlink_to_an_outside_file_is_refused(root, outside):
    """A link to a file outside the folder is refused as symlink_escape (policy)."""
    (root / "x.png").symlink_to(outside / "secret.png")
    result = gate(root).admit(str(root / "x.png"))
    assert refusal_code(result) == admission.SYMLINK_ESCAPE
    assert isinstance(result, Refusal)
    assert result.is_policy


def test_a_file_under_a_symlinked_outside_directory_is_refused(root, outside):
    """A file reached through a directory link that leads outside is refused."""
    (root / "dir").symlink_to(outside)
    assert refusal_code(gate(root).admit(str(root / "dir" / "secret.png"))) == "symlink_escape"


def test_a_directory_swapped_for_an_outside_link_is_refused_after_being_admitted(root, outside):
    """A directory admitted once and then replaced by a link to an outside directory is
    resolved again: remembering admitted directories never lets the swap through."""
    sub = root / "sub"
    sub.mkdir()
    (sub / "secret.png").write_bytes(b"inside")
    g = gate(root)
    assert isinstance(g.admit(str(sub / "secret.png")), FileStat)
    (sub / "secret.png").unlink()
    sub.rmdir()
    sub.symlink_to(outside)
    assert refusal_code(g.admit(str(sub / "secret.png"))) == "symlink_escape"


def test_gone_dangling_and_looping_paths(root):
    """A missing file or a dangling link is None (nothing there); a link loop is refused."""
    assert gate(root).admit(str(root / "missing.png")) is None
    (root / "dangling.png").symlink_to(root / "nowhere.png")
    assert gate(root).admit(str(root / "dangling.png")) is None
    (root / "a.png").symlink_to(root / "b.png")
    (root / "b.png").symlink_to(root / "a.png")
    assert refusal_code(gate(root).admit(str(root / "a.png"))) == "symlink_loop"


def test_paths_outside_the_rules_are_excluded(root):
    """Non-recursive depth, ignored and excluded directories, unwanted names, paths outside
    the folder or not normalised: all refused as excluded, before any stat."""
    (root / "sub").mkdir()
    for name in ("sub/a.png", "a.txt", ".hidden/a.png", "tmp/a.png"):
        path = root / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"z")
    shallow = gate(root, recursive=False)
    assert refusal_code(shallow.admit(str(root / "sub" / "a.png"))) == "excluded"
    g = gate(root, exclude=("tmp/",))
    for name in ("a.txt", ".hidden/a.png", "tmp/a.png"):
        assert refusal_code(g.admit(str(root / name))) == "excluded", name
    assert refusal_code(g.admit(str(root.parent / "elsewhere.png"))) == "excluded"
    assert refusal_code(g.admit(f"{root}/sub/../a.png")) == "excluded"


def test_a_fifo_is_not_a_regular_file(root):
    """A FIFO named like an image is refused as not_regular (it would block a reader)."""
    os.mkfifo(root / "pipe.png")
    assert refusal_code(gate(root).admit(str(root / "pipe.png"))) == "not_regular"


def test_open_admitted_refuses_another_file_swapped_in(root, outside):
    """The opened fd must be the admitted file: a rename over it, or a link swapped in,
    is refused before a byte is read; an unchanged file opens and still matches."""
    f = root / "a.png"
    f.write_bytes(b"first")
    admitted = gate(root).admit(str(f))
    assert isinstance(admitted, FileStat)
    with admission.open_admitted(str(f), admitted) as stream:
        assert stream.read() == b"first"
        assert admission.still_admitted(stream, admitted)
    other = root / "other.png"
    other.write_bytes(b"other")
    other.replace(f)
    with pytest.raises(errors.FileChangedError):
        admission.open_admitted(str(f), admitted)
    f.unlink()
    f.symlink_to(outside / "secret.png")
    with pytest.raises(errors.FileChangedError):
        admission.open_admitted(str(f), admitted)


def test_still_admitted_notices_a_write_through_the_open_file(root):
    """A write to the file after it was opened (same inode, new size) is noticed."""
    f = root / "a.png"
    f.write_bytes(b"12345")
    admitted = gate(root).admit(str(f))
    assert isinstance(admitted, FileStat)
    with admission.open_admitted(str(f), admitted) as stream:
        with f.open("ab") as writer:
            writer.write(b"678")
        assert not admission.still_admitted(stream, admitted)
