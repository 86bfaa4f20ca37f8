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
success from what the command reported (rows; LVM's line saying a change is done, with an empty
stderr; or the tags read back afterwards); anything they cannot decide from it is run again as a
single command, whose exit status is authoritative.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence

from .. import failpoints
from ..errors import CommandFailed, CommandTimedOut
from ..record import record
from .runner import CHILD_ENV, Conversation, Runner

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
        self._shell: Conversation | None = None
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
        shell = self._started()
        self._sequence += 1
        marker = f"ax-end-{os.getpid()}-{self._sequence}"
        started = time.monotonic()
        try:
            shell.send(f"{' '.join(argv)}\n{marker}\n")
        except OSError:
            self._give_up()
            raise ShellUnavailable("lvm shell went away") from None
        # during-<command>: die while LVM works on it (0.15 s after it was sent, done or not).
        failpoints.during(argv[0], lambda: None)
        output = {channel: bytearray() for channel in Conversation.CHANNELS}
        err = output["stderr"]
        needle = f"'{marker}'".encode()
        deadline = started + self.timeout_s
        while needle not in err:
            left = deadline - time.monotonic()
            if left <= 0:
                self._give_up()
                raise CommandTimedOut(argv, -9, err.decode(errors="replace"), f"no answer after {self.timeout_s:g} s")
            for channel, data in shell.receive(left):
                if not data:
                    self._give_up()
                    raise ShellUnavailable("lvm shell exited")
                output[channel] += data
        # The marker was written after everything the command wrote: collect what is left.
        while True:
            received = shell.receive(0, ("stdout", "report"))
            for channel, data in received:
                output[channel] += data
            if not received or not all(data for _, data in received):
                break
        stderr = err.decode(errors="replace")
        stderr = "\n".join(line for line in stderr.splitlines() if marker not in line)
        return ShellResult(
            argv,
            output["stdout"].decode(errors="replace"),
            output["report"].decode(errors="replace"),
            stderr.strip(),
            time.monotonic() - started,
        )

    def start(self) -> None:
        """Start the shell now, before it is needed: LVM's start-up (its libraries and config,
        most of what an LVM command costs) then overlaps the wait for the node lock instead of
        adding to the time the lock is held. The shell does nothing until spoken to."""
        if not self._broken and self._shell is None:
            try:
                self._started()
            except ShellUnavailable:
                pass

    @property
    def reusable(self) -> bool:
        """Running and never given up on: a resident process may hand it to its next call."""
        return self._shell is not None and not self._broken

    def close(self) -> None:
        if self._shell is not None:
            self._shell.close(self.timeout_s)
            self._shell = None

    # ---- internals -------------------------------------------------------------------------

    def _started(self) -> Conversation:
        if self._shell is not None:
            return self._shell
        try:
            # The runner starts it (a test's runner answers its lines itself). HOME: no history file.
            self._shell = self.runner.converse("lvm", dict(CHILD_ENV, HOME="/nonexistent"), "LVM_REPORT_FD")
        except (OSError, CommandFailed):
            self._broken = True
            raise ShellUnavailable("cannot start the lvm shell") from None
        return self._shell

    def _give_up(self) -> None:
        """A shell that hung or died is not used again by this call."""
        self._broken = True
        if self._shell is not None:
            self._shell.kill()
            self._shell = None
