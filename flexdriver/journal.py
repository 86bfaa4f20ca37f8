"""The call log: one JSON line per driver call, appended to the configured log file.

Each line is written with a single write(2) on an O_APPEND descriptor, so lines from concurrent
calls never interleave. Logging must never break a call: if the file cannot be written, the
line is dropped.

Rotation is done by the calls themselves, since every call is its own short process: the one
that finds the file over its size limit takes a lock, checks again (another call may just have
rotated it), renames log -> log.1 -> log.2 ... and the next call opens a new file. A call that
opened the old file a moment earlier writes its line into log.1: lines move, none is lost or
torn. An external logrotate works too, without copytruncate or a signal, for the same reason.
"""

from __future__ import annotations

import enum
import fcntl
import json
import os
import time

from .record import record
from .system import files


class CallRecord:
    def __init__(self, verb: str) -> None:
        self.started = time.monotonic()
        self.fields: dict[str, object] = {"verb": verb}
        # The pool as this call's decision saw it, and when (for the metrics; not logged).
        self.pool: object = None
        self.snapshot_at: float | None = None

    def saw(self, pool: object) -> None:
        self.pool, self.snapshot_at = pool, time.time()

    def duration_s(self) -> float:
        return time.monotonic() - self.started

    def note(self, **fields: object) -> None:
        self.fields.update({k: v for k, v in fields.items() if v is not None})

    def line(self, outcome: str, message: str) -> str:
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "pid": os.getpid(),
            **self.fields,
            "outcome": outcome,
            "message": message,
            "duration_s": round(self.duration_s(), 3),
        }
        return json.dumps(record, sort_keys=False, default=_plain) + "\n"


def _plain(value: object) -> object:
    # Typed values (a Decision, a Release) are logged as the words they stand for.
    return value.value if isinstance(value, enum.Enum) else str(value)


@record
class Rotation:
    max_bytes: int  # 0: never rotate
    keep: int  # rotated files kept: log.1 .. log.<keep>
    lock_path: str  # serialises rotations (on /run: gone at reboot, like any stale lock)


def append(path: str, line: str, rotation: Rotation | None = None) -> None:
    data = line.encode("utf-8", errors="replace")
    fd = _open(path)
    if fd is None:
        return
    try:
        st = os.fstat(fd)
        if rotation and rotation.max_bytes and st.st_size + len(data) > rotation.max_bytes:
            os.close(fd)
            fd = None
            _rotate(path, st.st_ino, rotation)
            fd = _open(path)
            if fd is None:
                return
        os.write(fd, data)
    except OSError:
        pass
    finally:
        if fd is not None:
            os.close(fd)


def _open(path: str) -> int | None:
    try:
        return files.open_append(path)  # never through a link planted where the log will be
    except OSError:
        return None


def _rotate(path: str, full_inode: int, rotation: Rotation) -> None:
    try:
        os.makedirs(os.path.dirname(rotation.lock_path), mode=0o700, exist_ok=True)
        lock = files.open_lock(rotation.lock_path)
    except OSError:
        return
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino != full_inode:
                return  # rotated by another call while this one waited for the lock
        except FileNotFoundError:
            return
        if rotation.keep == 0:
            os.unlink(path)
            return
        for number in range(rotation.keep - 1, 0, -1):
            try:
                os.rename(f"{path}.{number}", f"{path}.{number + 1}")
            except FileNotFoundError:
                pass
        os.rename(path, f"{path}.1")
    except OSError:
        pass
    finally:
        os.close(lock)  # releases the flock
