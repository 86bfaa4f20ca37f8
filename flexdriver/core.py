"""The one core API both front-ends call: acquire a slab for a mount dir, release a mount dir's slab.

The FlexVolume executable (kubelet.py) makes a Core for its one call and exits; the CSI plugin
(csi/) keeps one for its lifetime and calls it from several threads at once. Either way every call
is a Driver run under the same node lock, recorded in the same call log and metrics, so a node can
serve both kinds of pods from one pool.

What a resident process keeps between calls is what a call may leave behind and the next reuse:
idle `lvm` shells (IdleShells; each call still has one of its own, and LVM holds nothing between
commands). The pool itself is read afresh under the lock by every call, as the FlexVolume
executable's calls on the same node change it too.
"""

from __future__ import annotations

import contextlib
import os
import threading

from . import journal
from .config import Config
from .options import MountRequest
from .system.runner import Runner


class IdleShells:
    """`lvm` shells a resident process's calls have finished with. A call takes one (or starts
    one) and gives it back when done, so no shell is ever spoken to by two calls at once; one that
    hung or died is closed instead. A shell dies with the thread that started it (PDEATHSIG), which
    in a thread pool lives as long as the process; one that died anyway is found dead and the
    call runs its LVM commands on their own, as any call does whose shell goes away."""

    def __init__(self, runner: Runner, timeout_s: float) -> None:
        self.runner, self.timeout_s = runner, timeout_s
        self._idle: list = []
        self._lock = threading.Lock()

    def take(self):
        with self._lock:
            if self._idle:
                return self._idle.pop()
        from .system.lvm_shell import LVMShell

        return LVMShell(self.runner, self.timeout_s)

    def give_back(self, shell) -> None:
        if shell.reusable:
            with self._lock:
                self._idle.append(shell)
        else:
            shell.close()

    def close(self) -> None:
        with self._lock:
            shells, self._idle = self._idle, []
        for shell in shells:
            shell.close()


class Core:
    def __init__(self, config: Config, runner: Runner | None = None, shells: IdleShells | None = None) -> None:
        self.config = config
        self.runner = runner or Runner()
        self.shells = shells  # None: each call's Driver starts a shell that dies with the process

    def acquire(self, request: MountRequest, record: journal.CallRecord) -> str:
        """Mount a slab on request.mount_dir (an existing dir); a message for the caller's log."""
        with self._driver(record) as driver:
            return driver.mount(request)

    def release(self, mount_dir: str, record: journal.CallRecord) -> str:
        """Unmount mount_dir's slab and keep or delete it by the usage rule; done already is done."""
        with self._driver(record) as driver:
            return driver.unmount(mount_dir)

    def finish(self, record: journal.CallRecord, outcome: str, message: str, count: bool = True) -> None:
        """The call's metrics (when `count`) and its line in the call log. Never raises: the call is
        over, and a log that cannot be written must not hide its answer."""
        try:
            if count:
                _count(self.config, record, outcome)
            rotation = journal.Rotation(
                self.config.log_max_bytes, self.config.log_keep, os.path.join(self.config.run_dir, "log.lock")
            )
            journal.append(self.config.log_file, record.line(outcome, message), rotation)
        except Exception:  # noqa: BLE001 - see the docstring
            pass

    def owned_dirs(self) -> list[str]:
        """The mount dirs slabs are held for (creating, claimed, used or doomed), from one `lvs`.
        A read without the lock: whoever acts on it decides again under the lock (release does)."""
        from . import inventory
        from .system.lvm import LVM

        snapshot = inventory.read_pool(LVM(self.runner, self.config.volume_group, self.config.command_timeout_s))
        if snapshot.pool is None:
            return []
        return sorted({slab.mount_dir for slab in snapshot.pool.slabs if slab.mount_dir})

    # ---- internals -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _driver(self, record: journal.CallRecord):
        from .driver import Driver

        shell = self.shells.take() if self.shells else None
        try:
            yield Driver(self.config, record, self.runner, shell=shell)
        finally:
            if shell is not None:
                self.shells.give_back(shell)


def _count(config: Config, record: journal.CallRecord, outcome: str) -> None:
    """Metrics never fail a call: a problem writing them is noted in the call's log line."""
    try:
        from . import metrics

        metrics.record_call(config, record.fields, outcome, record.duration_s(), record.pool, record.snapshot_at)
    except Exception as err:  # noqa: BLE001 - the call itself has already succeeded or failed
        record.note(metrics_error=f"{type(err).__name__}: {err}")
