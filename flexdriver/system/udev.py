"""udev: the slab disk named by what it is, not by where the kernel put it, and device nodes
waited for the way udev announces them.

The same disk is /dev/xvdz on one instance type and /dev/nvme1n1 on the next, so the config
may name it by a /dev/disk/by-id link (a path like any other) or by udev properties:

    device = udev:ID_SERIAL_SHORT=vol0abc123
    device = udev:ID_MODEL=Amazon EC2 NVMe Instance Storage,ID_NSID=1

pyudev is imported only here and only when needed (a `udev:` device when the volume group is
made, or a device node that is not there yet), never on kubelet's everyday path. Devices are
turned into plain dicts at once, so the choosing is pure and testable without a udev.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence

from ..errors import DeviceRefused, DriverError

PREFIX = "udev:"
_KEY = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


def is_match_spec(device: str) -> bool:
    return device.startswith(PREFIX)


def parse_match(spec: str) -> dict[str, str]:
    """`udev:KEY=VALUE[,KEY=VALUE...]` -> {KEY: VALUE}; ValueError naming what is wrong."""
    if not is_match_spec(spec):
        raise ValueError(f"a udev device match starts with {PREFIX!r}")
    match: dict[str, str] = {}
    for item in spec[len(PREFIX):].split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not _KEY.fullmatch(key) or not value.strip():
            raise ValueError(f"{item.strip()!r} is not KEY=VALUE with an upper-case udev property name")
        if key in match:
            raise ValueError(f"property {key} is given twice")
        match[key] = value.strip()
    return match


def pick(devices: Sequence[Mapping[str, str]], match: Mapping[str, str], spec: str) -> str:
    """The one device node whose properties hold every KEY=VALUE of `match`."""
    found = [d for d in devices if all(d.get(key) == value for key, value in match.items()) and d.get("DEVNAME")]
    if len(found) == 1:
        return found[0]["DEVNAME"]
    if not found:
        raise DeviceRefused(f"no block device has the udev properties of device = {spec}")
    names = ", ".join(sorted(d["DEVNAME"] for d in found))
    raise DeviceRefused(
        f"device = {spec} matches {len(found)} block devices ({names}); add a property that tells them apart"
    )


def block_devices() -> list[dict[str, str]]:
    """Every block device udev knows, as its properties (DEVNAME included)."""
    import pyudev

    context = pyudev.Context()
    return [
        {str(key): str(value) for key, value in device.properties.items()}
        for device in context.list_devices(subsystem="block")
    ]


def resolve_device(device: str) -> str:
    """The device node the config's `device` names: a path as it is, a udev match resolved."""
    if not is_match_spec(device):
        return device
    try:
        match = parse_match(device)
    except ValueError as err:
        raise DeviceRefused(f"device = {device}: {err}") from None
    try:
        devices = block_devices()
    except ImportError as err:
        raise DeviceRefused(f"device = {device} needs libudev, which cannot be loaded here: {err}") from None
    return pick(devices, match, device)


def wait_for_node(path: str, timeout_s: float) -> None:
    """Return once `path` exists, woken by udev's events rather than polling on a timer.

    LVM normally waits for udev itself, so the node is almost always there already and this
    costs one stat. When it is not (a udev queue backed up, or a node removed by hand), every
    block event is a reason to look again; the monitor is started before the second look, so an
    event that lands in between is not missed.
    """
    if os.path.exists(path):
        return
    try:
        import pyudev
    except ImportError:  # no way to listen: say so instead of waiting blind
        raise DriverError(f"device node {path} does not exist and udev cannot be watched here") from None
    context = pyudev.Context()
    monitor = pyudev.Monitor.from_netlink(context)
    monitor.filter_by("block")
    monitor.start()
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DriverError(
                f"device node {path} did not appear within {timeout_s:g} s; is udev running "
                f"(udevadm trigger re-creates lost nodes)?"
            )
        monitor.poll(timeout=remaining)
