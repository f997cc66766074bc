"""Which paths of a watched folder are synced: include/exclude globs, the built-in ignore list.

Owns the glob dialect, the temporary, hidden and system files no folder ever syncs, and the
symlink-escape test. Pure functions of strings: no I/O, no stat (the scanner does those).

The dialect (docs/rules.md has the full table):

- a path is relative to the folder root, with "/" separators ("renders/v2/shot.png");
- a pattern without "/" matches the base name at any depth ("*.png" matches "a/b/c.png");
- a pattern with "/" matches the whole path from the folder root ("renders/*.png" matches
  "renders/x.png" only); a leading "/" (or "./") anchors a pattern without any other "/";
- a trailing "/" names a directory and everything under it, at any depth unless anchored
  ("tmp/" is "**/tmp/**", "/tmp/" is "tmp/**");
- ``*``, ``?`` and ``[...]`` (``[!...]`` negates) never match "/"; ``**`` as a whole path segment
  matches zero or more directories; elsewhere ``**`` is ``*``; there is no escape character
  (write ``[*]``, ``[?]``, ``[[]`` for the literal characters);
- matching ignores case ("*.png" matches "SHOT.PNG").
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

# Never synced, in any folder: partial downloads, editor and office lock/swap/backup files,
# safe-save temporaries, OS metadata. Superset of Nextcloud's sync-exclude.lst. Most specific
# first, because describe_skip names the first entry that matches.
BUILTIN_IGNORED_NAMES: tuple[str, ...] = (
    "*.part",  # Firefox, Transmission, KIO
    "*.partial",  # Edge, IE
    "*.filepart",  # WinSCP
    "*.crdownload",  # Chrome, Chromium
    "*.download",  # Safari
    "*.opdownload",  # Opera
    "*.!qb",  # qBittorrent
    "*.!ut",  # uTorrent
    "*.!bt",  # BitComet
    "~$*",  # Microsoft Office owner file
    "~*.tmp",  # Microsoft Office, Syncthing (~syncthing~x.tmp)
    "*.tmp",
    "*.temp",
    "*.gnucash.tmp-*",  # GnuCash
    ".~lock.*",  # LibreOffice lock file
    "*.swp",  # Vim swap files when 'directory' puts them beside the file
    "*.swo",
    "*.swx",
    ".*.sw?",  # Vim swap files (hidden)
    "*.kate-swp",  # Kate
    "*~",  # Emacs, gedit, many editors: backup copy
    "#*#",  # Emacs auto-save
    "*.~*",  # backup and temporary copies ("x.~tmp", "x.~1~")
    "*.sb-*",  # macOS safe-save temporaries ("x.png.sb-1a2b3c-XyZ")
    "*.unison",  # Unison
    "*.textClipping",  # macOS text clippings
    "._*",  # macOS AppleDouble resource forks
    ".DS_Store",  # macOS Finder
    ".nfs*",  # NFS silly-renamed open-but-deleted files
    ".fuse_hidden*",  # FUSE open-but-deleted files
    ".*",  # everything hidden (.syncthing.*.tmp, rsync's .x.AbCdEf, .#lock, .directory, ...)
    "Thumbs.db",  # Windows Explorer thumbnail caches
    "ehthumbs.db",
    "ehthumbs_vista.db",
    "photothumb.db",  # Synology Photo Station
    "desktop.ini",  # Windows folder settings
    "Icon\r",  # macOS custom folder icon (the name ends in a carriage return)
    "My Saved Places.",  # Windows (Nextcloud's list)
)

# Directories never entered: hidden, trash, snapshots, NAS indexes, OS system folders.
BUILTIN_IGNORED_DIRS: tuple[str, ...] = (
    ".*",  # hidden: .git, .Trash-1000, .Trashes, .Spotlight-V100, .fseventsd, .sync, .snapshot
    "System Volume Information",  # Windows
    "$RECYCLE.BIN",  # Windows recycle bin
    "RECYCLER",  # Windows XP recycle bin
    "lost+found",  # fsck
    "@eaDir",  # Synology thumbnail index
    "#recycle",  # Synology recycle bin
    "#snapshot",  # Synology snapshots
    "__MACOSX",  # resource forks unpacked from a macOS zip
    "*.download",  # Safari: the partial file inside carries its final name
)


@dataclass(frozen=True, slots=True)
class _Glob:
    """One compiled pattern: against the base name or the whole relative path (lower case)."""

    pattern: str
    on_path: bool
    regex: re.Pattern[str]
    dir_regex: re.Pattern[str] | None  # a directory whose whole subtree the pattern covers

    def matches(self, name: str, path: str) -> bool:
        return self.regex.fullmatch(path if self.on_path else name) is not None


def _compile(pattern: str) -> _Glob:
    body, on_path = _normalize(pattern)
    segments = body.split("/")
    covers_dir = on_path and len(segments) > 1 and segments[-1] == "**"
    try:
        regex = re.compile(_segments_regex(segments))
        dir_regex = re.compile(_segments_regex(segments[:-1])) if covers_dir else None
    except re.error as exc:
        raise ValueError(f"invalid pattern {pattern!r}: {exc}") from exc
    return _Glob(pattern, on_path, regex, dir_regex)


def _normalize(pattern: str) -> tuple[str, bool]:
    """Lower-case, anchor and expand ``pattern``; return (body, matched against the path)."""
    text = re.sub("/+", "/", pattern.lower())
    anchored = text.startswith(("/", "./"))
    text = text.removeprefix(".").removeprefix("/") if anchored else text
    is_dir = text.endswith("/")
    text = text.rstrip("/")
    if not text:
        raise ValueError(f"empty pattern {pattern!r}")
    on_path = anchored or is_dir or "/" in text
    if is_dir:
        text = f"{text}/**" if anchored or "/" in text else f"**/{text}/**"
    return text, on_path


def _segments_regex(segments: list[str]) -> str:
    last = len(segments) - 1
    parts = []
    for i, segment in enumerate(segments):
        if segment == "**":
            parts.append(".*" if i == last else "(?:[^/]+/)*")
        else:
            parts.append(_translate(segment) + ("" if i == last else "/"))
    return "".join(parts)


def _translate(segment: str) -> str:
    """The regex of one path segment: ``*``, ``?`` and ``[...]`` never match "/"."""
    out = []
    i, n = 0, len(segment)
    while i < n:
        char = segment[i]
        end = _class_end(segment, i) if char == "[" else -1
        if char == "*":
            while i + 1 < n and segment[i + 1] == "*":
                i += 1
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif end != -1:
            out.append(_char_class(segment[i + 1 : end]))
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _class_end(segment: str, start: int) -> int:
    """Index of the "]" closing the class opened at ``start``, or -1 (then "[" is literal)."""
    i = start + 1
    if segment[i : i + 1] in ("!", "^"):
        i += 1
    if segment[i : i + 1] == "]":
        i += 1
    return segment.find("]", i)


def _char_class(body: str) -> str:
    negate = body[:1] in ("!", "^")
    body = body[1:] if negate else body
    items = []
    for i, char in enumerate(body):
        is_range = char == "-" and 0 < i < len(body) - 1 and "-" not in (body[i - 1], body[i + 1])
        items.append("-" if is_range else re.escape(char))
    return f"[^/{''.join(items)}]" if negate else f"[{''.join(items)}]"


@dataclass(frozen=True, slots=True)
class _PatternSet:
    """Globs compiled for speed: base-name literals, suffixes and prefixes skip the regex."""

    globs: tuple[_Glob, ...]
    exact: frozenset[str]
    suffixes: tuple[str, ...]
    prefixes: tuple[str, ...]
    names: re.Pattern[str] | None
    paths: re.Pattern[str] | None
    dirs: re.Pattern[str] | None

    @classmethod
    def of(cls, patterns: Iterable[str]) -> _PatternSet:
        globs = tuple(_compile(p) for p in patterns)
        shaped: dict[str, list[str]] = {"exact": [], "suffix": [], "prefix": []}
        names = []
        for glob in globs:
            shape = None if glob.on_path else _shape(glob.pattern.lower())
            if shape is not None:
                shaped[shape].append(glob.pattern.lower())
            elif not glob.on_path:
                names.append(glob.regex)
        return cls(
            globs=globs,
            exact=frozenset(shaped["exact"]),
            suffixes=_minimal((p[1:] for p in shaped["suffix"]), suffix=True),
            prefixes=_minimal((p[:-1] for p in shaped["prefix"]), suffix=False),
            names=_alternation(names),
            paths=_alternation(g.regex for g in globs if g.on_path),
            dirs=_alternation(g.dir_regex for g in globs if g.dir_regex is not None),
        )

    def matches(self, name: str, path: str) -> bool:
        """Whether any glob matches; ``name`` and ``path`` are already lower case."""
        return (
            name in self.exact
            or name.endswith(self.suffixes)
            or name.startswith(self.prefixes)
            or (self.names is not None and self.names.fullmatch(name) is not None)
            or (self.paths is not None and self.paths.fullmatch(path) is not None)
        )

    def first(self, name: str, path: str) -> _Glob | None:
        return next((g for g in self.globs if g.matches(name, path)), None)


def _shape(pattern: str) -> str | None:
    """Which string test can replace the regex: "exact", "suffix" ("*.png"), "prefix" ("~$*")."""
    if not any(c in pattern for c in "*?["):
        return "exact"
    if pattern.startswith("*") and not any(c in pattern[1:] for c in "*?["):
        return "suffix"
    if pattern.endswith("*") and not any(c in pattern[:-1] for c in "*?["):
        return "prefix"
    return None


def _minimal(affixes: Iterable[str], *, suffix: bool) -> tuple[str, ...]:
    """The prefixes (or suffixes) that no shorter one already covers ("._" under ".")."""
    unique = sorted(set(affixes), key=len)
    kept: list[str] = []
    for affix in unique:
        if not (affix.endswith(tuple(kept)) if suffix else affix.startswith(tuple(kept))):
            kept.append(affix)
    return tuple(kept)


def _alternation(regexes: Iterable[re.Pattern[str]]) -> re.Pattern[str] | None:
    sources = [f"(?:{r.pattern})" for r in regexes]
    return re.compile("|".join(sources)) if sources else None


_IGNORED_NAMES = _PatternSet.of(BUILTIN_IGNORED_NAMES)
_IGNORED_DIRS = _PatternSet.of(BUILTIN_IGNORED_DIRS)


@dataclass(frozen=True)
class FolderRules:
    """The include and exclude globs of one folder, compiled once, plus the built-in list.

    Raises ValueError at construction for an empty or malformed pattern. An empty ``include``
    matches nothing.
    """

    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    _include: _PatternSet = field(init=False, repr=False, compare=False)
    _exclude: _PatternSet = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("include", "exclude"):  # accept a list, or one pattern as a plain string
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        object.__setattr__(self, "_include", _PatternSet.of(self.include))
        object.__setattr__(self, "_exclude", _PatternSet.of(self.exclude))

    def is_ignored_name(self, name: str) -> bool:
        """Whether a file of this base name is on the built-in ignore list."""
        low = name.lower()
        return _IGNORED_NAMES.matches(low, low)

    def is_ignored_dir(self, name: str) -> bool:
        """Whether a directory of this base name is never entered (built-in list)."""
        low = name.lower()
        return _IGNORED_DIRS.matches(low, low)

    def is_excluded_dir(self, reldir: str) -> bool:
        """Whether an exclude covers everything under ``reldir`` ("tmp/", "a/**"): skip the walk."""
        dirs = self._exclude.dirs
        return dirs is not None and dirs.fullmatch(reldir.lower()) is not None

    def is_wanted(self, relpath: str) -> bool:
        """Whether the file at ``relpath`` is synced: not ignored, included, not excluded."""
        head, _, name = relpath.rpartition("/")
        for part in head.split("/") if head else ():
            low = part.lower()
            if _IGNORED_DIRS.matches(low, low):
                return False
        return self.is_wanted_file(name, relpath)

    def is_wanted_file(self, name: str, relpath: str) -> bool:
        """``is_wanted`` for a walker that already checked every directory of ``relpath``."""
        name, path = name.lower(), relpath.lower()
        return (  # include first: it is cheap and refuses most of what it refuses early
            self._include.matches(name, path)
            and not _IGNORED_NAMES.matches(name, name)
            and not self._exclude.matches(name, path)
        )

    def describe_skip(self, relpath: str) -> str | None:
        """Why ``relpath`` is not synced, in words for ``run --dry-run``; None when it is."""
        head, _, name = relpath.rpartition("/")
        for part in head.split("/") if head else ():
            if self.is_ignored_dir(part):
                return f"inside an ignored directory ({part})"
        path, low = relpath.lower(), name.lower()
        if (builtin := _IGNORED_NAMES.first(low, low)) is not None:
            return f"temporary or hidden file ({_printable(builtin.pattern)})"
        if (excluded := self._exclude.first(low, path)) is not None:
            return f"excluded by {excluded.pattern!r}"
        if not self._include.matches(low, path):
            return "not in include list"
        return None


def _printable(pattern: str) -> str:
    return pattern.replace("\r", "\\r")


def escapes(root_real: str, target_real: str) -> bool:
    """Whether ``target_real`` is neither ``root_real`` nor inside it (both already resolved).

    Compares whole path components, so "/a/bc" escapes "/a/b".
    """
    root = os.path.normpath(root_real)
    target = os.path.normpath(target_real)
    try:
        return os.path.commonpath([root, target]) != root
    except ValueError:  # one absolute and one relative: they cannot be compared, refuse
        return True
