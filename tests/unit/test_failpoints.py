"""failpoints.py: when a during-<program> failpoint fires, with real child processes. The kill
itself (SIGKILL of this process) is replaced by a record of it."""

from __future__ import annotations

import subprocess
import time

import pytest

from flexdriver import failpoints


@pytest.fixture
def hits(monkeypatch):
    fired = []
    monkeypatch.setattr(failpoints, "_ARMED", frozenset({"during-sh"}))
    monkeypatch.setattr(failpoints, "hit", lambda name: fired.append((name, time.monotonic())))
    return fired


def started(script: str):
    return subprocess.Popen(["sh", "-c", script]), time.monotonic()


def test_a_child_that_writes_and_ends_within_the_delay_is_killed_once_it_has_written(hits, tmp_path):
    # Ends about 0.1 s after its write, before DURING_DELAY_S: a fixed wait saw it finished.
    child, at = started(f"dd if=/dev/zero of={tmp_path}/out bs=64k count=4 2>/dev/null; sleep 0.1")
    try:
        failpoints.during("sh", child.poll, child.pid)
    finally:
        child.wait()
    assert [name for name, _ in hits] == ["during-sh"]
    assert hits[0][1] - at < failpoints.DURING_DELAY_S


def test_a_child_that_writes_nothing_is_killed_at_the_delay_if_still_running(hits):
    child, at = started("sleep 1")
    try:
        failpoints.during("sh", child.poll, child.pid)
    finally:
        child.kill()
        child.wait()
    assert [name for name, _ in hits] == ["during-sh"]
    assert hits[0][1] - at >= failpoints.DURING_DELAY_S


def test_a_child_that_ended_is_not_killed_and_the_caller_sees_it_finish(hits):
    child, _ = started("exit 0")
    child.wait()
    failpoints.during("sh", child.poll, child.pid)
    assert hits == []


def test_an_unarmed_program_returns_at_once(hits):
    child, at = started("sleep 1")
    try:
        failpoints.during("mkfs.ext4", child.poll, child.pid)
        assert time.monotonic() - at < failpoints.DURING_DELAY_S
    finally:
        child.kill()
        child.wait()
    assert hits == []
