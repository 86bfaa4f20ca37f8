"""system/lock.py: the node lock, held against another process."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from flexdriver.errors import Busy
from flexdriver.system.lock import node_lock

HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
release_after = float(sys.argv[2])
if release_after:
    time.sleep(release_after)
else:
    sys.stdin.read()  # until the test closes our stdin
"""


def start_holder(run_dir, release_after: float = 0.0) -> subprocess.Popen:
    os.makedirs(run_dir, exist_ok=True)
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, os.path.join(run_dir, "lock"), str(release_after)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline() == "held\n"
    return child


def test_lock_creates_a_private_run_dir(tmp_path):
    run_dir = tmp_path / "run" / "ax"
    with node_lock(str(run_dir), 1.0):
        assert (run_dir / "lock").exists()
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(run_dir / "lock").st_mode) == 0o600


def test_lock_held_by_another_process_is_busy_after_the_timeout(tmp_path):
    run_dir = str(tmp_path / "run")
    holder = start_holder(run_dir)
    try:
        started = time.monotonic()
        with pytest.raises(Busy, match="held by another call"):
            with node_lock(run_dir, 0.2):
                pytest.fail("entered a lock that another process holds")
        assert 0.15 < time.monotonic() - started < 2
    finally:
        holder.stdin.close()
        holder.wait(timeout=5)
    with node_lock(run_dir, 0.5):  # the kernel released it with the holder
        pass


def test_waiter_gets_the_lock_as_soon_as_the_holder_lets_go(tmp_path):
    run_dir = str(tmp_path / "run")
    holder = start_holder(run_dir, release_after=0.2)
    try:
        started = time.monotonic()
        with node_lock(run_dir, 5.0):
            waited = time.monotonic() - started
        assert 0.05 < waited < 2
    finally:
        holder.wait(timeout=5)


def test_lock_is_exclusive_within_one_process_and_released_on_exit(tmp_path):
    run_dir = str(tmp_path / "run")
    with node_lock(run_dir, 1.0):
        with pytest.raises(Busy):
            with node_lock(run_dir, 0.1):
                pass
    with node_lock(run_dir, 0.1):
        pass


def test_waiting_restores_the_alarm_handler_and_timer(tmp_path):
    run_dir = str(tmp_path / "run")

    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGALRM, mine)
    try:
        with node_lock(run_dir, 1.0):
            with pytest.raises(Busy):
                with node_lock(run_dir, 0.1):
                    pass
        assert signal.getsignal(signal.SIGALRM) is mine
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_a_worker_thread_waits_and_times_out_without_signals(tmp_path):
    """The CSI plugin's calls run in worker threads, where SIGALRM cannot be used."""
    import threading

    run_dir = str(tmp_path / "run")
    holder = start_holder(run_dir, release_after=0.3)
    outcome = []

    def waiter(timeout_s):
        try:
            with node_lock(run_dir, timeout_s):
                outcome.append("locked")
        except Busy as err:
            outcome.append(str(err))

    try:
        short = threading.Thread(target=waiter, args=(0.05,))
        short.start()
        short.join(5)
        assert "held by another call for more than 0.05 s" in outcome[0]
        patient = threading.Thread(target=waiter, args=(5.0,))
        patient.start()
        patient.join(5)
        assert outcome[1] == "locked"  # as soon as the holder let go
    finally:
        holder.wait(timeout=5)
