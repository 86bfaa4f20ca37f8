"""Checks a suite makes inside its VM before it touches a block device (the real-kernel and
the end-to-end suites' conftests): it is in the run's QEMU guest, and each device it will wipe
is one of the blank images the host made for this run, told apart by exact size."""

from __future__ import annotations

import json
import os

import pytest


def manifest(make_target: str) -> dict:
    """The run's manifest, which only the host suite's boot provides."""
    path = os.environ.get("AX_VM_MANIFEST")
    if not path:
        pytest.exit(f"refusing to run: not inside the suite's VM (run `make {make_target}`, which boots it)", returncode=3)
    with open(path) as handle:
        return json.load(handle)


def check_devices(run_manifest: dict, devices) -> None:
    try:
        with open("/sys/class/dmi/id/sys_vendor") as handle:
            vendor = handle.read().strip()
    except OSError:
        vendor = ""
    if vendor != "QEMU":
        pytest.exit(f"refusing to run: this is not a QEMU guest (sys_vendor {vendor!r})", returncode=3)
    for device in devices:
        expected = run_manifest["disks"].get(device, {}).get("bytes")
        with open(f"/sys/block/{os.path.basename(device)}/size") as handle:
            actual = int(handle.read()) * 512
        if actual != expected:
            pytest.exit(f"refusing to run: {device} is {actual} bytes, not the {expected}-byte image made for this run",
                        returncode=3)
