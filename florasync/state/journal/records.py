"""What the journal hands out and takes in, whatever its backend: plain records, no SQL.

Owns the shapes shared by every journal backend and its callers (the stat cache's rows, a file's
entry, a project name's row). ``lifecycle`` owns the asset and link records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from florasync.local.identity import FileStat
from florasync.state.lifecycle import Failure


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One path of a mapped folder, with the stat it had when it was hashed."""

    path: str
    folder: str
    project_id: str
    stat: FileStat | None
    digest: str | None
    problem: Failure | None = None

    @property
    def directory(self) -> str:
        return self.path.rpartition("/")[0] or "/"

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]


KnownFile = tuple[
    str, str | None, int, int, int | None, int | None, int | None, int | None, int | None
]
"""What the stat cache reads of one known file, for the project of the folder it is scanned in:
``(name, digest, has_problem, is_attached, dev, ino, size, mtime_ns, ctime_ns)``, the last five a
``FileStat`` when ``dev`` is not NULL. The flags are 0 or 1; ``is_attached``: the file is mapped
to that project and its content's link there is attached. A plain tuple as SQLite returns it: a
rescan reads one per known file, and a named tuple built per row cost more than the query's
join (issue 12)."""


@dataclass(frozen=True, slots=True)
class ProjectName:
    """What the journal knows of a project mapped by name: its id once found or created, the
    Idempotency-Key of a ``POST /projects`` that may have gone out (``create_key``), and the
    key generation the next create uses (a refused create's key is never sent again)."""

    name: str
    project_id: str | None
    create_key: str | None
    generation: int = 0


class CachedFile(NamedTuple):
    """What the journal knows of a path: its stat cache entry and the attachment state of its
    own project (a rename's lookup by inode, and tests; a scan reads ``KnownFile`` rows)."""

    path: str
    project_id: str
    stat: FileStat | None
    digest: str | None
    has_problem: bool
    link_state: str | None
