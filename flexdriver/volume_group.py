"""Making the volume group on the slab device, only if that device is blank.

Called by the driver at the first mount on a fresh node and by `ax-vol-plugin prepare`: both
refuse a device carrying any signature blkid's low-level probe recognises, naming what is there,
so that a mistyped device in the config never costs anyone their data.
"""

from __future__ import annotations

import os
import stat

from .errors import BadRequest, DeviceRefused
from .pool import MIB
from .system import host, udev
from .system.lvm import LVM
from .system.runner import Runner


def create_on_blank_device(runner: Runner, lvm: LVM, device: str, needed_mb: int | None = None) -> str:
    """vgcreate `lvm.vg` on `device` (a path, or a `udev:` match resolved here) after
    check_blank_device; returns the device node it was made on."""
    device = udev.resolve_device(device)
    check_blank_device(runner, lvm, device, needed_mb)
    lvm.create_volume_group(device)
    return device


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
