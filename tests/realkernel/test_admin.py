"""The admin command, installed as /usr/local/sbin/ax-vol-plugin, on a real pool: status against
lvs, gc repairing a pool damaged the way crashes and lost pods damage it, evict by count and by
age, prepare on the spare disk, refusals without --yes, and doctor's pool-health lines.

Everything is checked from outside, through lvs, the mount table and the driver as kubelet
drives it, as for the driver itself."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from . import node
from .conftest import SPARE
from .node import KUBELET_ENV, VOLUME_GROUP, Pod, check_pool, slab_at, slabs

ADMIN = "/usr/local/sbin/ax-vol-plugin"
MIB = 1 << 20
REPORT = ["--reportformat", "json", "--units", "b", "--nosuffix"]


def admin(*args: str, env=None) -> subprocess.CompletedProcess:
    """The command as an admin's script runs it: no terminal on stdin."""
    return subprocess.run(
        [ADMIN, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, env=dict(KUBELET_ENV, **(env or {}))
    )


def status() -> dict:
    result = admin("status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def vg_fields(volume_group: str, fields: str) -> dict:
    out = node.run("vgs", *REPORT, "-o", fields, volume_group).stdout
    return json.loads(out)["report"][0]["vg"][0]


def pool_lines(doctor_output: str) -> dict:
    names = ("volume group", "slab tags", "slabs in use, unmounted", "slabs waiting for gc", "slab mounts",
             "volume group metadata")
    found = {}
    for line in doctor_output.splitlines():
        name = line[4:].split(":", 1)[0].strip()
        if name in names:
            found[name] = line
    return found


def release(kubelet, pod: Pod) -> str:
    assert kubelet.mount(pod).ok
    name = slab_at(pod)
    assert kubelet.unmount(pod).ok
    kubelet.delete_pod(pod)
    return name


def set_released(name: str, when: int) -> None:
    """Age a free slab: its release time is only a tag, so an admin's lvchange can move it."""
    (old,) = [f"ax.released={v}" for k, v in slabs()[name].tags.items() if k == "ax.released"]
    node.run("lvchange", "--deltag", old, "--addtag", f"ax.released={when}", f"{VOLUME_GROUP}/{name}")


def refused_without_yes(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr == (
        "ax-vol-plugin: refusing to change the pool without --yes (no terminal to confirm on); nothing changed\n"
    )


# ---- status ----------------------------------------------------------------------------------


def test_status_table_and_json_agree_with_lvs(kubelet):
    missing = admin("status")
    assert missing.returncode == 0 and missing.stdout.startswith(f"volume group {VOLUME_GROUP} does not exist")

    kept = Pod(size_mb=320, fs_type="xfs")  # xfs needs 300 MiB at least
    assert kubelet.mount(kept).ok
    node.fill(kept, 0.3)
    kept_name = release(kubelet, kept)
    running = Pod(size_mb=128)
    assert kubelet.mount(running).ok
    node.fill(running, 0.2)

    body = status()
    pool = slabs()
    vg = vg_fields(VOLUME_GROUP, "vg_size,vg_free")
    assert body["volume_group"]["size_bytes"] == int(vg["vg_size"])
    assert body["volume_group"]["free_bytes"] == int(vg["vg_free"])
    assert body["volume_group"]["slab_bytes"] == sum(s.size_bytes for s in pool.values())
    assert {row["name"] for row in body["slabs"]} == set(pool)
    for row in body["slabs"]:
        view = pool[row["name"]]
        assert row["size_bytes"] == view.size_bytes and row["size_mb"] == int(view.tags["ax.size_mb"])
        assert row["fs"] == view.tags["ax.fs"] and row["scope"] == view.tags.get("ax.scope", "node")
        assert row["pod"] == (view.tags.get("ax.pod") or None) and row["mount_dir"] == view.dir
        assert row["state"] == {"used": "in use", "free": "free"}[view.state]
    by_name = {row["name"]: row for row in body["slabs"]}
    live = by_name[slab_at(running)]
    vfs = os.statvfs(running.dir)
    used = vfs.f_blocks - vfs.f_bfree
    assert abs(live["usage_percent"] - 100 * used / (used + vfs.f_bavail)) < 1.0
    assert (live["mounted_at"], live["last_used_s"], live["pod"]) == ([running.dir], 0, running.uid)
    free = by_name[kept_name]
    assert free["usage_percent"] == int(pool[kept_name].tags["ax.usage"]) / 10 and 25 < free["usage_percent"] < 35
    assert 0 <= free["last_used_s"] < 600 and free["mounted_at"] == []
    assert body["counts"]["in use"] == 1 and body["counts"]["free"] == 1

    table = admin("status")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:5] == ["SLAB", "SIZE", "FS", "SCOPE", "STATE"]
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert rows[slab_at(running)][:7] == [slab_at(running), "128", "MiB", "ext4", "node", "in", "use"]
    assert rows[slab_at(running)][7] == "now" and rows[slab_at(running)][-2:] == [running.uid, running.dir]
    assert rows[kept_name][:6] == [kept_name, "320", "MiB", "xfs", "node", "free"]
    assert rows[kept_name][7] == f"{free['usage_percent']:.0f}%"
    assert lines[-1].startswith(f"volume group {VOLUME_GROUP}: ") and lines[-1].endswith(": 1 in use, 1 free")
    # The driver made the volume group with the metadata area LVM.create_volume_group asks for.
    assert int(vg_fields(VOLUME_GROUP, "vg_mda_size")["vg_mda_size"]) >= 7 * MIB
    assert kubelet.unmount(running).ok


# ---- gc --------------------------------------------------------------------------------------


def test_gc_repairs_a_pool_damaged_by_a_crash_and_a_lost_pod(kubelet):
    healthy = Pod(size_mb=128)
    assert kubelet.mount(healthy).ok
    # A slab in use whose mount was removed behind the driver's back, and its pod dir deleted.
    lost = Pod(size_mb=192)
    assert kubelet.mount(lost).ok
    lost_name = slab_at(lost)
    # A mount killed right after lvcreate, and its pod then deleted: a half-made slab. (Any
    # later driver call would reclaim it, so it is the last call before gc.)
    crashed = Pod(size_mb=160)
    os.makedirs(crashed.dir, mode=0o750)
    proc = kubelet.start("mount", crashed.dir, crashed.options(), env={"AX_VOL_PLUGIN_FAILPOINTS": "mount-after-lvcreate"})
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    os.rmdir(crashed.dir)
    kubelet.delete_pod(crashed)
    node.run("umount", lost.dir)
    shutil.rmtree(lost.pod_dir)

    pool = slabs()
    (half_name,) = [name for name, view in pool.items() if view.state == "creating"]
    states = {row["name"]: row["state"] for row in status()["slabs"]}
    assert states == {slab_at(healthy): "in use", lost_name: "orphan", half_name: "half-made"}
    doctor = admin("doctor")
    assert doctor.returncode == 1
    line = pool_lines(doctor.stdout)["slabs waiting for gc"]
    listed, _, fix = line[len("FAIL slabs waiting for gc: "):].partition(" -> ")
    assert line.startswith("FAIL ") and fix == "ax-vol-plugin gc (the driver's next mount reclaims them too)"
    assert sorted(listed.split(", ")) == sorted([f"{lost_name} (orphan)", f"{half_name} (half-made)"])

    dry = admin("gc", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert sorted(line.split()[:3] for line in dry.stdout.splitlines()) == sorted(
        [["would", "free", lost_name], ["would", "delete", half_name]]
    )
    assert slabs() == pool, "a dry run changes nothing"
    refused_without_yes(admin("gc"))
    assert slabs() == pool

    done = admin("gc", "--yes")
    assert done.returncode == 0, done.stderr
    assert f"freed {lost_name}: back in the pool" in done.stdout and f"deleted {half_name}" in done.stdout
    after = check_pool(running=[healthy])
    assert set(after) == {slab_at(healthy), lost_name}
    assert after[lost_name].state == "free" and "ax.dir" not in after[lost_name].tags
    assert abs(int(after[lost_name].tags["ax.released"]) - time.time()) < 600
    assert pool_lines(admin("doctor").stdout)["slabs waiting for gc"] == "ok  slabs waiting for gc: none"
    assert admin("gc", "--yes").stdout == "nothing to reclaim\n"

    # Back in the pool as the driver's unmount would have left it: the next pod of its size gets it.
    successor = Pod(size_mb=192)
    reply = kubelet.mount(successor)
    assert reply.ok and "reused warm slab" in reply.message and slab_at(successor) == lost_name
    check_pool(running=[healthy, successor])
    assert kubelet.unmount(successor).ok and kubelet.unmount(healthy).ok


# ---- evict -----------------------------------------------------------------------------------


def test_evict_by_count_and_by_age_never_touches_a_slab_in_use(kubelet):
    pods = [Pod(size_mb=96) for _ in range(4)]
    for pod in pods:  # all mounted at once, so that each gets a slab of its own
        assert kubelet.mount(pod).ok
    names = [slab_at(pod) for pod in pods]
    for pod in pods:
        assert kubelet.unmount(pod).ok
        kubelet.delete_pod(pod)
    holder = Pod(size_mb=96)
    assert kubelet.mount(holder).ok  # takes the warmest free slab
    held = slab_at(holder)
    free = [name for name in names if name != held]
    now = int(time.time())
    hours = dict(zip(free, (1, 5, 30)))  # released 1, 5 and 30 hours ago
    for name, age_h in hours.items():
        set_released(name, now - age_h * 3600)
    newest, middle, oldest = free

    dry = admin("evict", "--keep", "2", "--dry-run")
    assert dry.returncode == 0 and dry.stdout == f"would evict {oldest} (96 MiB ext4, free for 1d)\n"
    assert set(slabs()) == set(names)
    refused_without_yes(admin("evict", "--keep", "2"))
    assert set(slabs()) == set(names)

    by_count = admin("evict", "--keep", "2", "--yes")
    assert by_count.returncode == 0, by_count.stderr
    assert set(slabs()) == {held, newest, middle}
    by_age = admin("evict", "--older-than", "2h", "--yes")
    assert by_age.returncode == 0 and by_age.stdout.splitlines()[-1] == f"evicted 1 slab(s), 96 MiB: {middle}"
    assert set(slabs()) == {held, newest}
    everything = admin("evict", "--older-than", "30m", "--yes")
    assert everything.returncode == 0
    assert set(check_pool(running=[holder])) == {held}
    assert admin("evict", "--keep", "0", "--yes").stdout == "no free slab matches; nothing to evict\n"
    assert slab_at(holder) == held
    assert kubelet.unmount(holder).ok


# ---- prepare ---------------------------------------------------------------------------------

OTHER_VG = "vg-admin-prepare"


@pytest.fixture
def other_config(tmp_path):
    """A second node config naming the spare disk and another volume group; that volume group
    is gone again afterwards, whatever the test did."""
    path = tmp_path / "prepare.conf"
    path.write_text(f"[vol_plugin]\ndevice = {SPARE}\nvolume_group = {OTHER_VG}\n")
    yield str(path)
    node.run("vgremove", "--force", "--force", "--yes", OTHER_VG, check=False)
    node.run("pvremove", "--force", "--force", "--yes", SPARE, check=False)
    node.run("wipefs", "--all", "--quiet", SPARE)


def vg_names() -> list:
    out = node.run("vgs", *REPORT, "-o", "vg_name").stdout
    return [row["vg_name"] for row in json.loads(out)["report"][0]["vg"]]


def test_prepare_refuses_a_signature_and_makes_the_volume_group_on_a_blank_disk(kubelet, other_config):
    node.run("mkfs.ext4", "-q", "-F", SPARE)
    refused = admin("--config", other_config, "prepare", "--yes")
    assert refused.returncode == 1
    assert refused.stderr == (
        f"ax-vol-plugin: volume group {OTHER_VG} does not exist and device {SPARE} is not blank "
        "(it carries type ext4); refusing to create it there. Wipe the device if it is meant for slabs, "
        "or name another device or volume group in the config\n"
    )
    assert 'TYPE="ext4"' in node.run("blkid", "-p", SPARE).stdout and OTHER_VG not in vg_names()

    node.run("wipefs", "--all", "--quiet", SPARE)
    with_env = {"AX_VOL_PLUGIN_CONFIG": other_config}
    refused_without_yes(admin("prepare", "--device", SPARE, env=with_env))
    assert OTHER_VG not in vg_names()
    assert node.run("blkid", "-p", SPARE, check=False).returncode == 2, "still blank"

    made = admin("prepare", "--device", SPARE, "--yes", env=with_env)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"created volume group {OTHER_VG} on {SPARE} (")
    pv = json.loads(node.run("pvs", *REPORT, "-o", "pv_name,vg_name,pv_mda_size", SPARE).stdout)["report"][0]["pv"][0]
    assert (pv["pv_name"], pv["vg_name"]) == (SPARE, OTHER_VG) and int(pv["pv_mda_size"]) >= 7 * MIB
    assert admin("prepare", "--yes", env=with_env).stdout == f"volume group {OTHER_VG} already exists; nothing to do\n"
    empty = admin("--config", other_config, "status")
    assert empty.returncode == 0 and empty.stdout.startswith(f"volume group {OTHER_VG}: ")
    assert empty.stdout.rstrip().endswith("in 0 slab(s): 0 in use, 0 free")
    health = pool_lines(admin("--config", other_config, "doctor").stdout)
    assert health["volume group"].startswith(f"ok  volume group: {OTHER_VG}: 0 slab(s), ")
    assert health["volume group metadata"].startswith("ok  volume group metadata: ")
    assert VOLUME_GROUP not in vg_names(), "the node's own volume group is untouched"


# ---- doctor ----------------------------------------------------------------------------------


def test_doctor_reports_a_healthy_pool_and_a_stray_mount(kubelet, tmp_path):
    pod = Pod(size_mb=128)
    assert kubelet.mount(pod).ok
    healthy = admin("doctor")
    assert healthy.returncode == 0, healthy.stdout
    lines = pool_lines(healthy.stdout)
    assert all(line.startswith("ok ") for line in lines.values()) and len(lines) == 6, lines
    assert lines["slab mounts"] == "ok  slab mounts: 1 mounted, each on its own dir"

    stray = tmp_path / "stray"
    stray.mkdir()
    name = slab_at(pod)
    node.run("mount", f"/dev/mapper/{VOLUME_GROUP.replace('-', '--')}-{name.replace('-', '--')}", str(stray))
    try:
        sick = admin("doctor", "--json")
        assert sick.returncode == 1
        (failed,) = [c for c in json.loads(sick.stdout)["checks"] if not c["ok"]]
        assert failed["name"] == "slab mounts"
        assert failed["detail"] == f"{name} is mounted on {stray} but recorded for {pod.dir}"
    finally:
        node.run("umount", str(stray))
    assert kubelet.unmount(pod).ok
    check_pool()
