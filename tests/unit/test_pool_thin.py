"""pool.py in thin mode: snapshots of the warmest slab, the high-water mark, surplus free slabs,
and the refusal of a volume group laid out for the other mode."""

from __future__ import annotations

import pytest

from flexdriver.errors import BadRequest, ConfigError, PoolExhausted
from flexdriver.pool import (
    MIB,
    THIN_METADATA_HIGH_WATER,
    Action,
    Provisioning,
    State,
    ThinPool,
    all_tags,
    check_provisioning,
    plan_mount,
    slab_from_tags,
    surplus_free,
)

from .test_pool import GONE_DIR, MY_DIR, OTHER_DIR, facts, free, make_pool, names, slab, used, want

POOL_MB = 100 * 1024


def thin(data_used: float = 0.1, metadata_used: float = 0.1, data_mb: int = POOL_MB) -> ThinPool:
    return ThinPool(
        name="thinpool", data_bytes=data_mb * MIB, data_used_bytes=int(data_used * data_mb * MIB),
        metadata_bytes=256 * MIB, metadata_used_bytes=int(metadata_used * 256 * MIB),
    )


def thin_pool(*slabs, **kw):
    return make_pool(*slabs)._replace(thin_pool=thin(**kw))


def test_a_warm_slab_is_snapshotted_never_handed_out_itself():
    older, warmest = free("older", 10, usage_permille=100), free("warmest", 20, usage_permille=100)
    plan = plan_mount(thin_pool(older, warmest), want(), facts())
    assert plan.action is Action.SNAPSHOT
    assert plan.slab.name == "warmest"
    assert plan.remove == ()


def test_every_pod_of_a_burst_gets_a_snapshot_of_the_same_warm_slab():
    warm = free("warm", 20, usage_permille=100)
    # Earlier pods of the burst hold snapshots of it, claimed or mounted.
    first = slab("snap-1", State.CLAIMED, mount_dir=OTHER_DIR, usage_permille=100)._replace(origin="warm")
    plan = plan_mount(thin_pool(warm, first), want(), facts(mounted=[first]))
    assert (plan.action, plan.slab.name) == (Action.SNAPSHOT, "warm")


def test_no_warm_slab_of_the_key_makes_a_new_thin_volume_of_the_virtual_size():
    plan = plan_mount(thin_pool(free("xfs", 20, fs="xfs", usage_permille=1)), want(size_mb=4096), facts())
    assert plan.action is Action.CREATE
    assert plan.size_bytes == 4096 * MIB
    # The volume group has no free extents in thin mode: the thin pool holds them all.


def test_a_warm_slab_over_the_usage_threshold_is_not_snapshotted():
    plan = plan_mount(thin_pool(free("full", 20, usage_permille=900)), want(), facts())
    assert plan.action is Action.CREATE


def test_the_dirs_own_slab_is_resumed_as_in_thick_mode():
    mine = used("mine", MY_DIR)
    plan = plan_mount(thin_pool(mine, free("warm", 20, usage_permille=1)), want(), facts())
    assert (plan.action, plan.slab.name) == (Action.RESUME, "mine")


def test_a_snapshot_claimed_by_a_dead_try_is_carried_on_as_a_reuse():
    claimed = slab("snap", State.CLAIMED, mount_dir=MY_DIR, usage_permille=100)._replace(origin="warm")
    plan = plan_mount(thin_pool(claimed, free("warm", 20, usage_permille=100)), want(), facts())
    assert (plan.action, plan.slab.name) == (Action.REUSE, "snap")


def test_above_the_high_water_mark_garbage_goes_first():
    doomed = slab("doomed", State.DOOMED)
    plan = plan_mount(thin_pool(doomed, free("lru", 1, usage_permille=1), data_used=0.9), want(), facts())
    assert plan.action is Action.MAKE_ROOM
    assert names(plan.remove) == ["doomed"]
    assert plan.evicted == ()


def test_above_the_high_water_mark_free_slabs_go_one_at_a_time_least_recent_first_origin_last():
    origin = free("origin", 5, usage_permille=1)  # the key's warmest, though older than `other`
    lru = free("lru", 1, usage_permille=1, size_mb=2048)
    other = free("other", 9, usage_permille=1, fs="xfs")
    pool = thin_pool(origin, lru, other, data_used=0.85)
    plan = plan_mount(pool, want(), facts())
    assert (plan.action, names(plan.remove), names(plan.evicted)) == (Action.MAKE_ROOM, ["lru"], ["lru"])
    plan = plan_mount(thin_pool(origin, other, data_used=0.85), want(), facts())
    assert names(plan.remove) == ["other"]
    plan = plan_mount(thin_pool(origin, data_used=0.85), want(), facts())
    assert names(plan.remove) == ["origin"]


def test_a_custom_high_water_mark_applies():
    pool = thin_pool(free("warm", 5, usage_permille=1), data_used=0.6)
    assert plan_mount(pool, want(), facts()).action is Action.SNAPSHOT
    assert plan_mount(pool, want(), facts(), high_water=0.5).action is Action.MAKE_ROOM


def test_above_the_high_water_mark_with_nothing_to_remove_the_mount_is_refused():
    running = used("running", OTHER_DIR)
    with pytest.raises(PoolExhausted, match=r"90% of its data is used \(high-water mark 80%\).*nothing was created"):
        plan_mount(thin_pool(running, data_used=0.9), want(), facts(mounted=[running]))


def test_slabs_in_use_are_never_evicted_to_make_room():
    mounted = used("theirs", OTHER_DIR)
    orphan = used("orphan", GONE_DIR)  # its pod is gone: it may go
    plan = plan_mount(thin_pool(mounted, orphan, data_used=0.95), want(), facts(mounted=[mounted]))
    assert names(plan.remove) == ["orphan"]


def test_thin_metadata_past_its_limit_refuses_before_it_can_fill():
    used_fraction = THIN_METADATA_HIGH_WATER + 0.01
    with pytest.raises(PoolExhausted, match="of its metadata is used"):
        plan_mount(thin_pool(metadata_used=used_fraction), want(), facts())
    plan = plan_mount(thin_pool(free("warm", 5, usage_permille=1), metadata_used=used_fraction), want(), facts())
    assert plan.action is Action.MAKE_ROOM


def test_a_slab_bigger_than_the_whole_thin_pool_is_a_bad_request():
    with pytest.raises(BadRequest, match="larger than thin pool vg-ax/thinpool"):
        plan_mount(thin_pool(data_mb=1024), want(size_mb=2048), facts())


def test_surplus_free_slabs_of_the_key_beyond_keep_go_oldest_first():
    kept = free("kept", 50, usage_permille=1)
    pool = thin_pool(
        kept, free("a", 10), free("b", 30), free("c", 20), free("xfs", 1, fs="xfs"), free("big", 2, size_mb=2048),
        used("busy", OTHER_DIR),
    )
    assert names(surplus_free(pool, kept, keep=2)) == ["a", "c"]
    assert names(surplus_free(pool, kept, keep=4)) == []
    assert names(surplus_free(pool, kept, keep=1)) == ["a", "c", "b"]


def test_surplus_counts_the_kept_slab_even_before_the_report_shows_it_free():
    kept = free("kept", 50)
    pool = thin_pool(used("kept", MY_DIR), free("a", 10), free("b", 30))
    assert names(surplus_free(pool, kept, keep=2)) == ["a"]


def test_origin_is_an_identity_tag_that_survives_the_round_trip():
    snap = slab("snap", State.CLAIMED, mount_dir=MY_DIR, usage_permille=120)._replace(origin="slab-warm")
    back = slab_from_tags("snap", snap.size_bytes, all_tags(snap), device=snap.device, active=True)
    assert back.origin == "slab-warm"
    assert back == snap


def test_a_thin_config_on_a_thick_volume_group_is_refused_with_what_to_do():
    with pytest.raises(ConfigError, match=r"prepare --thin.*nothing was changed|nothing was changed.*prepare --thin"):
        check_provisioning(make_pool(free("warm", 1)), Provisioning.THIN)


def test_a_thick_config_on_a_thin_volume_group_is_refused():
    with pytest.raises(ConfigError, match="provisioning = thick, but volume group vg-ax holds thin pool thinpool"):
        check_provisioning(thin_pool(), Provisioning.THICK)


def test_matching_layouts_pass():
    check_provisioning(make_pool(), Provisioning.THICK)
    check_provisioning(thin_pool(), Provisioning.THIN)


def test_a_snapshot_of_an_unmeasured_slab_is_to_be_measured_first():
    plan = plan_mount(thin_pool(free("warm", 20)), want(), facts())
    assert (plan.action, plan.measure) == (Action.SNAPSHOT, True)
    assert plan_mount(thin_pool(free("warm", 20, usage_permille=100)), want(), facts()).measure is False


def test_an_empty_volume_group_with_stray_volumes_is_refused_for_thin_naming_them():
    pool = make_pool()._replace(other_volumes=("lvol0",))
    with pytest.raises(ConfigError, match=r"not slabs \(lvol0\)"):
        check_provisioning(pool, Provisioning.THIN)
