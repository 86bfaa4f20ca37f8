"""install/install.sh and uninstall.sh on a real node: an upgrade while a pod uses its slab, an
uninstall that keeps the pool, --purge that removes it, prerequisites refused on the node itself,
and the DaemonSet's way in (--host-root, commands through nsenter)."""

from __future__ import annotations

import os
import subprocess

import pytest

from . import node
from .conftest import CONFIG_PATH, REPO, SCRATCH, SPARE
from .node import Pod, read_marker, slab_at, slabs, write_marker

INSTALL = f"{REPO}/install/install.sh"
UNINSTALL = f"{REPO}/install/uninstall.sh"
DIST = f"{REPO}/dist/vol_plugin"
ADMIN = "/usr/local/sbin/ax-vol-plugin"


def sh(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True)


@pytest.fixture
def reinstalled_after():
    """For tests that change the installed driver: it ends installed and configured the way
    conftest does it (--purge removes the config and its dir)."""
    yield
    os.makedirs(os.path.dirname(CONFIG_PATH), exist_ok=True)
    with open(CONFIG_PATH, "w") as handle:
        handle.write(f"[vol_plugin]\ndevice = {SCRATCH}\n")
    subprocess.run(
        [INSTALL, "--plugin-dir", node.PLUGIN_DIR, "--driver", DIST, "--skip-prerequisites"], check=True, capture_output=True
    )


@pytest.fixture
def new_build(tmp_path):
    """Another build of the driver: the same archive under a longer interpreter line, so that every
    offset in the file moves (a driver call reading its archive across the upgrade would notice)."""
    out = tmp_path / "vol_plugin.new"
    subprocess.run(["python3", "-m", "zipapp", DIST, "-p", "/usr/bin/env -S python3 -S -I -E", "-o", str(out)], check=True)
    assert out.read_bytes() != open(DIST, "rb").read()
    return str(out)


def test_upgrade_while_pods_use_slabs_and_a_mount_is_in_flight(kubelet, reinstalled_after, new_build):
    running = Pod(size_mb=128)
    assert kubelet.mount(running).ok
    write_marker(running, "cache of the running pod")
    arriving = Pod(size_mb=128)
    os.makedirs(arriving.dir, mode=0o750)
    in_flight = kubelet.start("mount", arriving.dir, arriving.options())  # the old driver, mid-call

    # With the device that already holds the pool: its checks pass, the config is rewritten.
    result = sh(INSTALL, "--plugin-dir", node.PLUGIN_DIR, "--driver", new_build, "--device", SCRATCH)
    assert result.returncode == 0, result.stderr
    assert open(node.DRIVER, "rb").read() == open(new_build, "rb").read()
    out, _ = in_flight.communicate(timeout=600)
    assert node.parse_reply(out.decode(), in_flight.returncode, 0).ok, out
    assert os.listdir(node.DRIVER_DIR) == ["vol_plugin"]

    # The running pod kept its slab and data; the new driver releases it and hands it on.
    assert read_marker(running) == "cache of the running pod"
    name = slab_at(running)
    assert kubelet.unmount(running).ok and slabs()[name].state == "free"
    next_pod = Pod(size_mb=128)
    assert kubelet.mount(next_pod).ok and slab_at(next_pod) == name
    assert read_marker(next_pod) == "cache of the running pod"
    node.check_pool(running=[arriving, next_pod])


def test_uninstall_refuses_while_slabs_are_mounted_then_keeps_the_pool(kubelet, reinstalled_after):
    pod = Pod(size_mb=128)
    assert kubelet.mount(pod).ok
    write_marker(pod, "kept across a reinstall")
    refused = sh(UNINSTALL)
    assert refused.returncode != 0 and "1 slab(s) are mounted" in refused.stderr and "Drain the node" in refused.stderr
    assert os.path.exists(node.DRIVER) and os.path.exists(ADMIN)

    name = slab_at(pod)
    assert kubelet.unmount(pod).ok
    result = sh(UNINSTALL)
    assert result.returncode == 0, result.stderr
    assert not os.path.exists(node.DRIVER_DIR) and not os.path.exists(ADMIN)
    assert os.path.exists(CONFIG_PATH) and slabs()[name].state == "free"

    assert sh(INSTALL).returncode == 0  # every default: plugin dir, driver, admin command
    again = Pod(size_mb=128)
    assert kubelet.mount(again).ok and read_marker(again) == "kept across a reinstall"
    assert kubelet.unmount(again).ok


def test_uninstall_purge_removes_slabs_volume_group_and_config(kubelet, reinstalled_after):
    pod = Pod(size_mb=128)
    assert kubelet.mount(pod).ok
    refused = sh(UNINSTALL, "--purge")
    assert refused.returncode != 0 and "--purge: 1 slab(s) of vg-ax are mounted" in refused.stderr
    assert node.volume_group_exists() and os.path.exists(node.DRIVER)

    assert kubelet.unmount(pod).ok
    with open(CONFIG_PATH, "w") as handle:  # as the README writes it: comments after the values
        handle.write(f"[vol_plugin]\ndevice = {SCRATCH}   # the slab disk\nvolume_group = vg-ax   # made at first mount\n")
    result = sh(UNINSTALL, "--purge")
    assert result.returncode == 0, result.stderr
    assert not node.volume_group_exists() and not os.path.exists(CONFIG_PATH)
    assert node.run("blkid", "-p", "/dev/vda", check=False).returncode == 2  # blank again
    assert not os.path.exists(node.DRIVER_DIR) and not os.path.exists(node.LOG_FILE)


def test_install_refuses_a_device_carrying_a_foreign_filesystem(kubelet):
    node.run("mkfs.ext4", "-q", "-F", SPARE)
    before = (open(node.DRIVER, "rb").read(), open(CONFIG_PATH).read())
    result = sh(INSTALL, "--device", SPARE)
    assert result.returncode != 0
    assert f"install.sh: prerequisite slab device: {SPARE} is not blank: type ext4" in result.stderr
    assert f"wipefs --all {SPARE}" in result.stderr
    assert (open(node.DRIVER, "rb").read(), open(CONFIG_PATH).read()) == before
    assert node.run("blkid", "-p", "-s", "TYPE", "-o", "value", SPARE).stdout.strip() == "ext4"  # untouched
    node.run("wipefs", "--all", "--quiet", SPARE)


@pytest.mark.parametrize(
    "hidden, message",
    [
        ("/usr/sbin/mkfs.xfs", "prerequisite mkfs for xfs: mkfs.xfs not found -> install the xfsprogs package"),
        ("/usr/sbin/lvcreate", "prerequisite lvm2 tools: not found: lvm, lvs, vgs, pvs, vgcreate, lvcreate"),
    ],
)
def test_install_names_each_missing_tool(kubelet, hidden, message, tmp_path):
    # Over the real program (lvcreate is a link to lvm, so all of LVM goes): not executable.
    unused = tmp_path / "plugins-unused"  # in a dir of root's alone: install refuses one in /tmp itself
    node.run("mount", "--bind", "/dev/null", hidden)
    try:
        result = sh(INSTALL, "--plugin-dir", str(unused))
    finally:
        node.run("umount", hidden)
    assert result.returncode != 0 and message in result.stderr
    assert "nothing installed" in result.stderr and not os.path.exists(unused / "ax~vol_plugin")


def test_host_root_install_runs_the_checks_on_the_node_through_nsenter(kubelet, reinstalled_after, new_build, tmp_path):
    """The DaemonSet's container: the node's / mounted at a prefix, commands run in pid 1's mount ns."""
    host = tmp_path / "host"
    host.mkdir()
    node.run("mount", "--rbind", "/", str(host))
    try:
        result = sh(INSTALL, "--host-root", str(host), "--plugin-dir", node.PLUGIN_DIR, "--driver", new_build,
                    "--device", "/dev/vda")
        refused = sh(INSTALL, "--host-root", str(host), "--plugin-dir", node.PLUGIN_DIR, "--device", "/dev/nothing")
    finally:
        node.run("umount", "--lazy", str(host))  # detaches the whole tree
    assert result.returncode == 0, result.stderr
    assert open(node.DRIVER, "rb").read() == open(new_build, "rb").read()
    assert "device = /dev/vda" in open(CONFIG_PATH).read() and os.access(ADMIN, os.X_OK)
    assert refused.returncode != 0 and "prerequisite slab device: /dev/nothing does not exist" in refused.stderr
    pod = Pod(size_mb=128)
    assert kubelet.mount(pod).ok and kubelet.unmount(pod).ok
