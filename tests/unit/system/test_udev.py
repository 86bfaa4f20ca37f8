"""system/udev.py: naming the slab disk by udev properties, and waiting for device nodes."""

from __future__ import annotations

import pytest

from flexdriver.errors import DeviceRefused, DriverError
from flexdriver.system import udev

EBS, INSTANCE = "Amazon Elastic Block Store", "Amazon EC2 NVMe Instance Storage"
DISKS = [
    {"DEVNAME": "/dev/nvme0n1", "DEVTYPE": "disk", "ID_MODEL": EBS, "ID_SERIAL_SHORT": "vol0root", "ID_NSID": "1"},
    {"DEVNAME": "/dev/nvme1n1", "DEVTYPE": "disk", "ID_MODEL": INSTANCE, "ID_SERIAL_SHORT": "AWS1", "ID_NSID": "1"},
    {"DEVNAME": "/dev/nvme1n2", "DEVTYPE": "disk", "ID_MODEL": INSTANCE, "ID_SERIAL_SHORT": "AWS1", "ID_NSID": "2"},
    {"DEVNAME": "/dev/nvme0n1p1", "DEVTYPE": "partition", "ID_MODEL": EBS, "ID_SERIAL_SHORT": "vol0root"},
    {"DEVTYPE": "disk", "ID_SERIAL_SHORT": "nodeless"},
]


def test_parse_match():
    assert udev.parse_match("udev:ID_MODEL=Amazon EC2 NVMe Instance Storage, ID_NSID=2") == {
        "ID_MODEL": "Amazon EC2 NVMe Instance Storage", "ID_NSID": "2",
    }


@pytest.mark.parametrize("spec", ["udev:", "udev:ID_SERIAL", "udev:id_serial=x", "udev:ID_SERIAL=", "udev:A=1,A=2", "/dev/x"])
def test_malformed_matches_are_refused(spec):
    with pytest.raises(ValueError):
        udev.parse_match(spec)


def test_pick_the_one_device_that_has_every_property():
    spec = "udev:ID_MODEL=Amazon EC2 NVMe Instance Storage,ID_NSID=2"
    assert udev.pick(DISKS, udev.parse_match(spec), spec) == "/dev/nvme1n2"
    spec = "udev:ID_SERIAL_SHORT=vol0root,DEVTYPE=disk"
    assert udev.pick(DISKS, udev.parse_match(spec), spec) == "/dev/nvme0n1"


def test_several_matches_are_refused_naming_them():
    spec = "udev:ID_SERIAL_SHORT=AWS1"
    with pytest.raises(DeviceRefused, match=r"matches 2 block devices \(/dev/nvme1n1, /dev/nvme1n2\)"):
        udev.pick(DISKS, udev.parse_match(spec), spec)


def test_no_match_and_a_match_without_a_node_are_refused():
    for spec in ("udev:ID_SERIAL_SHORT=gone", "udev:ID_SERIAL_SHORT=nodeless"):
        with pytest.raises(DeviceRefused, match="no block device has the udev properties"):
            udev.pick(DISKS, udev.parse_match(spec), spec)


def test_a_path_is_used_as_it_is_without_asking_udev(monkeypatch):
    monkeypatch.setattr(udev, "block_devices", lambda: pytest.fail("udev must not be asked"))
    assert udev.resolve_device("/dev/disk/by-id/nvme-Amazon_EC2_NVMe_Instance_Storage_AWS1") == (
        "/dev/disk/by-id/nvme-Amazon_EC2_NVMe_Instance_Storage_AWS1"
    )


def test_resolve_a_udev_match(monkeypatch):
    monkeypatch.setattr(udev, "block_devices", lambda: DISKS)
    assert udev.resolve_device("udev:ID_MODEL=Amazon EC2 NVMe Instance Storage,ID_NSID=1") == "/dev/nvme1n1"
    with pytest.raises(DeviceRefused, match="device = udev:ID_SERIAL: "):
        udev.resolve_device("udev:ID_SERIAL")


def test_an_existing_node_is_not_waited_for(tmp_path, monkeypatch):
    node = tmp_path / "node"
    node.write_text("")
    monkeypatch.setitem(__import__("sys").modules, "pyudev", None)  # importing it would fail
    udev.wait_for_node(str(node), timeout_s=0.01)


def test_a_node_that_never_appears_fails_naming_it(tmp_path):
    with pytest.raises(DriverError, match=r"device node .*/missing did not appear within 0.2 s"):
        udev.wait_for_node(str(tmp_path / "missing"), timeout_s=0.2)
