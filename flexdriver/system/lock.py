"""One node-wide lock under /run: every decision about the pool is made while holding it.

flock(2) is released by the kernel when the holder dies, so a SIGKILLed call never leaves the
node locked. /run is a tmpfs: the lock file vanishes at reboot, as it should.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import threading
import time
from collections.abc import Iterator

from ..errors import Busy
from . import files

LOCK_NAME = "lock"


class _Expired(Exception):
    pass


def _expire(signum, frame):
    raise _Expired()


@contextlib.contextmanager
def node_lock(run_dir: str, timeout_s: float) -> Iterator[None]:
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    fd = files.open_lock(os.path.join(run_dir, LOCK_NAME))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _wait(fd, timeout_s)
        yield
    finally:
        os.close(fd)  # closing the only fd releases the flock


def _wait(fd: int, timeout_s: float) -> None:
    if threading.current_thread() is not threading.main_thread():
        _poll(fd, timeout_s)
        return
    # A blocking flock interrupted by a timer: no polling, woken the instant the holder lets go.
    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except _Expired:
        raise _busy(timeout_s) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _busy(timeout_s: float) -> Busy:
    return Busy(f"the node lock was held by another call for more than {timeout_s:g} s; retry")


def _poll(fd: int, timeout_s: float) -> None:
    """A resident process's worker threads (the CSI plugin's) cannot take SIGALRM, which only the
    main thread receives: they try again, every few milliseconds at first, up to 50 ms apart."""
    deadline = time.monotonic() + timeout_s
    pause = 0.005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _busy(timeout_s) from None
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)
