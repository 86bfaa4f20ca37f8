"""One `lvm` process for all of a call's LVM reads and tag changes.

Starting an LVM command costs far more than running it (loading its config and libraries is
most of an `lvs`), so a call that needs an `lvs` and then an `lvchange` runs both through LVM's
own shell: `lvm` reading commands on stdin, the way lvmdbusd drives it. Nothing else changes:

- each command is still its own LVM command, taking and releasing LVM's locks and committing its
  metadata as it would on its own; the shell holds nothing between commands;
- the shell is spoken to only by the call that holds the node lock or owns the slab, exactly where
  the single commands ran (it is started before the lock is taken: idle, it touches nothing);
- it dies with the driver (PR_SET_PDEATHSIG), and exits on its own when its stdin closes.

The shell gives no exit status per command, so after each command a made-up one is sent whose
"No such command" error on stderr marks the end of the command before it: everything that command
wrote is in the pipes by then. Reports go to their own pipe (LVM_REPORT_FD). Callers decide
success from what the command reported (rows, or the tags read back afterwards); anything they
cannot decide from it is run again as a single command, whose exit status is authoritative.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Sequence

from .. import failpoints
from ..errors import CommandFailed, CommandTimedOut
from ..record import record
from .runner import CHILD_ENV, Runner, _die_with_parent

# What the shell's own line splitter passes through unchanged: no quotes, spaces, comments.
_PLAIN_ARG = re.compile(r"[A-Za-z0-9_+.,:=/@|%-]+")


@record
class ShellResult:
    argv: list[str]
    stdout: str
    report: str
    stderr: str
    seconds: float


class ShellUnavailable(Exception):
    """The shell could not be used for this command; run it on its own instead."""


class LVMShell:
    def __init__(self, runner: Runner, timeout_s: float) -> None:
        self.runner = runner
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen | None = None
        self._report_fd = -1
        self._sequence = 0
        self._broken = False

    @staticmethod
    def accepts(argv: Sequence[str]) -> bool:
        return all(_PLAIN_ARG.fullmatch(arg) for arg in argv)

    def run(self, argv: Sequence[str]) -> ShellResult:
        """Run one LVM command in the shell. Raises ShellUnavailable when the shell cannot
        (then nothing was run, or the shell died and the caller must re-check by itself),
        and CommandTimedOut when the command hangs."""
        argv = list(argv)
        if self._broken or not self.accepts(argv):
            raise ShellUnavailable(" ".join(argv))
        proc = self._started()
        self._sequence += 1
        marker = f"ax-end-{os.getpid()}-{self._sequence}"
        started = time.monotonic()
        try:
            proc.stdin.write(f"{' '.join(argv)}\n{marker}\n".encode())
            proc.stdin.flush()
        except OSError:
            self._give_up()
            raise ShellUnavailable("lvm shell went away") from None
        # during-<command>: die while LVM works on it (0.15 s after it was sent, done or not).
        failpoints.during(argv[0], lambda: None)
        streams = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray(), self._report_fd: bytearray()}
        err = streams[proc.stderr.fileno()]
        needle = f"'{marker}'".encode()
        deadline = started + self.timeout_s
        while needle not in err:
            left = deadline - time.monotonic()
            if left <= 0:
                self._give_up()
                raise CommandTimedOut(argv, -9, err.decode(errors="replace"), f"no answer after {self.timeout_s:g} s")
            ready, _, _ = select.select(list(streams), [], [], left)
            for fd in ready:
                if not self._read(fd, streams[fd]):
                    self._give_up()
                    raise ShellUnavailable("lvm shell exited")
        # The marker was written after everything the command wrote: collect what is left.
        while True:
            ready, _, _ = select.select([proc.stdout.fileno(), self._report_fd], [], [], 0)
            if not ready or not all(self._read(fd, streams[fd]) for fd in ready):
                break
        stderr = err.decode(errors="replace")
        stderr = "\n".join(line for line in stderr.splitlines() if marker not in line)
        return ShellResult(
            argv,
            streams[proc.stdout.fileno()].decode(errors="replace"),
            streams[self._report_fd].decode(errors="replace"),
            stderr.strip(),
            time.monotonic() - started,
        )

    def start(self) -> None:
        """Start the shell now, before it is needed: LVM's start-up (its libraries and config,
        most of what an LVM command costs) then overlaps the wait for the node lock instead of
        adding to the time the lock is held. The shell does nothing until spoken to."""
        if not self._broken and self._proc is None:
            try:
                self._started()
            except ShellUnavailable:
                pass

    def close(self) -> None:
        if self._proc is not None:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=self.timeout_s)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
            self._close_report()
            self._proc = None

    # ---- internals -------------------------------------------------------------------------

    def _started(self) -> subprocess.Popen:
        if self._proc is not None:
            return self._proc
        read_end, write_end = os.pipe()
        env = dict(CHILD_ENV, LVM_REPORT_FD=str(write_end), HOME="/nonexistent")  # HOME: no history file
        try:
            self._proc = subprocess.Popen(
                [self.runner.resolve("lvm")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd="/",
                pass_fds=(write_end,),
                preexec_fn=_die_with_parent,
                start_new_session=True,  # its own process group: a hung shell dies with all it started
            )
        except (OSError, CommandFailed):
            os.close(read_end)
            self._broken = True
            raise ShellUnavailable("cannot start the lvm shell") from None
        finally:
            os.close(write_end)
        self._report_fd = read_end
        return self._proc

    @staticmethod
    def _read(fd: int, into: bytearray) -> bool:
        data = os.read(fd, 1 << 16)
        into += data
        return bool(data)

    def _give_up(self) -> None:
        """A shell that hung or died is not used again by this call."""
        self._broken = True
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except OSError:
                self._proc.kill()
            self._proc.wait()
            self._proc = None
        self._close_report()

    def _close_report(self) -> None:
        if self._report_fd >= 0:
            os.close(self._report_fd)
            self._report_fd = -1
