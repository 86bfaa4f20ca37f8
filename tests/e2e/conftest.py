"""Setup for the end-to-end suite, which runs inside a throw-away VM (tests/vm/e2e_suite.py):
the node's disk, the driver installed as the docs say, containerd with the local images, kubelet.

Like the real-kernel suite it wipes block devices, so it first proves it is in that VM and that
each device is one of the blank images the host made for this run (by exact size).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.vm import guest

from . import cluster

CONFIG_PATH = "/etc/ax-vol-plugin/vol_plugin.conf"
SCRATCH = "/dev/vda"  # the slab disk
NODE_DISK = "/dev/vdb"  # kubelet's dir, containerd's images, the manifests: survives the reboot
VERSIONS = "versions.json"  # in the results dir
# Kernel modules a CI node loads for pods: their veth and bridge, dockerd's bridge and overlay2.
MODULES = ("bridge", "veth", "overlay", "br_netfilter", "nf_conntrack")


def _sh(*argv: str) -> None:
    cluster.run(*argv)


def prepare_node(manifest: dict) -> cluster.Node:
    guest.check_devices(manifest, (SCRATCH, NODE_DISK))
    for module in MODULES:
        subprocess.run(["modprobe", module], capture_output=True)
    connected = os.environ.get("AX_E2E_CONTROL_PLANE") == "1"  # the CSI boot (tests/vm/e2e_suite.py)
    if connected:
        # What systemd makes of every real node's mounts, and the guest's init does not: shared
        # propagation, which the CSI plugin's Bidirectional mount of the kubelet dir needs of
        # its source (containerd refuses "not a shared mount" otherwise).
        _sh("mount", "--make-rshared", "/")
    first_boot = subprocess.run(["blkid", "-p", NODE_DISK], capture_output=True).returncode == 2
    if first_boot:
        _sh("mkfs.ext4", "-q", NODE_DISK)
    os.makedirs(cluster.NODE_ROOT, exist_ok=True)
    _sh("mount", NODE_DISK, cluster.NODE_ROOT)
    if connected:
        # Kubelet's dir is a bind of a dir on the node disk: a peer of the disk's mount, if that
        # were shared, and every pod's volume would be mounted twice, there too.
        _sh("mount", "--make-private", cluster.NODE_ROOT)
    for sub, point in (("kubelet", cluster.KUBELET_ROOT),):
        os.makedirs(os.path.join(cluster.NODE_ROOT, sub), exist_ok=True)
        os.makedirs(point, exist_ok=True)
        _sh("mount", "--bind", os.path.join(cluster.NODE_ROOT, sub), point)
        if connected:
            _sh("mount", "--make-shared", point)
    os.makedirs(os.path.dirname(CONFIG_PATH), exist_ok=True)
    with open(CONFIG_PATH, "w") as handle:
        handle.write(f"[vol_plugin]\ndevice = {SCRATCH}\n")
    _sh(f"{cluster.REPO}/install/install.sh", "--plugin-dir", cluster.PLUGIN_DIR, "--driver", f"{cluster.REPO}/dist/vol_plugin")
    control_plane = None
    if connected:
        _sh("ip", "link", "add", cluster.NODE_INTERFACE, "type", "dummy")
        _sh("ip", "addr", "add", f"{cluster.NODE_IP}/32", "dev", cluster.NODE_INTERFACE)
        _sh("ip", "link", "set", cluster.NODE_INTERFACE, "up")
        control_plane = cluster.ControlPlane(manifest["results"], os.environ["AX_E2E_ETCD"], os.environ["AX_E2E_APISERVER"])
        control_plane.start()
    node = cluster.Node(manifest["results"], os.environ["AX_E2E_KUBELET"], control_plane)
    node.start_containerd()
    node.import_images(json.loads(os.environ["AX_E2E_IMAGES"]))
    node.start_kubelet()
    # What ran, for the host suite's summary (pytest keeps a fixture's prints to itself).
    versions = {"kubelet": node.version(), "containerd": cluster.run("containerd", "--version").stdout.split()[2]}
    with open(os.path.join(manifest["results"], VERSIONS), "w") as handle:
        json.dump(versions, handle)
    return node


@pytest.fixture(scope="session")
def node():
    the_node = prepare_node(guest.manifest("e2e"))
    yield the_node
    if os.environ.get("AX_E2E_LEAVE_RUNNING") != "1":
        the_node.kubelet.stop()
        the_node.containerd.stop()
        if the_node.control_plane is not None:
            the_node.control_plane.stop()


def pytest_configure(config):
    config.addinivalue_line("markers", "reboot_before: first half of a reboot scenario (runs last)")
    config.addinivalue_line("markers", "after_reboot: runs in the second boot, on the same disks")
    config.addinivalue_line("markers", "csi: runs in the CSI boot, whose node has a control plane")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("reboot_before") is not None)
