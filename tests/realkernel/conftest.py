"""Setup for the real-kernel suite, which runs inside a throw-away VM (see tests/vm/).

It wipes block devices, so before anything else it proves it is in that VM and that each
device it will touch is one of the blank images the host made for this run (by exact size).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.vm import guest

from . import node

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_PATH = "/etc/ax-vol-plugin/vol_plugin.conf"
SCRATCH = "/dev/vda"  # the slab disk (the driver's configured device)
NODE_DISK = "/dev/vdb"  # survives the reboot: holds /var/lib/kubelet
SPARE = "/dev/vdc"  # small disk for device-refusal tests
# The node's provisioning mode when a run sets one (tests/reliability --provisioning thin runs
# every scenario on a thin pool); the real-kernel suite's own tests configure thin themselves.
PROVISIONING = os.environ.get("AX_TEST_PROVISIONING", "thick")


def node_config(device: str = SCRATCH, **settings) -> str:
    """The node config as the admin writes it: the slab device, the run's provisioning mode (a
    thick node's config leaves the key out, as the README's does), and `settings`."""
    if PROVISIONING != "thick":
        settings = {"provisioning": PROVISIONING, **settings}  # a test's own mode wins
    lines = ["[vol_plugin]", f"device = {device}"] + [f"{key} = {value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return node.run(*argv, check=check)


@pytest.fixture(scope="session", autouse=True)
def vm_node():
    yield prepare_node()


def prepare_node() -> dict:
    """Prove this is the run's VM with the run's disks, then set the node up as an admin would.
    Also used by tests/reliability, outside pytest (pytest.exit then raises pytest.exit.Exception)."""
    manifest = guest.manifest("test")
    guest.check_devices(manifest, (SCRATCH, NODE_DISK, SPARE))
    # The node's own disk: kubelet's dir lives here, so pods' dirs survive the reboot.
    blank = _sh("blkid", "-p", NODE_DISK, check=False).returncode == 2
    if blank:
        _sh("mkfs.ext4", "-q", NODE_DISK)
    os.makedirs(node.KUBELET_ROOT, exist_ok=True)
    _sh("mount", NODE_DISK, node.KUBELET_ROOT)
    # The admin's steps: configure the device, install the driver the way the docs say.
    os.makedirs(os.path.dirname(CONFIG_PATH), exist_ok=True)
    with open(CONFIG_PATH, "w") as handle:
        handle.write(node_config())
    _sh(f"{REPO}/install/install.sh", "--plugin-dir", node.PLUGIN_DIR, "--driver", f"{REPO}/dist/vol_plugin")
    return manifest


def wipe_pool() -> None:
    """Back to a blank slab disk: what a fresh node has."""
    for point in node.slab_mounts():
        _sh("umount", point, check=False)
    # udev probes a device that was just written and closed; one still at it holds the device
    # open, and vgremove and wipefs would fail on a disk in use.
    _sh("udevadm", "settle", check=False)
    _sh("vgremove", "--force", "--force", "--yes", node.VOLUME_GROUP, check=False)
    for device in (SCRATCH, SPARE):  # a test may have grown the volume group onto SPARE
        _sh("pvremove", "--force", "--force", "--yes", device, check=False)
        _sh("wipefs", "--all", "--quiet", device)
    _sh("rm", "-rf", f"{node.KUBELET_ROOT}/pods", "/run/ax-vol-plugin", node.LOG_FILE)
    with open(CONFIG_PATH, "w") as handle:
        handle.write(node_config())


@pytest.fixture
def kubelet(request):
    if request.node.get_closest_marker("after_reboot") is None:
        wipe_pool()
    return node.Kubelet()


def pytest_collection_modifyitems(config, items):
    # The reboot's first half leaves pods running; it must be the last thing before power-off.
    items.sort(key=lambda item: item.get_closest_marker("reboot_before") is not None)


def pytest_configure(config):
    config.addinivalue_line("markers", "reboot_before: first half of a reboot scenario (runs last)")
    config.addinivalue_line("markers", "after_reboot: runs in the second boot, on the same disks")
