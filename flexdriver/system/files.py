"""The one place the driver and the admin command open files they create: the call log and its
rotations, the metrics file and its counters, the lock files.

They run as root, and some of these dirs may belong to someone else (Debian's textfile dir for
node_exporter lies under the prometheus user's home). Such a user can plant a link where a file
of ours is about to be, so that root's open truncates or appends to the file it points to.
Hence: nothing is opened through a link (O_NOFOLLOW), a temp file is always new (O_EXCL), and a
dir that anyone but root could change is refused before anything is written into it.
"""

from __future__ import annotations

import os
import stat

_NEW = os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW


def open_append(path: str, mode: int = 0o640) -> int:
    """An fd appending to `path`, made if missing; OSError (ELOOP) if `path` is a link."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | _NEW, mode)


def open_lock(path: str) -> int:
    """An fd to flock: the lock file, made if missing; never through a link."""
    return os.open(path, os.O_RDWR | _NEW, 0o600)


def read_text(path: str) -> str:
    """The file's text; OSError if it is missing or a link."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    with os.fdopen(fd, encoding="utf-8") as handle:
        return handle.read()


def replace(path: str, text: str, mode: int = 0o600) -> None:
    """Write `path` whole, so that a reader sees the old file or the new one, never a part.

    The temp file is a dot-file beside it (node_exporter reads only *.prom), made with O_EXCL: if
    something is already there (a crashed call's leftover, or a planted link), it is removed,
    which removes a link and not what it points to, and made again; if that races, this call
    gives up rather than write through anything it did not make.
    """
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_EXCL | _NEW, mode)
    except FileExistsError:
        os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_EXCL | _NEW, mode)
    try:
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
    os.rename(tmp, path)


def untrusted_dir(path: str, owners: tuple[int, ...] = (0,)) -> str | None:
    """Why root should not write into (or import from) `path`, or None.

    `path` must be root's (or an owner's in `owners`) and writable by no group or other user. So must every dir above it,
    except that one may be sticky as /tmp is: its other users can then neither rename nor
    remove the root-owned dir below. Links are resolved first, and where they lead is checked.
    """
    current = os.path.realpath(path)
    first = True
    while True:
        try:
            st = os.lstat(current)
        except OSError as err:
            return f"{current}: {err.strerror}"
        if not stat.S_ISDIR(st.st_mode):
            return f"{current} is not a directory"
        if st.st_uid not in owners:
            return f"{current} is owned by uid {st.st_uid}, not root"
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if writable and (first or not st.st_mode & stat.S_ISVTX):
            return f"{current} is writable by others than root (mode {stat.S_IMODE(st.st_mode):o})"
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current, first = parent, False
