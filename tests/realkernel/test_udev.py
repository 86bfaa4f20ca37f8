"""The slab disk named by udev (a /dev/disk/by-id link, or udev properties), and device nodes
waited for through udev events."""

import os
import subprocess
import threading
import time

from . import node
from .conftest import CONFIG_PATH, NODE_DISK, SCRATCH, SPARE
from .node import Pod, check_pool, slab_at, slabs


def udev_properties(device: str) -> dict:
    out = node.run("udevadm", "info", "--query=property", f"--name={device}").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def configure(device: str) -> None:
    with open(CONFIG_PATH, "w") as handle:
        handle.write(f"[vol_plugin]\ndevice = {device}\n")


def volume_group_device() -> str:
    out = node.run("pvs", "--noheadings", "-o", "pv_name", "--select", f"vg_name={node.VOLUME_GROUP}").stdout
    return out.strip()


def test_the_volume_group_is_made_on_the_disk_udev_properties_name(kubelet):
    serials = {device: udev_properties(device).get("ID_SERIAL") for device in (SCRATCH, NODE_DISK, SPARE)}
    assert None not in serials.values() and len(set(serials.values())) == 3, serials
    serial = serials[SCRATCH]
    configure(f"udev:ID_SERIAL={serial},DEVTYPE=disk")
    pod = Pod(size_mb=128)
    assert kubelet.mount(pod).ok, kubelet.calls[-1].message
    assert volume_group_device() == SCRATCH
    assert kubelet.unmount(pod).ok
    check_pool()


def test_the_volume_group_is_made_on_a_by_id_link(kubelet):
    links = udev_properties(SCRATCH)["DEVLINKS"].split()
    (by_id,) = [link for link in links if link.startswith("/dev/disk/by-id/virtio-")]
    configure(by_id)
    pod = Pod(size_mb=128)
    assert kubelet.mount(pod).ok, kubelet.calls[-1].message
    assert os.path.realpath(by_id) == SCRATCH and volume_group_device() in (SCRATCH, by_id)
    check_pool(running=[pod])


def test_a_udev_match_of_several_disks_or_none_is_refused_and_touches_nothing(kubelet):
    major = udev_properties(SCRATCH)["MAJOR"]
    for device, words in (
        (f"udev:DEVTYPE=disk,MAJOR={major}", "matches"),  # every virtio disk of the VM
        ("udev:ID_SERIAL=no-such-disk", "no block device has the udev properties"),
        ("udev:id_serial", "is not KEY=VALUE"),
    ):
        configure(device)
        reply = kubelet.mount(Pod(size_mb=128))
        assert reply.status == "Failure" and words in reply.message, reply.message
        assert not node.volume_group_exists()
    assert node.run("blkid", "-p", SCRATCH, check=False).returncode == 2, "the disk must still be blank"


def test_a_missing_device_node_is_waited_for_until_udev_makes_it(kubelet):
    first = Pod(size_mb=128)
    assert kubelet.mount(first).ok and kubelet.unmount(first).ok
    (name,) = slabs()
    view = slabs()[name]
    dm = os.path.basename(os.path.realpath(view.device))  # dm-N
    # The unmount closed the device after writing to it, and udev answers such a close with a
    # change event of its own; processed late, it would bring the link back before the trigger.
    node.run("udevadm", "settle")
    os.unlink(view.device)  # the /dev/mapper link of the warm slab is gone
    assert not os.path.lexists(view.device)
    triggered = []

    def udev_brings_it_back():
        time.sleep(3)
        triggered.append(time.monotonic())
        subprocess.run(["udevadm", "trigger", "--action=change", f"/sys/class/block/{dm}"], check=True)

    helper = threading.Thread(target=udev_brings_it_back)
    helper.start()
    second = Pod(size_mb=128)
    reply = kubelet.mount(second)
    answered = time.monotonic()
    helper.join()
    assert reply.ok, reply.message
    assert slab_at(second) == name
    assert triggered and answered > triggered[0], "the mount must have waited for udev to make the node"
    check_pool(running=[second])
