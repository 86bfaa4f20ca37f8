"""checks.py: each node prerequisite, failing on its own with its own message, and the probing
of a device through blkid and pvs (runner faked)."""

from __future__ import annotations

import json

import pytest

from flexdriver import checks
from flexdriver.checks import DeviceFacts, NodeFacts
from flexdriver.config import Config
from flexdriver.system.runner import Runner

from .fakes import FakeRunner

ALL_TOOLS = {name: f"/usr/sbin/{name}" for name in (*checks.LVM_TOOLS, *checks.FS_TOOLS.values(), *checks.OTHER_TOOLS)}
DM_MISC = "236 device-mapper\n 62 vga_arbiter\n"
HEALTHY = NodeFacts(
    tools=ALL_TOOLS, proc_misc=DM_MISC, dm_class_dir=True, dm_loadable=True,
    python_version=(3, 11, 2), python_path="/usr/bin/python3",
    device=DeviceFacts("/dev/xvdz", exists=True, is_block=True), volume_group="vg-ax",
)


def failures(facts):
    return [check for check in checks.evaluate(facts) if not check.ok]


def test_a_healthy_node_passes_every_check():
    found = checks.evaluate(HEALTHY)
    assert [c.name for c in found] == [
        "lvm2 tools", "mkfs for ext4", "mkfs for xfs", "util-linux tools", "device-mapper", "python3", "slab device",
    ]
    assert all(c.ok for c in found), [c.line() for c in found]


def without(*programs):
    return {name: (None if name in programs else path) for name, path in ALL_TOOLS.items()}


@pytest.mark.parametrize(
    "change, name, words",
    [
        ({"tools": without("lvcreate", "pvs")}, "lvm2 tools", ["pvs, lvcreate", "lvm2 package"]),
        ({"tools": without("mkfs.ext4")}, "mkfs for ext4", ["mkfs.ext4 not found", "e2fsprogs"]),
        ({"tools": without("mkfs.xfs")}, "mkfs for xfs", ["mkfs.xfs not found", "xfsprogs"]),
        ({"tools": without("blkid")}, "util-linux tools", ["blkid", "util-linux"]),
        ({"proc_misc": "", "dm_class_dir": False, "dm_loadable": False}, "device-mapper", ["not in the running kernel"]),
        ({"python_version": (3, 8, 10)}, "python3", ["/usr/bin/python3 is 3.8.10", "needs 3.9"]),
        ({"device": DeviceFacts("/dev/xvdz", exists=False)}, "slab device", ["/dev/xvdz does not exist", "--device"]),
        ({"device": DeviceFacts("/tmp/f", exists=True)}, "slab device", ["/tmp/f is not a block device"]),
        (
            {"device": DeviceFacts("/dev/xvdz", True, True, signatures="type ext4")},
            "slab device", ["not blank: type ext4", "wipefs --all /dev/xvdz"],
        ),
        (
            {"device": DeviceFacts("/dev/xvdz", True, True, signatures="type LVM2_member", volume_group="data")},
            "slab device", ["another volume group, data"],
        ),
    ],
)
def test_each_prerequisite_fails_alone_with_its_own_message(change, name, words):
    found = failures(HEALTHY._replace(**change))
    assert [c.name for c in found] == [name]
    for word in words:
        assert word in found[0].line()


def test_device_mapper_is_found_in_any_of_three_places():
    assert checks.device_mapper(DM_MISC, False, False).ok
    assert checks.device_mapper("", True, False).ok
    assert checks.device_mapper("", False, True).ok
    assert not checks.device_mapper("236 device-mapper-ish\n", False, False).ok


def test_a_device_already_holding_our_volume_group_is_fine():
    ours = DeviceFacts("/dev/xvdz", True, True, signatures="type LVM2_member", volume_group="vg-ax")
    assert checks.device(ours, "vg-ax").ok


def test_a_fix_is_shown_only_for_failures():
    assert checks.Check("x", True, "fine", "do this").line() == "ok  x: fine"
    assert checks.Check("x", False, "bad", "do this").line() == "FAIL x: bad -> do this"


def pvs_report(vg):
    return json.dumps({"report": [{"pv": [{"pv_name": "/dev/xvdz", "vg_name": vg}]}]})


@pytest.fixture
def block_device(monkeypatch):
    monkeypatch.setattr(checks, "file_kind", lambda path: "block")


def test_probe_device_blank(block_device):
    runner = FakeRunner()
    runner.reply(["blkid"], returncode=2)
    facts = checks.probe_device(Config(), runner, lvm_ready=True)
    assert facts == DeviceFacts("/dev/xvdz", exists=True, is_block=True)
    assert runner.programs() == ["blkid"]


def test_probe_device_asks_pvs_which_volume_group_owns_an_lvm_member(block_device):
    runner = FakeRunner()
    runner.reply(["blkid"], stdout="DEVNAME=/dev/xvdz\nTYPE=LVM2_member\n")
    runner.reply(["pvs"], stdout=pvs_report("vg-ax"))
    facts = checks.probe_device(Config(), runner, lvm_ready=True)
    assert facts.volume_group == "vg-ax" and checks.device(facts, "vg-ax").ok
    assert runner.calls[-1][0] == "pvs" and runner.calls[-1][-1] == "/dev/xvdz"


def test_probe_device_reports_a_failing_blkid_as_a_failed_check(block_device):
    runner = FakeRunner()
    runner.fail(["blkid"], returncode=4, stderr="blkid: Permission denied")
    check = checks.device(checks.probe_device(Config(), runner, lvm_ready=True), "vg-ax")
    assert not check.ok and "Permission denied" in check.detail


def test_probe_device_missing_runs_nothing(monkeypatch):
    monkeypatch.setattr(checks, "file_kind", lambda path: "missing")
    runner = FakeRunner()
    assert not checks.probe_device(Config(), runner, lvm_ready=True).exists
    assert runner.calls == []


def test_file_kind(tmp_path):
    assert checks.file_kind(str(tmp_path / "nothing")) == "missing"
    assert checks.file_kind(str(tmp_path)) == "other"


def test_probe_node_finds_tools_in_the_drivers_search_path(tmp_path, block_device):
    for name in ("lvcreate", "mkfs.xfs"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    runner = Runner(search_path=[str(tmp_path)])
    facts = checks.probe_node(Config(device="/dev/null-ish"), runner)
    assert facts.tools["lvcreate"] == f"{tmp_path}/lvcreate" and facts.tools["mkfs.ext4"] is None
    assert [c.name for c in checks.evaluate(facts) if not c.ok][:3] == ["lvm2 tools", "mkfs for ext4", "util-linux tools"]


# ---- thin mode's prerequisites ----------------------------------------------------------------


def test_thin_mode_needs_thin_check_and_the_dm_thin_module():
    tools = {program: f"/usr/sbin/{program}" for program in checks.THIN_TOOLS}
    assert all(c.ok for c in checks.thin_prerequisites(tools, loadable=True))
    missing, module = checks.thin_prerequisites(dict(tools, thin_check=None), loadable=False)
    assert not missing.ok and missing.fix == "install thin-provisioning-tools"
    assert not module.ok and "dm_thin_pool" in module.detail


def test_thin_checks_appear_only_in_thin_mode():
    names = [c.name for c in checks.evaluate(HEALTHY)]
    assert "thin provisioning tools" not in names
    names = [c.name for c in checks.evaluate(HEALTHY._replace(thin=True, thin_loadable=True))]
    assert "thin provisioning tools" in names and "dm-thin" in names
