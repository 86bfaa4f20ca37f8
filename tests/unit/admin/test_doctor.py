"""`ax-vol-plugin doctor`: one line per check, --json, exit 1 on any failure, --prerequisites,
and the pool-health checks against a simulated node."""

from __future__ import annotations

import importlib
import json

import pytest

from flexdriver import checks
from flexdriver.admin.cli import EXIT_FAILED, EXIT_OK, EXIT_PROBLEMS
from flexdriver.pool import MIB, State
from flexdriver.system.mounts import MountEntry

from ..test_checks import HEALTHY
from .simulated import DEAD, VG, me, slab

doctor_module = importlib.import_module("flexdriver.admin.doctor")
POOL_CHECKS = [
    "volume group", "slab tags", "slabs in use, unmounted", "slabs waiting for gc", "slab mounts", "volume group metadata",
]
UID = "aaaaaaaa-0000-4000-8000-000000000001"


@pytest.fixture
def prerequisites(monkeypatch):
    """The facts probe_node will report; tests replace them."""
    state = {"facts": HEALTHY, "configs": []}

    def probe(config, runner):
        state["configs"].append(config)
        return state["facts"]

    monkeypatch.setattr(checks, "probe_node", probe)
    return state


def pool_lines(result) -> dict:
    """check name -> its line, for the pool-health checks."""
    found = {}
    for line in result.stdout.splitlines():
        name = line[4:].split(":", 1)[0].strip()
        if name in POOL_CHECKS:
            found[name] = line
    return found


def test_a_healthy_node_exits_0_with_one_line_per_check(prerequisites, node, invoke):
    result = invoke("doctor")
    assert result.exit_code == EXIT_OK, result.stdout
    lines = result.stdout.splitlines()
    assert len(lines) == len(checks.evaluate(HEALTHY)) + len(POOL_CHECKS) and all(line.startswith("ok ") for line in lines)
    assert list(pool_lines(result)) == POOL_CHECKS


def test_any_failure_exits_1_and_says_what_to_do(prerequisites, invoke):
    prerequisites["facts"] = HEALTHY._replace(python_version=(3, 7, 3))
    result = invoke("doctor", "--prerequisites")
    assert result.exit_code == EXIT_PROBLEMS
    assert "FAIL python3: /usr/bin/python3 is 3.7.3, the driver needs 3.9 or newer -> install python3" in result.stdout


def test_json_lists_every_check(prerequisites, invoke):
    prerequisites["facts"] = HEALTHY._replace(device=checks.DeviceFacts("/dev/sdq", exists=False))
    result = invoke("doctor", "--json")
    body = json.loads(result.stdout)
    assert result.exit_code == EXIT_PROBLEMS and body["ok"] is False
    failed = [c for c in body["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["slab device"] and "/dev/sdq does not exist" in failed[0]["detail"]
    assert [c["name"] for c in body["checks"]][-len(POOL_CHECKS):] == POOL_CHECKS


def test_prerequisites_mode_leaves_pool_health_out(prerequisites, node, invoke, monkeypatch):
    extra = checks.Check("pool", False, "sick")
    monkeypatch.setattr(doctor_module, "pool_health_checks", lambda config, runner: [extra])
    assert invoke("doctor", "--prerequisites").exit_code == EXIT_OK
    assert node.calls == [], "the prerequisites do not read the pool"
    full = invoke("doctor")
    assert full.exit_code == EXIT_PROBLEMS and full.stdout.splitlines()[-1] == "FAIL pool: sick"


def test_the_config_given_is_the_config_checked(prerequisites, node, invoke, tmp_path):
    conf = tmp_path / "other.conf"
    conf.write_text("[vol_plugin]\ndevice = /dev/sdq\nvolume_group = vg-ci\n")
    invoke("--config", str(conf), "doctor")
    assert prerequisites["configs"][-1].device == "/dev/sdq" and prerequisites["configs"][-1].volume_group == "vg-ci"
    assert node.calls[0][-1] == "vg-ci", "the pool read is that of the configured volume group"


def test_an_invalid_config_is_one_line_and_exit_3(prerequisites, invoke, tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("[vol_plugin]\ndevise = /dev/sdq\n")
    result = invoke("--config", str(conf), "doctor")
    assert result.exit_code == EXIT_FAILED and "unknown key 'devise'" in result.stderr
    assert result.stderr.startswith("ax-vol-plugin: ") and result.stderr.count("\n") == 1
    assert prerequisites["configs"] == []


# ---- pool health ---------------------------------------------------------------------------


def test_a_healthy_pool_says_what_it_holds(prerequisites, node, invoke, kubelet_dir):
    mine = kubelet_dir(UID)
    node.add(slab("slab-1", State.USED, 1, mount_dir=mine, uid=UID))
    node.mount_slab("slab-1", mine)
    node.add(slab("slab-2", State.FREE, 2, released_at=5))
    lines = pool_lines(invoke("doctor"))
    assert lines["volume group"] == f"ok  volume group: {VG}: 2 slab(s), 7.5 GiB of 8 GiB free"
    assert lines["slab tags"] == "ok  slab tags: all 2 slab(s) readable"
    assert lines["slab mounts"] == "ok  slab mounts: 1 mounted, each on its own dir"
    assert lines["volume group metadata"] == (
        "ok  volume group metadata: 3071 KiB of 4095 KiB left for the metadata text (8192 KiB area), 2 slab(s)")


def test_every_kind_of_trouble_is_one_failed_line(prerequisites, node, invoke, kubelet_dir, tmp_path):
    resting = kubelet_dir(UID)  # pod still there, slab not mounted (after a reboot, say)
    node.add(slab("slab-resting", State.USED, 1, mount_dir=resting, uid=UID))
    node.add(slab("slab-orphan", State.USED, 2, mount_dir=kubelet_dir("gone", exists=False)))
    node.add(slab("slab-half", State.CREATING, 3, mount_dir=kubelet_dir("c", exists=False), creator=DEAD))
    node.add(slab("slab-doomed", State.DOOMED, 4, mount_dir=resting))
    node.add(slab("slab-busy", State.CREATING, 5, mount_dir=kubelet_dir("d", exists=False), creator=me()))
    node.add(slab("slab-free", State.FREE, 6, released_at=5))
    node.mounts.append(MountEntry(str(tmp_path), (253, 6), "ext4", "/dev/mapper/vg--ax-slab--free"))
    node.volumes["slab-odd"] = {"size": 4 * MIB, "tags": {"ax.slab", "ax.type=graph"}, "device": (253, 9)}
    node.mda = (300 << 10, 8 << 20)
    result = invoke("doctor", "--prerequisites")
    assert result.exit_code == EXIT_OK
    result = invoke("doctor")
    assert result.exit_code == EXIT_PROBLEMS
    lines = pool_lines(result)
    assert lines["slab tags"].startswith(
        f"FAIL slab tags: slab-odd in {VG} carry the ax.slab tag but tags the driver cannot read"
    )
    assert lines["slabs in use, unmounted"].startswith(
        f"FAIL slabs in use, unmounted: tagged in use but mounted nowhere: slab-resting for {resting} -> "
    )
    assert lines["slabs waiting for gc"] == (
        "FAIL slabs waiting for gc: slab-orphan (orphan), slab-half (half-made), slab-doomed (doomed) "
        "-> ax-vol-plugin gc (the driver's next mount reclaims them too)"
    )
    assert lines["slab mounts"].startswith(f"FAIL slab mounts: slab-free is mounted on {tmp_path} but tagged free -> ")
    assert lines["volume group metadata"].startswith(
        "FAIL volume group metadata: low: 299 KiB of 4095 KiB left for the metadata text (8192 KiB area), 6 slab(s) "
        "-> evict free slabs"
    )


def test_a_slab_mounted_on_another_dir_than_its_own_fails(prerequisites, node, invoke, kubelet_dir, tmp_path):
    mine = kubelet_dir(UID)
    node.add(slab("slab-1", State.USED, 1, mount_dir=mine, uid=UID))
    node.mount_slab("slab-1", mine)
    node.mounts.append(MountEntry(str(tmp_path), (253, 1), "ext4", "/dev/mapper/vg--ax-slab--1"))
    line = pool_lines(invoke("doctor"))["slab mounts"]
    assert line.startswith(f"FAIL slab mounts: slab-1 is mounted on {tmp_path} but recorded for {mine}")


def test_a_missing_volume_group_is_fine_on_a_blank_device(prerequisites, node, invoke, monkeypatch):
    node.has_vg = False
    monkeypatch.setattr(checks, "probe_device", lambda config, runner, lvm_ready: checks.DeviceFacts(config.device, True, True))
    result = invoke("doctor")
    assert result.exit_code == EXIT_OK
    assert pool_lines(result) == {"volume group": (
        f"ok  volume group: {VG} does not exist yet; /dev/xvdz is blank and ready for it "
        "(made at the first mount, or by ax-vol-plugin prepare)"
    )}


def test_a_missing_volume_group_on_a_used_device_fails(prerequisites, node, invoke, monkeypatch):
    node.has_vg = False
    facts = checks.DeviceFacts("/dev/xvdz", True, True, signatures="type ext4")
    monkeypatch.setattr(checks, "probe_device", lambda config, runner, lvm_ready: facts)
    line = pool_lines(invoke("doctor"))["volume group"]
    assert line == (
        f"FAIL volume group: {VG} does not exist and /dev/xvdz is not blank: type ext4 "
        "-> use a blank disk; only if its data may go: wipefs --all /dev/xvdz"
    )


def test_an_unreadable_pool_is_a_failed_check_not_a_crash(prerequisites, node, invoke):
    node.failing.add("lvs")
    line = pool_lines(invoke("doctor"))["volume group"]
    assert line.startswith(f"FAIL volume group: {VG} cannot be read: lvs ")


# ---- thin mode ----------------------------------------------------------------------------


@pytest.fixture
def thin_config(tmp_path):
    conf = tmp_path / "thin.conf"
    conf.write_text("[vol_plugin]\nprovisioning = thin\n")
    return str(conf)


def thin_check_of(result):
    (line,) = [line for line in result.stdout.splitlines() if "thin pool:" in line]
    return line


def test_a_thin_pool_under_its_marks_is_healthy(prerequisites, node, invoke, thin_config):
    node.make_thin(data_used=0.3, metadata_used=0.1)
    result = invoke("--config", thin_config, "doctor")
    assert "data 30% of" in thin_check_of(result) and thin_check_of(result).startswith("ok")


def test_a_thin_pool_past_its_high_water_mark_fails_with_what_to_do(prerequisites, node, invoke, thin_config):
    node.make_thin(data_used=0.85)
    result = invoke("--config", thin_config, "doctor")
    assert result.exit_code == EXIT_PROBLEMS
    assert "over its mark" in thin_check_of(result) and "evict" in thin_check_of(result)


def test_a_thin_pool_that_would_queue_writes_when_full_fails(prerequisites, node, invoke, thin_config):
    node.make_thin(error_when_full=False)
    result = invoke("--config", thin_config, "doctor")
    assert "lvchange --errorwhenfull y" in thin_check_of(result)
