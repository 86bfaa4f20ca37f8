"""Named points where a test can make the driver SIGKILL itself, to prove every step is crash-safe.

Armed only by the environment variable AX_VOL_PLUGIN_FAILPOINTS (comma-separated names), which
kubelet passes from its own environment: nothing in a pod spec can reach it. Off, a failpoint
costs one set lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "AX_VOL_PLUGIN_FAILPOINTS"
_ARMED = frozenset(name for name in os.environ.get(ENV, "").split(",") if name)


def hit(name: str) -> None:
    if name in _ARMED:
        # SIGKILL, like the OOM killer or a power cut: no cleanup, no finally blocks. Children
        # die with us through PR_SET_PDEATHSIG.
        os.kill(os.getpid(), signal.SIGKILL)
