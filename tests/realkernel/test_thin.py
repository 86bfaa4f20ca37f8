"""Thin provisioning (provisioning = thin) on the real kernel: every pod of a burst starts from
the one warm slab, each on a copy-on-write snapshot of its own with a filesystem UUID of its own;
the usage rule and surplus free slabs; space a pod deleted goes back to the pool; a full pool fails
writes at once, refuses new mounts cleanly, and recovers on its own; a crash at each new step."""

import os
import re
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from . import node
from .conftest import CONFIG_PATH, node_config
from .node import Pod, check_pool, read_marker, slab_at, slabs, thin_pool_figures, write_marker
from .test_admin import ADMIN, admin
from .test_crash import crash_mount, crashed_call

MIB = 1 << 20
CACHE_MB = 96  # the "image" the first pod leaves in its slab


def configure(**keys) -> None:
    with open(CONFIG_PATH, "w") as handle:
        handle.write(node_config(**keys))


@pytest.fixture
def thin(kubelet):
    configure(provisioning="thin")
    return kubelet


def all_at_once(fn, pods):
    with ThreadPoolExecutor(max_workers=len(pods)) as pool:
        return list(pool.map(fn, pods))


def write_file(pod: Pod, name: str, mib: int) -> None:
    chunk = os.urandom(MIB)
    with open(os.path.join(pod.dir, name), "wb") as handle:
        for _ in range(mib):
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())


def warm_slab(kubelet, size_mb=512, fs_type="ext4") -> tuple:
    """A first pod leaves a cache (a marker and CACHE_MB of data) and ends; its slab is free."""
    first = Pod(size_mb=size_mb, fs_type=fs_type)
    assert kubelet.mount(first).ok
    write_marker(first, "cache-v1")
    write_file(first, "image.tar", CACHE_MB)
    name = slab_at(first)
    assert kubelet.unmount(first).ok
    assert slabs()[name].state == "free"
    return first, name


def test_a_burst_of_pods_all_start_warm_each_on_its_own_snapshot(thin):
    _, origin = warm_slab(thin)
    after_one = thin_pool_figures()["data_used_bytes"]
    burst = [Pod(size_mb=512) for _ in range(4)]
    replies = all_at_once(thin.mount, burst)
    assert all(r.ok for r in replies), [r.message for r in replies if not r.ok]
    check_pool(running=burst)
    names = [slab_at(p) for p in burst]
    assert len(set(names)) == 4 and origin not in names, "each pod its own snapshot, never the warm slab"
    pool = slabs()
    assert all(pool[n].tags.get("ax.origin") == origin for n in names)
    assert pool[origin].state == "free"
    assert all(read_marker(p) == "cache-v1" for p in burst), "every pod of the burst starts warm"
    assert all(os.path.getsize(os.path.join(p.dir, "image.tar")) == CACHE_MB * MIB for p in burst)
    uuids = [node.filesystem_uuid(pool[n].device) for n in names + [origin]]
    assert len(set(uuids)) == 5, f"filesystem UUIDs shared: {uuids}"
    # The burst shares the cache's blocks: five copies of it cost about one.
    assert thin_pool_figures()["data_used_bytes"] <= 1.3 * after_one
    # Copy-on-write: what one pod writes, no other sees.
    write_marker(burst[0], "changed by the first pod")
    assert [read_marker(p) for p in burst[1:]] == ["cache-v1"] * 3
    replies = all_at_once(thin.unmount, burst)
    assert all(r.ok for r in replies), [r.message for r in replies if not r.ok]
    check_pool()
    free = [s for s in slabs().values() if s.state == "free"]
    assert len(free) == 2, "thin_keep_free (2) free slabs of the key are kept, the warmest"


def thin_ids() -> dict:
    out = node.run("lvs", "--noheadings", "--separator", "|", "-o", "lv_name,thin_id", node.VOLUME_GROUP).stdout
    rows = [line.strip().split("|") for line in out.splitlines() if line.strip()]
    return {name: int(thin_id) for name, thin_id in rows if thin_id.strip()}


def kernel_thin_pool() -> str:
    """The device-mapper name of the kernel's thin-pool target (its -tpool layer while thin
    volumes are active), which takes the pool's messages."""
    names = node.run("dmsetup", "info", "-c", "--noheadings", "-o", "name").stdout.split()
    (tpool,) = [name for name in names if name.endswith("-thinpool-tpool")]
    return tpool


def test_a_thin_device_a_killed_lvcreate_left_in_the_pool_does_not_block_the_next_snapshot(thin):
    # What an lvcreate killed between its message to the kernel's pool and LVM's commit leaves:
    # the pool has a thin device with the id LVM will choose next, and no LV has it. Made here
    # with the same message LVM sends, so the state is exact rather than left to a kill's timing.
    _, origin = warm_slab(thin)
    ids = thin_ids()
    orphan = max(ids.values()) + 1
    tpool = kernel_thin_pool()
    node.run("dmsetup", "message", tpool, "0", f"create_snap {orphan} {ids[origin]}")
    pod = Pod(size_mb=512)
    reply = thin.mount(pod)
    assert reply.ok, reply.message
    name = slab_at(pod)
    assert slabs()[name].tags.get("ax.origin") == origin and read_marker(pod) == "cache-v1"
    # LVM chose the orphan's id again: the driver deleted the orphan first, and the pod's
    # snapshot is a new device with that id, not the one left behind.
    assert thin_ids()[name] == orphan
    assert thin.unmount(pod).ok
    check_pool()


def pool_transaction_ids(tpool: str) -> tuple:
    """(LVM's, the kernel's) transaction id of the thin pool: LVM's metadata and the pool's own."""
    lvm = node.run("lvs", "--noheadings", "-o", "transaction_id", f"{node.VOLUME_GROUP}/thinpool").stdout.strip()
    kernel = node.run("dmsetup", "status", tpool).stdout.split()[3]
    return int(lvm), int(kernel)


def test_a_create_message_a_killed_lvcreate_left_queued_does_not_block_the_next_snapshot(thin, tmp_path):
    # What an lvcreate killed after LVM committed its new LV, with the pool's create message
    # queued in the metadata, and after the pool made the device, but before the pool's
    # transaction id was moved on: every later lvcreate sends the queued message again and the
    # pool refuses it. Made here exactly: a snapshot LVM completed, its message put back in the
    # metadata, and the pool's transaction id put back one.
    _, origin = warm_slab(thin)
    killed = "killed-snapshot"
    node.run("lvcreate", "--yes", "--snapshot", "--setactivationskip", "n", "--activate", "y", "--name", killed,
             f"{node.VOLUME_GROUP}/{origin}")
    killed_id = thin_ids()[killed]
    tpool = kernel_thin_pool()
    lvm_id, kernel_id = pool_transaction_ids(tpool)
    assert lvm_id == kernel_id
    backup = tmp_path / "vg.txt"
    node.run("vgcfgbackup", "--file", str(backup), node.VOLUME_GROUP)
    text, queued = re.subn(r'(type = "thin-pool"\n(?:.*\n)*?\s*zero_new_blocks = \d+\n)',
                           rf'\1message1 {{\ncreate = "{killed}"\n}}\n', backup.read_text(), count=1)
    assert queued == 1
    backup.write_text(text)
    node.run("dmsetup", "message", tpool, "0", f"set_transaction_id {kernel_id} {kernel_id - 1}")
    node.run("vgcfgrestore", "--yes", "--force", "--file", str(backup), node.VOLUME_GROUP)
    assert pool_transaction_ids(tpool) == (lvm_id, lvm_id - 1)
    refused = node.run("lvcreate", "--yes", "--snapshot", "--name", "probe", f"{node.VOLUME_GROUP}/{origin}",
                       check=False)
    assert refused.returncode != 0 and "with queued messages" in refused.stderr, "the state the kill leaves"
    pod = Pod(size_mb=512)
    reply = thin.mount(pod)
    assert reply.ok, reply.message
    assert slabs()[slab_at(pod)].tags.get("ax.origin") == origin and read_marker(pod) == "cache-v1"
    # The queued message was done: the pool's id moved on, and the killed call's device is kept
    # as the LV that has it, not deleted.
    lvm_after, kernel_after = pool_transaction_ids(tpool)
    assert lvm_after == kernel_after == lvm_id + 1 and thin_ids()[killed] == killed_id
    assert thin.unmount(pod).ok
    node.run("lvremove", "--yes", f"{node.VOLUME_GROUP}/{killed}")
    check_pool()


def test_xfs_snapshots_mount_side_by_side_with_uuids_of_their_own(thin):
    warm_slab(thin, size_mb=320, fs_type="xfs")
    pods = [Pod(size_mb=320, fs_type="xfs") for _ in range(2)]
    for pod in pods:  # xfs refuses to mount a second filesystem with a UUID already mounted
        reply = thin.mount(pod)
        assert reply.ok, reply.message
        assert read_marker(pod) == "cache-v1"
    check_pool(running=pods)
    for pod in pods:
        assert thin.unmount(pod).ok
    check_pool()


def test_the_usage_rule_holds_and_what_a_pod_deleted_goes_back_to_the_pool(thin):
    _, origin = warm_slab(thin)
    pod = Pod(size_mb=512)
    assert thin.mount(pod).ok
    before = thin_pool_figures()["data_used_bytes"]
    write_file(pod, "scratch", 256)
    assert thin_pool_figures()["data_used_bytes"] >= before + 200 * MIB
    os.unlink(os.path.join(pod.dir, "scratch"))
    name = slab_at(pod)
    assert thin.unmount(pod).ok
    assert slabs()[name].state == "free"
    # The unmount trimmed the pod's volume: the 256 MiB it deleted are the pool's again.
    after = thin_pool_figures()["data_used_bytes"]
    assert after <= before + 32 * MIB, (after - before, node.log_lines()[-1])
    full = Pod(size_mb=512)
    assert thin.mount(full).ok
    node.fill(full, 0.7)
    name = slab_at(full)
    assert thin.unmount(full).ok
    assert name not in slabs(), "a slab more than half full is deleted, in thin mode as in thick"
    check_pool()


def test_a_full_pool_fails_writes_at_once_refuses_mounts_cleanly_and_recovers_by_itself(thin):
    keeper = Pod(size_mb=256)
    assert thin.mount(keeper).ok
    write_marker(keeper, "keeper's data")
    assert thin_pool_figures()["error_when_full"]
    pool_mb = thin_pool_figures()["size_bytes"] // MIB
    hog = Pod(size_mb=pool_mb - 16)  # with the keeper's, more virtual space than the pool has
    assert thin.mount(hog).ok
    # The hog writes past the pool's end: its writes fail with an error (no queueing).
    written = subprocess.run(
        ["dd", "if=/dev/zero", f"of={hog.dir}/fill", "bs=1M", f"count={pool_mb}", "oflag=direct", "status=none"],
        capture_output=True, text=True, timeout=900,
    )
    assert written.returncode != 0, "writing past a full thin pool must fail"
    assert "error" in written.stderr.lower() or "no space" in written.stderr.lower(), written.stderr
    # No new slab while the pool is over its high-water mark with nothing free to evict.
    late = Pod(size_mb=256)
    refused = thin.mount(late)
    assert not refused.ok and "high-water mark" in refused.message, refused.message
    assert slab_at(late) is None and len(slabs()) == 2
    assert read_marker(keeper) == "keeper's data"
    # The hog's volume is over half full: deleted when it ends, and mounts work again.
    name = slab_at(hog)
    assert thin.unmount(hog).ok
    assert name not in slabs()
    assert thin.mount_retrying(late).ok
    check_pool(running=[keeper, late])
    assert read_marker(keeper) == "keeper's data"
    for pod in (keeper, late):
        assert thin.unmount(pod).ok
    check_pool()


def test_a_thin_config_on_a_thick_volume_group_is_refused_until_prepare_thin(kubelet):
    pod = Pod(size_mb=128)
    assert kubelet.mount(pod).ok  # the default config: a thick volume group
    assert kubelet.unmount(pod).ok
    before = slabs()
    configure(provisioning="thin")
    refused = kubelet.mount(Pod(size_mb=128))
    assert not refused.ok
    assert "provisioning = thin" in refused.message and "prepare --thin" in refused.message
    assert slabs() == before
    # What the message says to do, on the drained node: the free slab goes, the thin pool comes.
    switched = subprocess.run([ADMIN, "prepare", "--thin", "--yes"], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, env=node.KUBELET_ENV)
    assert switched.returncode == 0, switched.stderr
    assert "is now thin: deleted 1 free slab(s)" in switched.stdout
    assert slabs() == {} and thin_pool_figures()["error_when_full"]
    pod = Pod(size_mb=128)
    assert kubelet.mount(pod).ok
    assert kubelet.unmount(pod).ok
    check_pool()


@pytest.mark.parametrize("step", ["mount-after-snapshot", "mount-after-new-uuid", "mount-after-mount"])
def test_a_snapshot_mount_killed_at_each_step_is_completed_warm(thin, step):
    _, origin = warm_slab(thin)
    pod = Pod(size_mb=512)
    crash_mount(thin, pod, step)
    assert thin.mount_retrying(pod, attempts=2).ok
    assert read_marker(pod) == "cache-v1"
    names = set(slabs())
    assert names == {origin, slab_at(pod)}, "the retry carries on with the snapshot the killed call made"
    check_pool(running=[pod])
    assert thin.unmount(pod).ok
    check_pool()


def test_an_unmount_killed_after_its_trim_is_completed_by_the_retry(thin):
    warm_slab(thin)
    pod = Pod(size_mb=512)
    assert thin.mount(pod).ok
    name = slab_at(pod)
    crashed_call(thin, "unmount", pod.dir, env={"AX_VOL_PLUGIN_FAILPOINTS": "unmount-after-trim"})
    assert thin.unmount(pod).ok
    assert slabs()[name].state == "free"
    check_pool()


def test_gc_and_evict_on_a_thin_node_touch_only_what_the_driver_would(thin):
    _, origin = warm_slab(thin)
    healthy = Pod(size_mb=512)
    assert thin.mount(healthy).ok
    # A pod on a snapshot whose mount was removed behind the driver's back, its pod dir deleted.
    lost = Pod(size_mb=512)
    assert thin.mount(lost).ok
    lost_name = slab_at(lost)
    write_file(lost, "build.tar", 64)  # blocks of its own, not shared with the cache
    node.run("umount", lost.dir)
    shutil.rmtree(lost.pod_dir)
    # A snapshot mount killed after the snapshot was made, and its pod then deleted.
    crashed = Pod(size_mb=512)
    os.makedirs(crashed.dir, mode=0o750)
    proc = thin.start("mount", crashed.dir, crashed.options(), env={"AX_VOL_PLUGIN_FAILPOINTS": "mount-after-snapshot"})
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    (crashed_name,) = set(slabs()) - {origin, slab_at(healthy), lost_name}
    shutil.rmtree(crashed.pod_dir)
    thin.delete_pod(crashed)

    done = admin("gc", "--yes")
    assert done.returncode == 0, done.stderr
    assert f"freed {lost_name}: back in the pool" in done.stdout and crashed_name in done.stdout
    after = check_pool(running=[healthy])
    assert after[lost_name].state == "free" and after[origin].state == "free"
    assert after[origin].tags.get("ax.origin") is None and after[lost_name].tags["ax.origin"] == origin

    # Evict every free slab: the pod's snapshot and the thin pool stay; their blocks go back.
    before = thin_pool_figures()["data_used_bytes"]
    evicted = admin("evict", "--keep", "0", "--yes")
    assert evicted.returncode == 0, evicted.stderr
    after = check_pool(running=[healthy])
    assert set(after) == {slab_at(healthy)}
    figures = thin_pool_figures()
    assert figures["error_when_full"]
    # The cache's blocks stay (the running pod's snapshot holds them); what only the evicted
    # snapshots held is given back.
    assert before - figures["data_used_bytes"] >= 60 * MIB, (before, figures)
    assert read_marker(healthy) == "cache-v1"
    assert thin.unmount(healthy).ok
    check_pool()


def test_a_thin_ext4_volume_and_its_snapshot_provision_no_zero_filled_inode_tables(thin):
    # A 1.5 GiB ext4 has 24 MiB of inode tables, which mkfs leaves for the kernel to zero in the
    # background after mount (starting within 5 s, a group at a time): on a thin volume, where
    # they already read as zeros, that would provision 24 MiB of zeros per volume and snapshot.
    idle_s = 20
    names = []
    for pod in (Pod(size_mb=1536), Pod(size_mb=1536)):  # a new volume, then a snapshot of it
        assert thin.mount(pod).ok
        names.append(slab_at(pod))
        mounted = thin_pool_figures()["data_used_bytes"]
        time.sleep(idle_s)
        grown = thin_pool_figures()["data_used_bytes"] - mounted
        assert grown < 2 * MIB, f"{grown / MIB:.1f} MiB provisioned in {idle_s} s by an idle filesystem"
        assert thin.unmount(pod).ok
    assert slabs()[names[1]].tags.get("ax.origin") == names[0]
    check_pool()
