"""Making and measuring a slab's filesystem."""

from __future__ import annotations

import os
from typing import List, Tuple

from ..errors import DriverError
from ..pool import usage_fraction
from .runner import Runner

MKFS_TIMEOUT_S = 1800.0


def mkfs_argv(fs_type: str, device: str) -> List[str]:
    if fs_type == "ext4":
        # No discard pass over the whole LV, inode tables zeroed lazily after mount, and no
        # blocks reserved for root (dockerd is root anyway, and reserved blocks would skew the
        # usage that decides whether a slab is kept).
        return [
            "mkfs.ext4", "-F", "-q", "-m", "0",
            "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1",
            device,
        ]
    if fs_type == "xfs":
        # -K: no discard; ftype=1: overlay2 refuses xfs without d_type.
        return ["mkfs.xfs", "-f", "-q", "-K", "-n", "ftype=1", device]
    raise ValueError(f"unsupported filesystem {fs_type}")


def make(runner: Runner, fs_type: str, device: str, timeout_s: float = MKFS_TIMEOUT_S) -> None:
    runner.run(mkfs_argv(fs_type, device), timeout=timeout_s)


def measure(mount_point: str, device: Tuple[int, int]) -> float:
    """Usage of the filesystem mounted at `mount_point`, which must be `device` itself.

    statvfs on a dir that is not (or no longer) the slab's mount point would measure the
    parent filesystem; the device check makes that impossible.
    """
    st = os.stat(mount_point)
    if (os.major(st.st_dev), os.minor(st.st_dev)) != device:
        raise DriverError(
            f"{mount_point} is not the root of slab device {device[0]}:{device[1]}; refusing to measure"
        )
    vfs = os.statvfs(mount_point)
    return usage_fraction(vfs.f_blocks, vfs.f_bfree, vfs.f_bavail)
