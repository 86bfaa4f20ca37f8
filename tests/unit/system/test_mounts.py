"""system/mounts.py: the kernel's mount table and mount/umount command lines."""

from __future__ import annotations

import os

from flexdriver.system.mounts import MountEntry, Mounter, canonical, mount_at, parse_mountinfo, read_mounts

from ..fakes import FakeRunner

MOUNTINFO = "\n".join([
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro",
    "35 22 253:0 / /var/lib/kubelet/pods/u1/volumes/ax~vol_plugin/docker rw,noatime shared:20"
    " - ext4 /dev/mapper/vg--ax-slab--1 rw",
    r"36 22 0:45 / /mnt/with\040space rw,nosuid - tmpfs my\040tmp rw,size=1024k",
    "40 22 253:1 / /mnt/x rw master:1 shared:3 - xfs /dev/mapper/vg--ax-slab--2 rw,attr2,inode64",
    r"41 22 0:50 /sub /mnt/back\134slash\011tab rw - tmpfs tmpfs rw",
    "not a mountinfo line",
    "42 22 nomajor / /mnt/bad rw - tmpfs tmpfs rw",
    "",
])


def test_parse_mountinfo():
    assert parse_mountinfo(MOUNTINFO) == [
        MountEntry("/", (8, 1), "ext4", "/dev/sda1"),
        MountEntry("/var/lib/kubelet/pods/u1/volumes/ax~vol_plugin/docker", (253, 0), "ext4", "/dev/mapper/vg--ax-slab--1"),
        MountEntry("/mnt/with space", (0, 45), "tmpfs", "my tmp"),
        MountEntry("/mnt/x", (253, 1), "xfs", "/dev/mapper/vg--ax-slab--2"),
        MountEntry("/mnt/back\\slash\ttab", (0, 50), "tmpfs", "tmpfs"),
    ]


def test_mount_at_returns_the_topmost_mount():
    entries = parse_mountinfo(
        "30 22 0:40 / /mnt/a rw - tmpfs first rw\n"
        "31 22 253:3 / /mnt/b rw - ext4 other rw\n"
        "32 30 253:4 / /mnt/a rw - ext4 second rw\n"
    )
    assert mount_at(entries, "/mnt/a") == MountEntry("/mnt/a", (253, 4), "ext4", "second")
    assert mount_at(entries, "/mnt/c") is None
    assert mount_at(entries, "/mnt") is None


def test_read_mounts_from_a_file(tmp_path):
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    assert len(read_mounts(str(path))) == 5


def test_read_mounts_of_this_process_sees_the_root():
    assert mount_at(read_mounts(), "/") is not None


def test_canonical_resolves_symlinks(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert canonical(str(tmp_path / "link")) == os.path.realpath(real)


def test_mount_command_line():
    runner = FakeRunner()
    runner.reply(["mount"])
    Mounter(runner).mount("/dev/mapper/vg--ax-slab--1", "/mnt/x", "xfs", read_only=False)
    Mounter(runner).mount("/dev/mapper/vg--ax-slab--1", "/mnt/y", "ext4", read_only=True)
    assert runner.calls == [
        ["mount", "-t", "xfs", "-o", "rw,noatime", "/dev/mapper/vg--ax-slab--1", "/mnt/x"],
        ["mount", "-t", "ext4", "-o", "ro,noatime", "/dev/mapper/vg--ax-slab--1", "/mnt/y"],
    ]
    assert runner.timeouts == [300.0, 300.0]


def test_a_thin_ext4_mount_leaves_the_zero_inode_tables_alone():
    runner = FakeRunner()
    runner.reply(["mount"])
    Mounter(runner).mount("/dev/mapper/vg--ax-slab--1", "/mnt/x", "ext4", read_only=False, thin=True)
    Mounter(runner).mount("/dev/mapper/vg--ax-slab--1", "/mnt/y", "xfs", read_only=False, thin=True)
    assert runner.calls == [
        ["mount", "-t", "ext4", "-o", "rw,noatime,noinit_itable", "/dev/mapper/vg--ax-slab--1", "/mnt/x"],
        ["mount", "-t", "xfs", "-o", "rw,noatime", "/dev/mapper/vg--ax-slab--1", "/mnt/y"],
    ]


def test_unmount_is_never_lazy():
    runner = FakeRunner()
    runner.reply(["umount"])
    Mounter(runner).unmount("/mnt/x")
    assert runner.calls == [["umount", "/mnt/x"]]
