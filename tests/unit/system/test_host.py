"""system/host.py: process identities, device sizes and blkid signatures."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from flexdriver.errors import CommandFailed
from flexdriver.system import host

from ..fakes import FakeRunner


def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id") as handle:
        return handle.read().strip()


def start_ticks(identity: str) -> int:
    return int(identity.rsplit(":", 1)[1])


def test_own_identity_is_stable_and_alive():
    me = host.process_identity(os.getpid())
    assert me == host.process_identity(os.getpid())
    boot, pid, start = me.split(":")
    assert (boot, pid) == (boot_id(), str(os.getpid()))
    assert start.isdigit()
    assert host.is_alive(me)


def test_a_dead_child_is_not_alive():
    child = subprocess.Popen(["/bin/sleep", "5"])
    try:
        identity = host.process_identity(child.pid)
        assert host.is_alive(identity)
    finally:
        child.kill()
        child.wait()
    assert host.process_identity(child.pid) is None
    assert not host.is_alive(identity)


def test_a_reused_pid_is_not_the_same_process():
    me = host.process_identity(os.getpid())
    boot, pid, start = me.split(":")
    assert not host.is_alive(f"{boot}:{pid}:{int(start) + 1}")
    assert not host.is_alive(f"another-boot:{pid}:{start}")


def uptime_s() -> float:
    with open("/proc/uptime") as handle:
        return float(handle.read().split()[0])


def test_identity_of_a_process_with_spaces_and_parens_in_its_name(tmp_path):
    odd = tmp_path / "a) b (c"
    odd.symlink_to("/bin/sleep")
    spawned_at = uptime_s()
    child = subprocess.Popen([str(odd), "5"])
    try:
        time.sleep(0.05)  # let exec replace the name
        identity = host.process_identity(child.pid)
        with open(f"/proc/{child.pid}/stat") as handle:
            assert "(a) b (c)" in handle.read()
        # The start time field (clock ticks since boot), not a neighbouring stat field.
        assert abs(start_ticks(identity) / os.sysconf("SC_CLK_TCK") - spawned_at) < 2
        assert host.is_alive(identity)
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize(
    "identity",
    ["", "garbage", "a:b:c", "1:2", "a:1:2:3", "unknown:1:0", "::", "boot:-1:0", "boot:99999999999:0"],
)
def test_garbage_identities_are_not_alive(identity):
    assert host.is_alive(identity) is False


def test_process_identity_of_a_missing_pid_is_none():
    assert host.process_identity(2**22 + 1) is None  # above the kernel's pid_max limit


def test_device_size_of_a_file(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(b"\0" * 12345)
    assert host.device_size(str(path)) == 12345


BLKID = ["blkid", "-p", "-o", "export", "/dev/xvdz"]


@pytest.mark.parametrize(
    "returncode,stdout,expected",
    [
        (2, "", ""),
        (8, "", "several conflicting signatures"),
        (0, "DEVNAME=/dev/xvdz\nUUID=1234\nTYPE=ext4\nUSAGE=filesystem\n", "type ext4"),
        (0, "DEVNAME=/dev/xvdz\nPTUUID=abcd\nPTTYPE=gpt\n", "pttype gpt"),
        (0, "TYPE=LVM2_member\nPTTYPE=dos\n", "type LVM2_member, pttype dos"),
        (0, "DEVNAME=/dev/xvdz\n", "an unknown signature"),
    ],
)
def test_signatures(returncode, stdout, expected):
    runner = FakeRunner()
    runner.reply(["blkid"], stdout=stdout, returncode=returncode)
    assert host.signatures(runner, "/dev/xvdz") == expected
    assert runner.calls == [BLKID]


def test_blkid_error_is_a_command_failure():
    runner = FakeRunner()
    runner.reply(["blkid"], returncode=4, stderr="blkid: error: /dev/xvdz: Permission denied")
    with pytest.raises(CommandFailed, match="Permission denied"):
        host.signatures(runner, "/dev/xvdz")


def test_written_bytes_counts_what_a_process_wrote_and_is_zero_once_it_is_gone(tmp_path):
    child = subprocess.Popen(["sh", "-c", f"dd if=/dev/zero of={tmp_path}/out bs=64k count=4 2>/dev/null; sleep 5"])
    try:
        deadline = time.monotonic() + 5
        while host.written_bytes(child.pid) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert host.written_bytes(child.pid) >= 4 * 64 * 1024
    finally:
        child.kill()
        child.wait()
    assert host.written_bytes(child.pid) == 0
