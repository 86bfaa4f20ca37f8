"""Making and measuring a slab's filesystem."""

from __future__ import annotations

import os
import struct

from ..errors import DriverError
from ..pool import usage_fraction
from .runner import Runner

MKFS_TIMEOUT_S = 1800.0


def mkfs_argv(fs_type: str, device: str, thin: bool = False) -> list[str]:
    if fs_type == "ext4":
        # No discard pass over the whole LV, inode tables zeroed lazily after mount, and no
        # blocks reserved for root (dockerd is root anyway, and reserved blocks would skew the
        # usage that decides whether a slab is kept). In thin mode, metadata_csum_seed: the
        # checksums are seeded from a field of their own rather than the UUID, so a snapshot
        # gets a new UUID by rewriting the superblock alone (new_uuid), not every checksum.
        return [
            "mkfs.ext4", "-F", "-q", "-m", "0", *(["-O", "metadata_csum_seed"] if thin else []),
            "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1",
            device,
        ]
    if fs_type == "xfs":
        # -K: no discard; ftype=1: overlay2 refuses xfs without d_type.
        return ["mkfs.xfs", "-f", "-q", "-K", "-n", "ftype=1", device]
    raise ValueError(f"unsupported filesystem {fs_type}")


def make(runner: Runner, fs_type: str, device: str, timeout_s: float = MKFS_TIMEOUT_S, thin: bool = False) -> None:
    runner.run(mkfs_argv(fs_type, device, thin), timeout=timeout_s)


def new_uuid_argv(fs_type: str, device: str) -> list[str]:
    """A new random UUID for an unmounted filesystem: a snapshot starts with its origin's, and
    two mounted filesystems with one UUID confuse udev's by-uuid links, blkid and (xfs) the
    kernel itself, which refuses to mount the second. xfs: xfs_admin rewrites each allocation
    group's superblock (a few writes, not `mount -o nouuid`, which would leave two equal UUIDs)."""
    if fs_type == "ext4":
        return ["tune2fs", "-U", "random", device]
    if fs_type == "xfs":
        return ["xfs_admin", "-U", "generate", device]
    raise ValueError(f"unsupported filesystem {fs_type}")


def new_uuid(runner: Runner, fs_type: str, device: str, timeout_s: float) -> None:
    runner.run(new_uuid_argv(fs_type, device), timeout=timeout_s)


def trim(runner: Runner, mount_point: str, timeout_s: float) -> None:
    """Give the blocks the filesystem no longer uses (deleted images, pruned build cache) back to
    the thin pool: without it they stay mapped, and the pool fills with what pods deleted.
    The filesystem is synced first: ext4 hands blocks freed by a delete back to its allocator
    only when the journal commits them (every 5 s), and fstrim trims only what the allocator
    holds free, so a pod's last `docker rmi` would otherwise stay mapped in the pool."""
    runner.run(["sync", "--file-system", mount_point], timeout=timeout_s)
    runner.run(["fstrim", mount_point], timeout=timeout_s)


def measure(mount_point: str, device: tuple[int, int] | str) -> float:
    """Usage of the filesystem mounted at `mount_point`, which must be `device` itself (its
    major:minor, or its device node).

    statvfs on a dir that is not (or no longer) the slab's mount point would measure the
    parent filesystem; the device check makes that impossible.
    """
    if isinstance(device, str):
        rdev = os.stat(device).st_rdev
        device = (os.major(rdev), os.minor(rdev))
    st = os.stat(mount_point)
    if (os.major(st.st_dev), os.minor(st.st_dev)) != device:
        raise DriverError(
            f"{mount_point} is not the root of slab device {device[0]}:{device[1]}; refusing to measure"
        )
    vfs = os.statvfs(mount_point)
    return usage_fraction(vfs.f_blocks, vfs.f_bfree, vfs.f_bavail, vfs.f_files, vfs.f_ffree, vfs.f_favail)


# ext4's superblock: 1024 bytes in; s_magic at 0x38, s_state at 0x3A (bit 0x0002: errors found).
EXT4_SUPERBLOCK_OFFSET = 1024
EXT4_MAGIC = 0xEF53
EXT4_ERROR_FS = 0x0002
XFS_MAGIC = b"XFSB"


def superblock_problem(device: str, fs_type: str) -> str | None:
    """What is wrong with the filesystem's superblock, read straight from the device, or None.

    A cheap check before a warm slab is handed on: a slab whose superblock is gone, or whose
    filesystem the kernel has marked as having errors, would mount badly or not at all, and it
    holds nothing but cache. Reads two blocks; a full fsck would take minutes on a big slab.
    """
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
        try:
            head = os.pread(fd, 4096, 0)
        finally:
            os.close(fd)
    except OSError as err:
        return f"cannot read {device}: {err.strerror}"
    if fs_type == "ext4":
        block = head[EXT4_SUPERBLOCK_OFFSET:EXT4_SUPERBLOCK_OFFSET + 1024]
        if len(block) < 0x3C:
            return f"{device} is too short to hold an ext4 superblock"
        magic, state = struct.unpack_from("<HH", block, 0x38)
        if magic != EXT4_MAGIC:
            return f"{device} has no ext4 superblock"
        if state & EXT4_ERROR_FS:
            return f"the ext4 filesystem on {device} is marked as having errors"
        return None
    if fs_type == "xfs":
        return None if head[:4] == XFS_MAGIC else f"{device} has no xfs superblock"
    return f"unsupported filesystem {fs_type}"
