"""The one place external commands run.

- argv lists only, never a shell; programs resolved to absolute paths in a fixed search path
  (kubelet's PATH is whatever the node's service manager gave it);
- LC_ALL=C so messages and numbers parse the same on every node;
- stdin closed and stdout/stderr captured, so no child can write into kubelet's JSON or hang
  kubelet by keeping its pipes open;
- each child is killed if the driver dies (PR_SET_PDEATHSIG), so a SIGKILLed call never leaves
  an mkfs running under the call that retries it;
- a timeout on everything; a command that times out is killed with its whole process group, so
  no grandchild it started (a helper, a wrapper's sleep) keeps our pipes open and hangs the call;
- one error type carrying argv, exit code and stderr;
- the same for a program kept running to read commands on stdin (`lvm` as its own shell): a
  Conversation, which is all its caller sees of the process, so a test's runner can answer the
  same lines without one.
"""

from __future__ import annotations

import collections
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence

from .. import failpoints
from ..errors import CommandFailed, CommandTimedOut
from ..record import record

SEARCH_PATH = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
CHILD_ENV = {
    "LC_ALL": "C",
    "PATH": ":".join(SEARCH_PATH),
    # LVM warns on stderr about every inherited fd; ours are all close-on-exec anyway.
    "LVM_SUPPRESS_FD_WARNINGS": "1",
}
DEFAULT_TIMEOUT_S = 120.0
KILL_GRACE_S = 5.0


@record
class Completed:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class Runner:
    """`threaded`: for a process with threads of its own (the CSI plugin, whose gRPC library has
    fork handlers). Python code run between fork and exec (preexec_fn) is unsafe there: children
    died of SIGSEGV and SIGABRT before exec. So its children get PR_SET_PDEATHSIG from util-linux's
    setpriv, which sets it and execs the command, and no Python runs in the child."""

    def __init__(self, search_path: Sequence[str] = SEARCH_PATH, threaded: bool = False) -> None:
        self._search_path = tuple(search_path)
        self.threaded = threaded
        self._resolved: dict[str, str] = {}
        # The last commands, kept for the call's log line when something fails.
        self.history: collections.deque[Completed] = collections.deque(maxlen=20)

    def resolve(self, program: str) -> str:
        if program.startswith("/"):
            return program
        if program not in self._resolved:
            for directory in self._search_path:
                candidate = os.path.join(directory, program)
                if os.access(candidate, os.X_OK):
                    self._resolved[program] = candidate
                    break
            else:
                raise CommandFailed([program], 127, "", f"{program} not found in {':'.join(self._search_path)}")
        return self._resolved[program]

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        ok_codes: Sequence[int] = (0,),
    ) -> Completed:
        full = [self.resolve(argv[0])] + list(argv[1:])
        started = time.monotonic()
        spawned, preexec = self._spawn(full)
        try:
            proc = subprocess.Popen(
                spawned,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=CHILD_ENV,
                cwd="/",
                close_fds=True,
                preexec_fn=preexec,
                # Its own process group (and session), so a timeout can kill whatever it started.
                start_new_session=True,
            )
        except OSError as err:
            raise CommandFailed(full, 127, "", f"cannot run: {err.strerror}") from err
        failpoints.during(os.path.basename(full[0]), proc.poll, proc.pid)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            out, err = _kill_group(proc)
            result = Completed(full, -9, _text(out), _text(err), time.monotonic() - started)
            self.history.append(result)
            raise CommandTimedOut(full, -9, result.stderr, f"no answer after {timeout:g} s") from None
        result = Completed(full, proc.returncode, _text(out), _text(err), time.monotonic() - started)
        self.history.append(result)
        if proc.returncode not in ok_codes:
            raise CommandFailed(full, proc.returncode, result.stderr)
        return result

    def _spawn(self, full: list[str]) -> tuple[list[str], Callable[[], None] | None]:
        """What Popen runs, and the preexec_fn that gives the child PR_SET_PDEATHSIG."""
        if not self.threaded:
            return full, _die_with_parent
        try:
            return [self.resolve("setpriv"), "--pdeathsig", "KILL", "--", *full], None
        except CommandFailed:
            return full, None  # no setpriv: children outlive a killed plugin, as without prctl

    def converse(self, program: str, env: Mapping[str, str], report_env: str) -> Conversation:
        """Start `program` reading commands on stdin, with one more output pipe besides stdout and
        stderr, whose fd it is told in the environment variable `report_env`. Raises CommandFailed
        when the program is not found and OSError when it cannot be started."""
        spawned, preexec = self._spawn([self.resolve(program)])
        read_end, write_end = os.pipe()
        try:
            proc = subprocess.Popen(
                spawned,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**env, report_env: str(write_end)},
                cwd="/",
                pass_fds=(write_end,),
                preexec_fn=preexec,
                start_new_session=True,  # its own process group: a hung one dies with all it started
            )
        except (OSError, CommandFailed):
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        return Conversation(proc, read_end)


class Conversation:
    """A running program's stdin and its three outputs, named "stdout", "stderr" and "report"."""

    CHANNELS = ("stdout", "stderr", "report")

    def __init__(self, proc: subprocess.Popen, report_fd: int) -> None:
        self._proc = proc
        self._fds = {"stdout": proc.stdout.fileno(), "stderr": proc.stderr.fileno(), "report": report_fd}

    def send(self, text: str) -> None:
        """Raises OSError when the program is gone."""
        self._proc.stdin.write(text.encode())
        self._proc.stdin.flush()

    def receive(self, timeout: float, channels: Sequence[str] = CHANNELS) -> list[tuple[str, bytes]]:
        """Waits up to `timeout` seconds for output on any of `channels`, then reads once from each
        that has some, in the order given: [(channel, data)], empty when nothing came in time. An
        empty `data` is a channel that has ended; nothing is read after it."""
        wanted = {self._fds[channel]: channel for channel in channels}
        ready, _, _ = select.select(list(wanted), [], [], timeout)
        received = []
        for fd in ready:
            data = os.read(fd, 1 << 16)
            received.append((wanted[fd], data))
            if not data:
                break
        return received

    def kill(self) -> None:
        """Kill the program with everything it started."""
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except OSError:
            self._proc.kill()
        self._proc.wait()
        self._close_report()

    def close(self, timeout: float) -> None:
        """End its input and wait for it to exit; kill it if it does not within `timeout`."""
        try:
            self._proc.stdin.close()
            self._proc.wait(timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait()
        self._close_report()

    def _close_report(self) -> None:
        if self._fds["report"] >= 0:
            os.close(self._fds["report"])
            self._fds["report"] = -1


def _kill_group(proc: subprocess.Popen):
    """Kill a timed-out child and everything in its process group; collect what it wrote.

    A grandchild that left the group could still hold the pipes: after a short wait the pipes
    are closed instead of waited on. And SIGKILL does not end a process stuck in the kernel
    (an umount writing back to a device that has stopped answering sleeps uninterruptibly): it
    is waited for a bounded time too, then left to init to reap, so the call ends either way."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    try:
        return proc.communicate(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        try:
            proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            # Not reaped: Popen would warn about it on stderr when collected, into kubelet's JSON.
            proc.returncode = -9
        return b"", b""


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


_prctl: Callable[..., int] | None = None


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. PR_SET_PDEATHSIG = 1.
    global _prctl
    if _prctl is not None:
        _prctl(1, signal.SIGKILL, 0, 0, 0)


def _load_prctl() -> None:
    global _prctl
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        _prctl = libc.prctl
    except (OSError, AttributeError):  # no libc symbol: children just outlive a killed parent
        _prctl = None


_load_prctl()
