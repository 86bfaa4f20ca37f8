"""Making the volume group on the slab device, only if that device is blank.

Called by the driver at the first mount on a fresh node and by `ax-vol-plugin prepare`: both
refuse a device carrying any signature blkid's low-level probe recognises, naming what is there,
so that a mistyped device in the config never costs anyone their data.
"""

from __future__ import annotations

import os
import stat

from .errors import BadRequest, DeviceRefused
from .pool import MIB, THIN_POOL_TAG, Provisioning
from .system import host, udev
from .system.lvm import LVM
from .system.runner import Runner


def create_on_blank_device(
    runner: Runner, lvm: LVM, device: str, needed_mb: int | None = None,
    provisioning: Provisioning = Provisioning.THICK,
) -> str:
    """vgcreate `lvm.vg` on `device` (a path, or a `udev:` match resolved here) after
    check_blank_device, and in thin mode the thin pool in it; returns the device node."""
    device = udev.resolve_device(device)
    check_blank_device(runner, lvm, device, needed_mb)
    lvm.create_volume_group(device)
    if provisioning is Provisioning.THIN:
        create_thin_pool(lvm, host.device_size(device))
    return device


# The thin pool's block size, which is also what copy-on-write copies: a snapshot's first write
# into a chunk it shares copies the whole chunk. dm-thin's smallest, 64 KiB, suits image caches
# (layers of many small files, written a few KiB at a time) best; bigger chunks cost less
# metadata but turn every small write into a bigger copy and more pool space per snapshot.
THIN_CHUNK_BYTES = 64 * 1024
THIN_POOL_NAME = "thinpool"
# dm-thin needs about 64 bytes of metadata per mapped chunk (LVM's own estimate); twice that
# leaves room for the btree nodes that snapshots stop sharing as they diverge, and for thousands
# of thin volumes. dm-thin's metadata device holds at most ~16 GiB.
THIN_METADATA_PER_CHUNK = 128
THIN_METADATA_MIN = 64 * MIB
THIN_METADATA_MAX = 15 * 1024 * MIB
# LVM keeps a spare of the same size beside the metadata (for lvconvert --repair): on a small
# device the two together take at most an eighth of it, never below LVM's own minimum (2 MiB).
THIN_METADATA_SHARE = 16
THIN_METADATA_LVM_MIN = 2 * MIB


def thin_metadata_bytes(device_bytes: int) -> int:
    wanted = device_bytes // THIN_CHUNK_BYTES * THIN_METADATA_PER_CHUNK
    wanted = min(max(wanted, THIN_METADATA_MIN), THIN_METADATA_MAX, device_bytes // THIN_METADATA_SHARE)
    return max(wanted // MIB * MIB, THIN_METADATA_LVM_MIN)


def create_thin_pool(lvm: LVM, device_bytes: int) -> None:
    lvm.create_thin_pool(THIN_POOL_NAME, thin_metadata_bytes(device_bytes), THIN_CHUNK_BYTES, [THIN_POOL_TAG])


def check_blank_device(runner: Runner, lvm: LVM, device: str, needed_mb: int | None = None) -> None:
    """Raise DeviceRefused unless `device` is a block device with no signature on it, and
    BadRequest when `needed_mb` is given and a slab that big would not fit on it."""
    try:
        mode = os.stat(device).st_mode
    except OSError as err:
        raise DeviceRefused(
            f"volume group {lvm.vg} does not exist and device {device} "
            f"cannot be used to create it: {err.strerror}"
        ) from err
    if not stat.S_ISBLK(mode):
        raise DeviceRefused(f"device {device} is not a block device")
    if needed_mb is not None:
        size = host.device_size(device)
        if needed_mb * MIB > size:
            raise BadRequest(f"size_mb {needed_mb} is larger than device {device} ({size // MIB} MiB)")
    found = host.signatures(runner, device)
    if "LVM2_member" in found:
        # A physical volume, but LVM shows no volume group of that name: another volume group's
        # PV, or ours while the device cannot be read (a disk dropping off), or hidden by a filter.
        raise DeviceRefused(
            f"volume group {lvm.vg} is not visible to LVM, and device {device} carries an LVM "
            f"physical volume ({found}): it belongs to another volume group, or LVM cannot read it "
            f"(a failing disk) or is filtering it out (lvm.conf); `vgs` and `pvs -a` show which. "
            f"Refusing to create {lvm.vg} there"
        )
    if found:
        raise DeviceRefused(
            f"volume group {lvm.vg} does not exist and device {device} is not blank "
            f"(it carries {found}); refusing to create it there. Wipe the device if it is meant "
            f"for slabs, or name another device or volume group in the config"
        )
