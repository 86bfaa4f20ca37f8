"""The core both front-ends call: a resident process's idle lvm shells."""

from __future__ import annotations

from flexdriver.core import IdleShells


class Shell:
    def __init__(self, reusable=True):
        self.reusable, self.closed = reusable, False

    def close(self):
        self.closed = True


def test_a_shell_given_back_goes_to_the_next_call_and_is_never_shared():
    shells = IdleShells(runner=None, timeout_s=1.0)
    first = Shell()
    shells.give_back(first)
    assert shells.take() is first
    second = shells.take()  # the first is taken: a call of its own gets a new one
    assert second is not first and not second.reusable  # a new shell starts on first use


def test_a_shell_that_hung_or_died_is_closed_not_kept():
    shells = IdleShells(runner=None, timeout_s=1.0)
    broken = Shell(reusable=False)
    shells.give_back(broken)
    assert broken.closed
    assert shells.take() is not broken


def test_closing_closes_every_idle_shell():
    shells = IdleShells(runner=None, timeout_s=1.0)
    idle = [Shell(), Shell()]
    for shell in idle:
        shells.give_back(shell)
    shells.close()
    assert all(shell.closed for shell in idle)
