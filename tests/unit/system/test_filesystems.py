"""system/filesystems.py: mkfs command lines and the usage measurement."""

from __future__ import annotations

import os

import pytest

from flexdriver.errors import DriverError
from flexdriver.pool import usage_fraction
from flexdriver.system import filesystems

from ..fakes import FakeRunner

DEVICE = "/dev/mapper/vg--ax-slab--1"


def test_mkfs_ext4_command_line():
    assert filesystems.mkfs_argv("ext4", DEVICE) == [
        "mkfs.ext4", "-F", "-q", "-m", "0", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", DEVICE,
    ]


def test_mkfs_xfs_command_line():
    assert filesystems.mkfs_argv("xfs", DEVICE) == ["mkfs.xfs", "-f", "-q", "-K", "-n", "ftype=1", DEVICE]


@pytest.mark.parametrize("fs_type", ["btrfs", "", "EXT4"])
def test_other_filesystems_are_refused(fs_type):
    with pytest.raises(ValueError, match="unsupported filesystem"):
        filesystems.mkfs_argv(fs_type, DEVICE)


def test_make_runs_mkfs_with_a_long_timeout():
    runner = FakeRunner()
    runner.reply(["mkfs.xfs"])
    filesystems.make(runner, "xfs", DEVICE)
    assert runner.calls == [filesystems.mkfs_argv("xfs", DEVICE)]
    assert runner.timeouts == [1800.0]


def own_device(path) -> tuple:
    st_dev = os.stat(path).st_dev
    return (os.major(st_dev), os.minor(st_dev))


def test_measure_refuses_a_dir_that_is_not_the_slab(tmp_path):
    major, minor = own_device(tmp_path)
    wrong = (major + 1, minor)
    with pytest.raises(DriverError, match=f"is not the root of slab device {major + 1}:{minor}; refusing to measure"):
        filesystems.measure(str(tmp_path), wrong)


def test_measure_returns_the_df_usage_of_the_matching_device(tmp_path):
    usage = filesystems.measure(str(tmp_path), own_device(tmp_path))
    vfs = os.statvfs(tmp_path)
    assert 0.0 <= usage <= 1.0
    expected = usage_fraction(vfs.f_blocks, vfs.f_bfree, vfs.f_bavail, vfs.f_files, vfs.f_ffree, vfs.f_favail)
    assert usage == pytest.approx(expected, abs=0.01)


def test_measure_of_a_missing_dir_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        filesystems.measure(str(tmp_path / "gone"), (0, 0))


def ext4_image(path, state: int = 1, magic: int = 0xEF53):
    image = bytearray(8192)
    image[1024 + 0x38:1024 + 0x3C] = magic.to_bytes(2, "little") + state.to_bytes(2, "little")
    path.write_bytes(bytes(image))
    return str(path)


def test_a_clean_ext4_superblock_has_no_problem(tmp_path):
    assert filesystems.superblock_problem(ext4_image(tmp_path / "slab"), "ext4") is None


def test_an_ext4_marked_with_errors_is_a_problem(tmp_path):
    problem = filesystems.superblock_problem(ext4_image(tmp_path / "slab", state=1 | 2), "ext4")
    assert problem is not None and "errors" in problem


def test_a_missing_ext4_superblock_is_a_problem(tmp_path):
    problem = filesystems.superblock_problem(ext4_image(tmp_path / "slab", magic=0), "ext4")
    assert problem is not None and "no ext4 superblock" in problem


def test_xfs_is_checked_by_its_magic(tmp_path):
    good = tmp_path / "good"
    good.write_bytes(b"XFSB" + bytes(4092))
    bad = tmp_path / "bad"
    bad.write_bytes(bytes(4096))
    assert filesystems.superblock_problem(str(good), "xfs") is None
    assert "no xfs superblock" in filesystems.superblock_problem(str(bad), "xfs")


def test_an_unreadable_device_is_a_problem(tmp_path):
    assert "cannot read" in filesystems.superblock_problem(str(tmp_path / "missing"), "ext4")
