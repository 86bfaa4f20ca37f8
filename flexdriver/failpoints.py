"""Named points where a test can make the driver SIGKILL itself, to prove every step is crash-safe.

Armed only by the environment variable AX_VOL_PLUGIN_FAILPOINTS (comma-separated names), which
kubelet passes from its own environment: nothing in a pod spec can reach it. Off, a failpoint
costs one set lookup.

Two kinds of name:
- a step, e.g. `mount-after-lvcreate`: the driver dies when it reaches that step;
- `during-<program>`, e.g. `during-mkfs.ext4`: the driver dies while that program is running as
  its child, so the child is killed half-way too (see system/runner.py); for an LVM command
  run in the lvm shell (`during-lvcreate`), while the shell works on it (system/lvm_shell.py).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

ENV = "AX_VOL_PLUGIN_FAILPOINTS"
_ARMED = frozenset(name for name in os.environ.get(ENV, "").split(",") if name)
# Long enough for the child to have started its real work, short enough that it has not finished.
DURING_DELAY_S = 0.15
POLL_S = 0.002  # how often to look for the child's first write: a mkfs writes within ms


def hit(name: str) -> None:
    if name in _ARMED:
        # SIGKILL, like the OOM killer or a power cut: no cleanup, no finally blocks. Children
        # die with us through PR_SET_PDEATHSIG.
        os.kill(os.getpid(), signal.SIGKILL)


def during(program: str, still_running: Callable[[], int | None], pid: int | None = None) -> None:
    """Called by the runner right after it started `program` (a base name); `still_running` is
    the child's poll(). Dies only if the child is still at work, so a test that asked for a
    kill half-way through gets exactly that, or sees the call finish and knows.

    With the child's `pid`, dies as soon as the child has begun writing (a mkfs on a thin volume
    can finish in less than DURING_DELAY_S: a fixed wait made the kill a matter of luck), and
    at DURING_DELAY_S in any case if it is still running."""
    if not (_ARMED and f"during-{program}" in _ARMED):
        return
    from .system import host  # only when armed; host imports the runner, which imports us

    deadline = time.monotonic() + DURING_DELAY_S
    while pid is not None and time.monotonic() < deadline:
        if still_running() is not None:
            return
        if host.written_bytes(pid) > 0:
            break
        time.sleep(POLL_S)
    else:
        time.sleep(max(0.0, deadline - time.monotonic()))
    if still_running() is None:
        hit(f"during-{program}")

