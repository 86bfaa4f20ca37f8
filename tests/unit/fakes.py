"""Test doubles shared by the unit tests."""

from __future__ import annotations

from typing import List, Mapping, Sequence, Tuple, Union

from flexdriver.errors import CommandFailed
from flexdriver.system.runner import Completed

Answer = Union[Completed, BaseException]


class Unprepared(AssertionError):
    """A command reached a fake that no test told what to answer."""


class FakeRunner:
    """Stands in for system.runner.Runner: records every argv, runs nothing.

    Answers come from canned replies matched by argv prefix (the most recent match wins).
    An argv no test prepared fails the test (Unprepared): a lenient fake that answered it with
    success and no output would let a test pass on a command it never meant the code to run.

    It has no `lvm` shell: starting one fails as on a node where `lvm` is not found, so LVM
    runs every command on its own here (the attempt is in `conversations`). The shell's path is
    tested with the driver tests' simulated node, and the shell itself in test_lvm_shell.py.
    """

    def __init__(self) -> None:
        self.calls: List[List[str]] = []
        self.timeouts: List[float] = []
        self.conversations: List[str] = []
        self._replies: List[Tuple[List[str], Answer]] = []

    def reply(self, prefix: Sequence[str], stdout: str = "", returncode: int = 0, stderr: str = "") -> None:
        self._replies.append((list(prefix), Completed(list(prefix), returncode, stdout, stderr, 0.0)))

    def fail(self, prefix: Sequence[str], returncode: int = 5, stderr: str = "something went wrong") -> None:
        self._replies.append((list(prefix), CommandFailed(list(prefix), returncode, stderr)))

    def run(self, argv: Sequence[str], *, timeout: float = 120.0, ok_codes: Sequence[int] = (0,)) -> Completed:
        argv = list(argv)
        self.calls.append(argv)
        self.timeouts.append(timeout)
        for prefix, answer in reversed(self._replies):
            if argv[: len(prefix)] != prefix:
                continue
            if isinstance(answer, BaseException):
                raise answer
            if answer.returncode not in ok_codes:
                raise CommandFailed(argv, answer.returncode, answer.stderr)
            return Completed(argv, answer.returncode, answer.stdout, answer.stderr, 0.0)
        raise Unprepared(f"FakeRunner: no reply prepared for {argv}")

    def converse(self, program: str, env: Mapping[str, str], report_env: str):
        self.conversations.append(program)
        raise CommandFailed([program], 127, "", f"{program} not found (FakeRunner runs no shell)")

    def programs(self) -> List[str]:
        return [argv[0] for argv in self.calls]
