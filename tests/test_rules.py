"""Unit tests of the path rules: the glob dialect, the built-in ignore list, symlink escape."""

from __future__ import annotations

import pytest

from florasync.local import rules
from florasync.local.rules import FolderRules

GLOB_CASES = [
    # a pattern without "/" matches the base name at any depth
    ("*.png", "a.png", True),
    ("*.png", "a/b/c.png", True),
    ("*.png", "a.png.tmp2", False),
    ("*.png", "png", False),
    ("c.png", "a/b/c.png", True),
    ("c.png", "a/b/xc.png", False),
    # a pattern with "/" matches the whole path from the root
    ("renders/*.png", "renders/x.png", True),
    ("renders/*.png", "renders/a/x.png", False),
    ("renders/*.png", "old/renders/x.png", False),
    ("/renders/*.png", "renders/x.png", True),
    ("./renders/*.png", "renders/x.png", True),
    ("/cover.png", "cover.png", True),
    ("/cover.png", "a/cover.png", False),
    ("renders//x.png", "renders/x.png", True),
    # *, ? and [...] never cross "/"
    ("shot_*.png", "shot_010.png", True),
    ("a*b", "a/b", False),
    ("a?b", "a/b", False),
    ("v?.mov", "v1.mov", True),
    ("v?.mov", "v10.mov", False),
    ("take[0-9].png", "take3.png", True),
    ("take[0-9].png", "takeA.png", False),
    ("take[!0-9].png", "takeA.png", True),
    ("take[!0-9].png", "take3.png", False),
    ("take[^0-9].png", "takeA.png", True),
    ("a[!x]b", "a/b", False),
    ("[]]x", "]x", True),
    ("[!]]x", "ax", True),
    ("[a-]x", "-x", True),
    ("x[*]", "x*", True),
    ("x[*]", "xy", False),
    ("x[?]", "x?", True),
    ("[[]x", "[x", True),
    ("[x", "[x", True),
    ("a.b", "axb", False),
    ("a+b(1)$", "a+b(1)$", True),
    # ** matches zero or more whole directories
    ("renders/**/*.png", "renders/x.png", True),
    ("renders/**/*.png", "renders/a/b/x.png", True),
    ("renders/**/*.png", "x.png", False),
    ("renders/**/*.png", "old/renders/x.png", False),
    ("**/tmp/**", "tmp/x", True),
    ("**/tmp/**", "a/tmp/b/x", True),
    ("**/tmp/**", "tmpx/a", False),
    ("**/tmp/**", "a/tmp", False),
    ("renders/**", "renders/a/b/x.png", True),
    ("renders/**", "renders", False),
    ("**/*.png", "x.png", True),
    ("**/*.png", "a/b/x.png", True),
    ("a**.png", "abc.png", True),
    ("a**.png", "a/b.png", False),
    ("**", "a/b/c", True),
    ("/**", "a/b/c", True),
    # a trailing "/" is a directory and everything under it
    ("cache/", "cache/x.png", True),
    ("cache/", "a/cache/b/x.png", True),
    ("cache/", "cache.png", False),
    ("cache/", "cache", False),
    ("/cache/", "cache/x.png", True),
    ("/cache/", "a/cache/x.png", False),
    ("renders/old/", "renders/old/x.png", True),
    ("renders/old/", "a/renders/old/x.png", False),
    # matching ignores case
    ("*.png", "SHOT.PNG", True),
    ("*.PNG", "shot.png", True),
    ("Renders/*.png", "renders/A.Png", True),
    ("take[A-C].png", "takeb.png", True),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), GLOB_CASES)
def test_glob_semantics(pattern, path, expected):
    """An include pattern matches exactly the paths docs/rules.md says it matches."""
    assert FolderRules(include=(pattern,)).is_wanted(path) is expected


@pytest.mark.parametrize("pattern", ["", "/", "./", "//", "take[z-a].png"])
def test_invalid_patterns_are_refused(pattern):
    """An empty or malformed pattern is refused when the rules are built, naming the pattern."""
    with pytest.raises(ValueError, match="pattern"):
        FolderRules(include=(pattern,))


def test_exclude_wins_over_include_and_ignores_case():
    """A path matching an include and an exclude is not wanted; exclude "*.tmp" takes "x.TMP"."""
    folder = FolderRules(include=("*",), exclude=("*.tmp", "renders/old/**"))
    assert folder.is_wanted("a/x.png")
    assert not folder.is_wanted("x.TMP")
    assert not folder.is_wanted("renders/old/a/b.png")
    assert folder.is_wanted("renders/new/b.png")


def test_empty_include_matches_nothing():
    """Without include patterns nothing is wanted, and the reason says so."""
    folder = FolderRules(include=())
    assert not folder.is_wanted("a.png")
    assert folder.describe_skip("a.png") == "not in include list"


def test_rules_accept_lists_and_stay_comparable():
    """Lists (from YAML) become tuples; equal pattern lists give equal, hashable rules."""
    a = FolderRules(include=["*.png"], exclude=["*.tmp"])  # type: ignore[arg-type]
    b = FolderRules(include=("*.png",), exclude=("*.tmp",))
    assert a == b
    assert hash(a) == hash(b)
    assert a.include == ("*.png",)


# One example per built-in entry; test_every_builtin_entry_has_an_example keeps this complete.
IGNORED_NAME_EXAMPLES = {
    "*.part": "render.png.part",
    "*.partial": "render.png.partial",
    "*.filepart": "render.png.filepart",
    "*.crdownload": "render.png.crdownload",
    "*.download": "render.png.download",
    "*.opdownload": "render.png.opdownload",
    "*.!qb": "movie.mp4.!qB",
    "*.!ut": "movie.mp4.!ut",
    "*.!bt": "movie.mp4.!bt",
    "~$*": "~$deck.pptx",
    "~*.tmp": "~WRL0001.tmp",
    "*.tmp": "ps1234.tmp",
    "*.temp": "render.temp",
    "*.gnucash.tmp-*": "books.gnucash.tmp-12345",
    ".~lock.*": ".~lock.deck.odp#",
    "*.swp": "notes.txt.swp",
    "*.swo": "notes.txt.swo",
    "*.swx": "notes.txt.swx",
    ".*.sw?": ".notes.txt.swp",
    "*.kate-swp": "notes.txt.kate-swp",
    "*~": "render.png~",
    "#*#": "#notes.txt#",
    "*.~*": "render.~tmp",
    "*.sb-*": "render.png.sb-1a2b3c-XyZ",
    "*.unison": "render.png.unison",
    "*.textClipping": "Clip.textClipping",
    "._*": "._render.png",
    ".DS_Store": ".DS_Store",
    ".nfs*": ".nfs000000000123abcd",
    ".fuse_hidden*": ".fuse_hidden0000001a00000001",
    ".*": ".hidden.png",
    "Thumbs.db": "Thumbs.db",
    "ehthumbs.db": "ehthumbs.db",
    "ehthumbs_vista.db": "ehthumbs_vista.db",
    "photothumb.db": "photothumb.db",
    "desktop.ini": "desktop.ini",
    "Icon\r": "Icon\r",
    "My Saved Places.": "My Saved Places.",
}

IGNORED_DIR_EXAMPLES = {
    ".*": ".git",
    "System Volume Information": "System Volume Information",
    "$RECYCLE.BIN": "$RECYCLE.BIN",
    "RECYCLER": "RECYCLER",
    "lost+found": "lost+found",
    "@eaDir": "@eaDir",
    "#recycle": "#recycle",
    "#snapshot": "#snapshot",
    "__MACOSX": "__MACOSX",
    "*.download": "photo.jpg.download",
}


def test_every_builtin_entry_has_an_example():
    """Each built-in ignore entry is exercised by an example below (the list stays tested)."""
    assert set(IGNORED_NAME_EXAMPLES) == set(rules.BUILTIN_IGNORED_NAMES)
    assert set(IGNORED_DIR_EXAMPLES) == set(rules.BUILTIN_IGNORED_DIRS)


@pytest.mark.parametrize(("pattern", "name"), sorted(IGNORED_NAME_EXAMPLES.items()))
def test_builtin_ignored_names(pattern, name):
    """A temporary, hidden or system file is never wanted, even when "*" is included."""
    folder = FolderRules(include=("*",))
    assert folder.is_ignored_name(name)
    assert folder.is_ignored_name(name.upper())
    assert not folder.is_wanted(name)
    assert not folder.is_wanted(f"deep/dir/{name}")
    reason = folder.describe_skip(name)
    assert reason is not None
    assert reason.startswith("temporary or hidden file (")


@pytest.mark.parametrize(("pattern", "name"), sorted(IGNORED_DIR_EXAMPLES.items()))
def test_builtin_ignored_dirs(pattern, name):
    """Nothing inside an ignored directory is wanted, at any depth, and the reason names it."""
    folder = FolderRules(include=("*",))
    assert folder.is_ignored_dir(name)
    assert folder.is_ignored_dir(name.lower())
    assert not folder.is_wanted(f"{name}/x.png")
    assert not folder.is_wanted(f"a/{name}/b/x.png")
    assert folder.describe_skip(f"a/{name}/b/x.png") == f"inside an ignored directory ({name})"


@pytest.mark.parametrize(
    "name",
    [
        "render.png",
        "render_v2.final.png",
        "shot#1.png",
        "~render.png",
        "render~1.png",
        "partial.png",
        "tmp.png",
        "a.lnk",
        "x.bak",
        "Icon.png",
        "thumbs.db.png",
    ],
)
def test_ordinary_names_are_not_ignored(name):
    """Ordinary names that only resemble ignored ones are synced ("*.lnk" is left to include)."""
    assert FolderRules(include=("*",)).is_wanted(name)


@pytest.mark.parametrize("name", ["renders", "tmp", "cache", "~old", "Icon", "trash"])
def test_ordinary_dirs_are_entered(name):
    """Directory names that are not on the built-in list are walked."""
    folder = FolderRules(include=("*",))
    assert not folder.is_ignored_dir(name)
    assert folder.is_wanted(f"{name}/x.png")


@pytest.mark.parametrize(
    ("relpath", "reason"),
    [
        ("a/render.png", None),
        ("a/render.png.part", "temporary or hidden file (*.part)"),
        ("a/.~lock.deck.odp#", "temporary or hidden file (.~lock.*)"),
        ("a/.DS_Store", "temporary or hidden file (.DS_Store)"),
        ("Icon\r", "temporary or hidden file (Icon\\r)"),
        ("x.TMP", "temporary or hidden file (*.tmp)"),
        (".git/objects/x.png", "inside an ignored directory (.git)"),
        ("a/@eaDir/x.png", "inside an ignored directory (@eaDir)"),
        ("a/b.bak.png", "excluded by '*.bak.png'"),
        ("renders/old/x.png", "excluded by 'renders/old/'"),
        ("notes.txt", "not in include list"),
        ("renders/notes.txt", "excluded by 'renders/*.txt'"),
    ],
)
def test_describe_skip(relpath, reason):
    """describe_skip gives the first reason a path is skipped, in the dry-run wording."""
    folder = FolderRules(
        include=("*.png", "*.PNG"), exclude=("*.bak.png", "renders/old/", "renders/*.txt")
    )
    assert folder.describe_skip(relpath) == reason
    assert folder.is_wanted(relpath) is (reason is None)


@pytest.mark.parametrize(
    ("exclude", "reldir", "expected"),
    [
        ("cache/", "cache", True),
        ("cache/", "a/cache", True),
        ("cache/", "cache2", False),
        ("/cache/", "a/cache", False),
        ("**/tmp/**", "a/b/TMP", True),
        ("renders/old/**", "renders/old", True),
        ("renders/old/**", "renders", False),
        ("renders/old/*", "renders/old", False),
        ("*.tmp", "x.tmp", False),
    ],
)
def test_excluded_dir_prunes_only_whole_subtrees(exclude, reldir, expected):
    """A directory is skipped by the walk only when an exclude covers everything under it."""
    folder = FolderRules(include=("*",), exclude=(exclude,))
    assert folder.is_excluded_dir(reldir) is expected
    if expected:
        assert not folder.is_wanted(f"{reldir}/any/file.png")


@pytest.mark.parametrize(
    ("root", "target", "expected"),
    [
        ("/a/b", "/a/b", False),
        ("/a/b", "/a/b/c", False),
        ("/a/b", "/a/b/c/d.png", False),
        ("/a/b/", "/a/b/c", False),
        ("/a/b", "/a/bc", True),
        ("/a/b", "/a/bc/d", True),
        ("/a/b", "/a", True),
        ("/a/b", "/", True),
        ("/a/b", "/etc/passwd", True),
        ("/a/b", "/a/b/../c", True),
        ("/", "/anything", False),
        ("/a/b", "relative/c", True),
    ],
)
def test_escapes(root, target, expected):
    """A target escapes unless it is the root or inside it, by whole path components."""
    assert rules.escapes(root, target) is expected


def test_is_wanted_file_agrees_with_is_wanted():
    """The walker's shortcut gives the same answers as the full check for vetted directories."""
    folder = FolderRules(include=("*.png", "renders/**/*.jpg"), exclude=("*.bak.png",))
    for relpath in ["a.png", "a/b.PNG", "a/x.bak.png", "renders/a/x.jpg", "x.jpg", "a/.x.png"]:
        name = relpath.rpartition("/")[2]
        assert folder.is_wanted_file(name, relpath) is folder.is_wanted(relpath)
