"""Which filesystem a folder lives on, read from ``/proc/self/mountinfo``.

Owns the ``poll: auto`` decision: inotify does not see changes made by other hosts on network
filesystems (NFS, CIFS/SMB, FUSE, ...), so folders there are polled instead of watched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")

# inotify only sees local changes on these: other clients' writes are invisible to it
_NETWORK_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "ceph", "glusterfs",
    "lustre", "gpfs", "ocfs2", "gfs2", "davfs", "coda", "beegfs", "orangefs", "virtiofs",
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Mount:
    mount_point: str
    fstype: str


def parse_mountinfo(text: str) -> list[Mount]:
    """Mount points and filesystem types from mountinfo text (proc(5))."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5:
            continue
        mount_point = _unescape(fields[4])
        mounts.append(Mount(mount_point, right.split()[0] if right else ""))
    return mounts


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount a (resolved) path lives on: the longest mount point above it."""
    best: Mount | None = None
    for mount in mounts:
        point = mount.mount_point.rstrip("/") or "/"
        inside = path == point or path.startswith(point.rstrip("/") + "/") or point == "/"
        if inside and (best is None or len(point) >= len(best.mount_point.rstrip("/") or "/")):
            best = mount
    return best


def is_network_fs(fstype: str) -> bool:
    """NFS, CIFS, FUSE (sshfs, rclone mount, ...) and other shared filesystems."""
    return fstype in _NETWORK_TYPES or fstype == "fuse" or fstype.startswith("fuse.")


def needs_polling(path: Path, mountinfo: Path = MOUNTINFO) -> tuple[bool, str]:
    """Whether ``poll: auto`` polls ``path``, and the filesystem type that decided it."""
    try:
        mounts = parse_mountinfo(mountinfo.read_text())
    except OSError:
        return False, "unknown"
    mount = mount_of(os.path.realpath(path), mounts)
    fstype = mount.fstype if mount else "unknown"
    return is_network_fs(fstype), fstype


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")
