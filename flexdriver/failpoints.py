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


def hit(name: str) -> None:
    if name in _ARMED:
        # SIGKILL, like the OOM killer or a power cut: no cleanup, no finally blocks. Children
        # die with us through PR_SET_PDEATHSIG.
        os.kill(os.getpid(), signal.SIGKILL)


def during(program: str, still_running: Callable[[], int | None]) -> None:
    """Called by the runner right after it started `program` (a base name); `still_running` is
    the child's poll(). Dies only if the child is still at work, so a test that asked for a
    kill half-way through gets exactly that, or sees the call finish and knows."""
    if _ARMED and f"during-{program}" in _ARMED:
        time.sleep(DURING_DELAY_S)
        if still_running() is None:
            hit(f"during-{program}")
