"""driver.py in thin mode, against the simulated node of test_driver: the thin pool made on an
empty volume group, snapshots handed out of the warmest slab (each with a new filesystem UUID
before its mount), trim and surplus at unmount, the high-water mark, and the refusal of a
volume group laid out for the other mode."""

from __future__ import annotations

import pytest

from flexdriver.errors import ConfigError, PoolExhausted
from flexdriver.pool import MIB, Decision, Provisioning, State, encode_dir
from flexdriver.system import filesystems
from flexdriver.system.lvm import dm_path

from .test_driver import (
    OTHER_UID,
    UID,
    VG,
    addtags,
    make_driver,
    pod_volume_dir,
    request_for,
    seeded,
    simulated_node,
)

THIN = {"provisioning": Provisioning.THIN}


@pytest.fixture
def node(tmp_path, monkeypatch):
    return simulated_node(tmp_path, monkeypatch)


def thin_driver(tmp_path, node, verb="mount", **config):
    return make_driver(tmp_path, node, verb, **THIN, **config)


def tags_of(node, name) -> set:
    return node.volumes[name]["tags"]


def test_an_empty_volume_group_gets_its_thin_pool_then_a_thin_slab(tmp_path, node):
    path = pod_volume_dir(tmp_path)
    thin_driver(tmp_path, node).mount(request_for(path))
    creates = [argv for argv in node.calls if argv[0] == "lvcreate"]
    assert creates[0][:4] == ["lvcreate", "--yes", "--type", "thin-pool"]
    assert creates[0][creates[0].index("--chunksize") + 1] == f"{64 * 1024}b"
    assert ["--zero", "y"] == creates[0][creates[0].index("--zero"):creates[0].index("--zero") + 2]
    assert node.thin_pool["error_when_full"]  # set by the lvchange right after it
    (name,) = node.volumes
    assert creates[1][creates[1].index("--virtualsize") + 1] == f"{1024 * MIB}b"
    assert creates[1][-1] == f"{VG}/thinpool"
    assert node.call("mkfs.ext4") == filesystems.mkfs_argv("ext4", dm_path(VG, name), thin=True)
    assert "metadata_csum_seed" in node.call("mkfs.ext4")
    assert "ax.state=used" in tags_of(node, name)


def test_a_warm_slab_is_snapshotted_with_a_new_uuid_before_the_mount_and_stays_free(tmp_path, node):
    node.make_thin()
    node.add(seeded("slab-warm", State.FREE, 1, released_at=200))
    path = pod_volume_dir(tmp_path)
    driver = thin_driver(tmp_path, node)
    message = driver.mount(request_for(path))
    (snapshot,) = set(node.volumes) - {"slab-warm"}
    create = node.call("lvcreate")
    claimed = {
        "ax.slab", "ax.type=graph", "ax.fs=ext4", "ax.size_mb=1024", "ax.scope=node", "ax.state=claimed",
        "ax.origin=slab-warm", "ax.usage=300", f"ax.dir={encode_dir(path)}",
        f"ax.pod={UID}",
    }
    assert create == [
        "lvcreate", "--yes", "--snapshot", "--setactivationskip", "n", "--activate", "y", "--name", snapshot,
        *addtags(claimed), f"{VG}/slab-warm",
    ]
    programs = node.programs()
    assert programs.index("tune2fs") < programs.index("mount")
    assert node.call("tune2fs") == ["tune2fs", "-U", "random", dm_path(VG, snapshot)]
    assert node.mounts[0].source == dm_path(VG, snapshot)
    assert "ax.state=used" in tags_of(node, snapshot) and "ax.origin=slab-warm" in tags_of(node, snapshot)
    assert "ax.state=free" in tags_of(node, "slab-warm")  # the warm slab itself never goes to a pod
    assert driver.record.fields["decision"] is Decision.SNAPSHOTTED
    assert "snapshot of warm slab" in message


def test_a_burst_of_pods_all_get_snapshots_of_the_one_warm_slab(tmp_path, node):
    node.make_thin()
    node.add(seeded("slab-warm", State.FREE, 1, released_at=200))
    uids = [f"{i}{UID[1:]}" for i in range(4)]
    for uid in uids:
        thin_driver(tmp_path, node).mount(request_for(pod_volume_dir(tmp_path, uid), uid=uid))
    snapshots = [n for n in node.volumes if n != "slab-warm"]
    assert len(snapshots) == 4 and len(node.mounts) == 4
    assert all("ax.origin=slab-warm" in tags_of(node, n) for n in snapshots)
    assert len({e.source for e in node.mounts}) == 4


def test_xfs_snapshots_get_a_new_uuid_from_xfs_admin(tmp_path, node):
    node.make_thin()
    warm = seeded("slab-warm", State.FREE, 1, released_at=200)._replace(fs_type="xfs")
    node.add(warm)
    thin_driver(tmp_path, node).mount(request_for(pod_volume_dir(tmp_path), fs_type="xfs"))
    (argv,) = [a for a in node.calls if a[0] == "xfs_admin"]
    assert argv[:3] == ["xfs_admin", "-U", "generate"]


def test_a_kept_slab_is_trimmed_before_its_umount_and_older_free_slabs_of_its_key_beyond_keep_go(tmp_path, node):
    node.make_thin()
    path = pod_volume_dir(tmp_path)
    for minor, released in ((1, 100), (2, 200), (3, 300)):
        node.add(seeded(f"slab-old{minor}", State.FREE, minor, released_at=released))
    node.add(seeded("slab-mine", State.USED, 9, mount_dir=path, uid=UID))
    node.mount_slab("slab-mine", path)
    node.usage = 0.2
    driver = thin_driver(tmp_path, node, verb="unmount", thin_keep_free=2)
    driver.unmount(path)
    programs = node.programs()
    assert programs.index("fstrim") < programs.index("umount")
    assert node.call("fstrim") == ["fstrim", path]
    assert programs.index("sync") < programs.index("fstrim")  # what the pod deleted last is free to trim
    # The pod's slab is the warmest now; with slab-old3 that makes two: the older ones go.
    assert set(node.volumes) == {"slab-mine", "slab-old3"}
    assert "ax.state=free" in tags_of(node, "slab-mine")
    assert driver.record.fields["surplus_deleted"] == ["slab-old1", "slab-old2"]


def test_a_slab_over_the_usage_threshold_is_deleted_without_a_trim(tmp_path, node):
    node.make_thin()
    path = pod_volume_dir(tmp_path)
    node.add(seeded("slab-mine", State.USED, 9, mount_dir=path, uid=UID))
    node.mount_slab("slab-mine", path)
    node.usage = 0.7
    thin_driver(tmp_path, node, verb="unmount").unmount(path)
    assert "fstrim" not in node.programs()
    assert node.volumes == {}


def test_above_the_high_water_mark_free_slabs_are_evicted_until_below_then_the_mount_goes_on(tmp_path, node):
    node.make_thin(data_used=0.9)
    node.thin_pool["freed_per_removal"] = 0.06
    node.add(seeded("slab-lru", State.FREE, 1, released_at=100)._replace(size_mb=2048, size_bytes=2048 * MIB))
    node.add(seeded("slab-next", State.FREE, 2, released_at=150)._replace(fs_type="xfs"))
    node.add(seeded("slab-warm", State.FREE, 3, released_at=120))
    driver = thin_driver(tmp_path, node)
    driver.mount(request_for(pod_volume_dir(tmp_path)))
    # 0.90 -> 0.84 -> 0.78: two removals, least recently used first, the would-be origin kept.
    assert driver.record.fields["made_room"] == ["slab-lru", "slab-next"]
    assert "slab-warm" in node.volumes
    assert driver.record.fields["decision"] is Decision.SNAPSHOTTED


def test_above_the_high_water_mark_with_nothing_to_evict_the_mount_is_refused_and_nothing_made(tmp_path, node):
    node.make_thin(data_used=0.95)
    path = pod_volume_dir(tmp_path, OTHER_UID)
    node.add(seeded("slab-theirs", State.USED, 1, mount_dir=path, uid=OTHER_UID))
    node.mount_slab("slab-theirs", path)
    with pytest.raises(PoolExhausted, match="95% of its data is used"):
        thin_driver(tmp_path, node).mount(request_for(pod_volume_dir(tmp_path)))
    assert "lvcreate" not in node.programs() and set(node.volumes) == {"slab-theirs"}


def test_a_thin_config_on_a_thick_volume_group_changes_nothing(tmp_path, node):
    node.add(seeded("slab-warm", State.FREE, 1, released_at=200))
    with pytest.raises(ConfigError, match="prepare --thin"):
        thin_driver(tmp_path, node).mount(request_for(pod_volume_dir(tmp_path)))
    assert [p for p in node.programs() if p != "lvs"] == []


def test_a_thick_config_on_a_thin_volume_group_changes_nothing(tmp_path, node):
    node.make_thin()
    node.add(seeded("slab-warm", State.FREE, 1, released_at=200))
    with pytest.raises(ConfigError, match="provisioning = thick"):
        make_driver(tmp_path, node).mount(request_for(pod_volume_dir(tmp_path)))
    assert [p for p in node.programs() if p != "lvs"] == []


def test_a_thin_pool_found_without_error_when_full_gets_it(tmp_path, node):
    node.make_thin(error_when_full=False)
    thin_driver(tmp_path, node).mount(request_for(pod_volume_dir(tmp_path)))
    assert node.thin_pool["error_when_full"]


def test_a_snapshot_with_a_broken_superblock_takes_its_origin_with_it(tmp_path, node):
    node.make_thin()
    node.add(seeded("slab-warm", State.FREE, 1, released_at=200))
    original_lvcreate = node._lvcreate

    def lvcreate(argv):  # every snapshot of slab-warm shows its broken filesystem
        original_lvcreate(argv)
        if "--snapshot" in argv:
            node.broken_superblocks.add(dm_path(VG, argv[argv.index("--name") + 1]))

    node._lvcreate = lvcreate
    driver = thin_driver(tmp_path, node)
    driver.mount(request_for(pod_volume_dir(tmp_path)))
    (name,) = node.volumes
    assert "ax.origin=slab-warm" not in tags_of(node, name)  # a new slab, made cold
    assert driver.record.fields["decision"] is Decision.CREATED
    assert driver.record.fields["discarded_warm"] == ["slab-warm: simulated bad superblock"]


# ---- what a review found ------------------------------------------------------------------


def test_a_snapshot_of_an_unmeasured_slab_is_measured_before_its_pod_gets_it(tmp_path, node):
    node.make_thin()
    node.add(seeded("slab-warm", State.FREE, 1, released_at=200, usage_permille=None))
    node.usage = 0.9  # the warm slab was fuller than the threshold, and nobody knew
    driver = thin_driver(tmp_path, node)
    driver.mount(request_for(pod_volume_dir(tmp_path)))
    (name,) = node.volumes
    assert "ax.origin=slab-warm" not in tags_of(node, name), "snapshot and origin deleted; a cold slab instead"
    assert driver.record.fields["decision"] is Decision.CREATED
    assert "over the usage threshold" in driver.record.fields["discarded_warm"][0]


def test_an_unusable_orphaned_origin_is_deleted_too_not_tried_forever(tmp_path, node):
    node.make_thin()
    gone = str(tmp_path / "kubelet" / "pods" / "gone-pod" / "volumes" / "ax~vol_plugin" / "docker")
    node.add(seeded("slab-orphan", State.USED, 1, mount_dir=gone, uid="gone-pod", usage_permille=None))
    node.failing.add("tune2fs")  # a dirty journal: its snapshots' UUID cannot be changed
    driver = thin_driver(tmp_path, node)
    driver.mount(request_for(pod_volume_dir(tmp_path)))
    assert "slab-orphan" not in node.volumes
    assert driver.record.fields["decision"] is Decision.CREATED


def test_a_busy_garbage_slab_does_not_stop_a_thin_create(tmp_path, node):
    node.make_thin()
    node.add(seeded("slab-doomed", State.DOOMED, 1))
    node.busy.add("slab-doomed")
    driver = thin_driver(tmp_path, node)
    driver.mount(request_for(pod_volume_dir(tmp_path)))
    assert driver.record.fields["decision"] is Decision.CREATED
    assert driver.record.fields["unremovable"] == ["slab-doomed"]


def test_above_the_high_water_mark_a_busy_garbage_slab_is_passed_over_for_free_ones(tmp_path, node):
    node.make_thin(data_used=0.9)
    node.thin_pool["freed_per_removal"] = 0.2
    node.add(seeded("slab-doomed", State.DOOMED, 1))
    node.busy.add("slab-doomed")
    node.add(seeded("slab-old", State.FREE, 2, released_at=100)._replace(fs_type="xfs"))
    driver = thin_driver(tmp_path, node)
    driver.mount(request_for(pod_volume_dir(tmp_path)))
    assert driver.record.fields["made_room"] == ["slab-old"]
    assert driver.record.fields["evicted"] == ["slab-old"]  # counted in the metrics as an eviction
    assert driver.record.fields["decision"] is Decision.CREATED


def test_an_inactive_thin_pool_is_activated_before_its_fill_is_judged(tmp_path, node):
    node.make_thin(active=False)
    node.add(seeded("slab-warm", State.FREE, 1, released_at=200))
    driver = thin_driver(tmp_path, node)
    driver.mount(request_for(pod_volume_dir(tmp_path)))
    assert node.thin_pool["active"]
    assert "slab-warm" in node.volumes, "an inactive pool is not a full one: nothing evicted"
    assert driver.record.fields["decision"] is Decision.SNAPSHOTTED
