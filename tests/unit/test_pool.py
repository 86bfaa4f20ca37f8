"""pool.py: the tag schema and the pure mount/release policy."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flexdriver.errors import BadRequest, Busy, PoolExhausted
from flexdriver.pool import (
    MIB,
    Action,
    Condition,
    Facts,
    Kind,
    Pool,
    Release,
    Slab,
    State,
    Want,
    all_tags,
    condition,
    decode_dir,
    encode_dir,
    metadata_headroom,
    plan_mount,
    plan_release,
    round_to_extents,
    slab_from_tags,
    state_tags,
    usage_fraction,
)

EXTENT = 4 * MIB
MY_DIR = "/var/lib/kubelet/pods/1111-aaaa/volumes/ax~vol_plugin/docker"
OTHER_DIR = "/var/lib/kubelet/pods/2222-bbbb/volumes/ax~vol_plugin/docker"
GONE_DIR = "/var/lib/kubelet/pods/3333-cccc/volumes/ax~vol_plugin/docker"
ME_DEAD = "boot:100:1"
SOMEONE_ALIVE = "boot:200:2"

_devices = itertools.count(1)


def slab(
    name: str,
    state: State = State.FREE,
    size_mb: int = 1024,
    fs: str = "ext4",
    kind: Kind = Kind.GRAPH,
    mount_dir=None,
    creator: str = "",
    released_at: int = 0,
    mounted: bool = False,
    usage_permille: int | None = None,
) -> Slab:
    """A slab with its own device number; `mounted` only matters through Facts (see facts())."""
    return Slab(
        name=name,
        size_bytes=size_mb * MIB,
        size_mb=size_mb,
        fs_type=fs,
        kind=kind,
        state=state,
        mount_dir=mount_dir,
        creator=creator,
        released_at=released_at,
        device=(253, next(_devices)),
        active=True,
        usage_permille=usage_permille,
    )


def used(name: str, mount_dir: str, **kw) -> Slab:
    return slab(name, State.USED, mount_dir=mount_dir, **kw)


def free(name: str, released_at: int, **kw) -> Slab:
    return slab(name, State.FREE, released_at=released_at, **kw)


def make_pool(*slabs: Slab, vg_size_mb: int = 100 * 1024, vg_free_mb: int = 0) -> Pool:
    return Pool("vg-ax", vg_size_mb * MIB, vg_free_mb * MIB, EXTENT, tuple(slabs))


def facts(mounted=(), live=(SOMEONE_ALIVE,), gone=(GONE_DIR,)) -> Facts:
    return Facts(
        mounted_devices=frozenset(s.device for s in mounted),
        live_creators=frozenset(live),
        gone_owners=frozenset(gone),
    )


def want(size_mb: int = 1024, fs: str = "ext4", kind: Kind = Kind.GRAPH, mount_dir: str = MY_DIR) -> Want:
    return Want(mount_dir=mount_dir, kind=kind, size_mb=size_mb, fs_type=fs)


def names(slabs) -> list:
    return [s.name for s in slabs]


# ---- tags --------------------------------------------------------------------------------

# LVM allows only these characters in a tag (and `lvs` separates tags with commas).
LVM_TAG = re.compile(r"[A-Za-z0-9_+.\-/=!:&#]{1,1024}")

odd_dirs = st.one_of(
    st.none(),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=60),
    st.sampled_from(["/a b/c,d", "/x=y/ä/日本", "/tab\there", "/new\nline", "/-leading", "/ax.slab", "/trailing/"]),
)
slabs_strategy = st.builds(
    Slab,
    name=st.from_regex(r"slab-[0-9a-f]{12}", fullmatch=True),
    size_bytes=st.integers(1, 1 << 50),
    size_mb=st.integers(1, 1 << 30),
    fs_type=st.sampled_from(["ext4", "xfs"]),
    kind=st.sampled_from(Kind),
    state=st.sampled_from(State),
    mount_dir=odd_dirs,
    pod_uid=st.one_of(st.just(""), st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True)),
    creator=st.one_of(st.just(""), st.from_regex(r"[0-9a-f-]{36}:[1-9][0-9]{0,6}:[0-9]{1,12}", fullmatch=True)),
    released_at=st.integers(0, 1 << 40),
)


@given(slabs_strategy)
def test_tags_round_trip_to_the_same_slab(original):
    assert slab_from_tags(original.name, original.size_bytes, all_tags(original)) == original


@given(slabs_strategy)
def test_every_tag_is_a_valid_lvm_tag(original):
    for tag in all_tags(original):
        assert LVM_TAG.fullmatch(tag), tag


@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_dir_encoding_round_trips(path):
    assert decode_dir(encode_dir(path)) == path


def test_device_and_active_come_from_the_caller_not_the_tags():
    tags = all_tags(slab("slab-1"))
    found = slab_from_tags("slab-1", 5 * MIB, tags, device=(253, 7), active=True)
    assert (found.device, found.active, found.size_bytes) == ((253, 7), True, 5 * MIB)


def test_exact_tags_of_a_used_slab():
    s = Slab("slab-1", MIB, 1024, "xfs", Kind.GRAPH, State.USED, mount_dir="/d", pod_uid="p-1")
    assert all_tags(s) == {
        "ax.slab", "ax.type=graph", "ax.fs=xfs", "ax.size_mb=1024", "ax.scope=node", "ax.state=used",
        f"ax.dir={encode_dir('/d')}", "ax.pod=p-1",
    }
    assert state_tags(s) == {"ax.state=used", f"ax.dir={encode_dir('/d')}", "ax.pod=p-1"}


VALID = ["ax.slab", "ax.state=free", "ax.type=graph", "ax.fs=ext4", "ax.size_mb=1024", "ax.released=5"]


def test_valid_tags_give_a_slab():
    found = slab_from_tags("slab-1", 1024 * MIB, VALID)
    assert (found.state, found.kind, found.fs_type, found.size_mb, found.released_at) == (
        State.FREE, Kind.GRAPH, "ext4", 1024, 5,
    )
    assert found.mount_dir is None


@pytest.mark.parametrize(
    "tags",
    [
        pytest.param([t for t in VALID if t != "ax.slab"], id="not-a-slab"),
        pytest.param([], id="no-tags"),
        pytest.param(["other.tag", "ax.state=free"], id="foreign-tags"),
        pytest.param([t for t in VALID if not t.startswith("ax.state")], id="no-state"),
        pytest.param([t for t in VALID if not t.startswith("ax.type")], id="no-type"),
        pytest.param([t for t in VALID if not t.startswith("ax.fs")], id="no-fs"),
        pytest.param([t for t in VALID if not t.startswith("ax.size_mb")], id="no-size"),
        pytest.param([*VALID[:1], "ax.state=half", *VALID[2:]], id="unknown-state"),
        pytest.param([*VALID[:2], "ax.type=scratch", *VALID[3:]], id="unknown-type"),
        pytest.param([*VALID[:4], "ax.size_mb=big", *VALID[5:]], id="size-not-a-number"),
        pytest.param([*VALID[:5], "ax.released=yesterday"], id="released-not-a-number"),
    ],
)
def test_non_slab_or_malformed_tags_give_none(tags):
    assert slab_from_tags("lv", MIB, tags) is None


def test_conflicting_state_tags_are_malformed():
    tags = ["ax.slab", "ax.type=graph", "ax.fs=ext4", "ax.size_mb=1024", "ax.state=free", "ax.state=used"]
    assert slab_from_tags("lv", MIB, tags) is None


def test_undecodable_dir_is_read_as_no_dir():
    tags = ["ax.slab", "ax.state=used", "ax.type=graph", "ax.fs=ext4", "ax.size_mb=1", "ax.dir=_w=="]  # b"\xff"
    assert slab_from_tags("lv", MIB, tags).mount_dir is None


# ---- condition ---------------------------------------------------------------------------


def expected_condition(state: State, kind: Kind, mounted: bool, creator_alive: bool, owner_gone: bool) -> Condition:
    """The documented meaning of each state, written out independently of pool.condition."""
    if mounted:
        return Condition.IN_USE
    return {
        State.FREE: Condition.FREE,
        State.DOOMED: Condition.GARBAGE,
        State.CREATING: Condition.BUSY if creator_alive else Condition.GARBAGE,
        State.USED: (Condition.GARBAGE if kind is Kind.ANONYMOUS else Condition.ORPHAN) if owner_gone else Condition.IN_USE,
        State.CLAIMED: (Condition.GARBAGE if kind is Kind.ANONYMOUS else Condition.ORPHAN) if owner_gone else Condition.IN_USE,
    }[state]


@pytest.mark.parametrize(
    "state,kind,mounted,creator_alive,owner_gone",
    list(itertools.product(State, Kind, [False, True], [False, True], [False, True])),
)
def test_condition_for_every_state_and_fact(state, kind, mounted, creator_alive, owner_gone):
    s = slab(
        "slab-x",
        state,
        kind=kind,
        mount_dir=GONE_DIR if owner_gone else MY_DIR,
        creator=SOMEONE_ALIVE if creator_alive else ME_DEAD,
    )
    node = facts(mounted=[s] if mounted else [])
    assert condition(s, node) is expected_condition(state, kind, mounted, creator_alive, owner_gone)


def test_a_slab_without_a_device_is_never_taken_for_mounted():
    s = slab("slab-x", State.FREE)._replace(device=None)
    assert condition(s, Facts(mounted_devices=frozenset({(253, 0)}))) is Condition.FREE


def test_spot_checks_of_condition():
    assert condition(used("a", GONE_DIR), facts()) is Condition.ORPHAN
    assert condition(used("a", GONE_DIR, kind=Kind.ANONYMOUS), facts()) is Condition.GARBAGE
    assert condition(used("a", MY_DIR), facts()) is Condition.IN_USE
    assert condition(slab("a", State.CREATING, creator=SOMEONE_ALIVE), facts()) is Condition.BUSY
    assert condition(slab("a", State.CREATING, creator=ME_DEAD), facts()) is Condition.GARBAGE
    assert condition(slab("a", State.DOOMED), facts()) is Condition.GARBAGE
    mounted_free = free("a", 5)
    assert condition(mounted_free, facts(mounted=[mounted_free])) is Condition.IN_USE


# ---- plan_mount: the dir's own slab --------------------------------------------------------


def test_resume_own_used_slab_and_clear_other_garbage():
    mine = used("mine", MY_DIR, fs="xfs", size_mb=2048)  # resumed whatever its size and filesystem
    doomed = slab("doomed", State.DOOMED, mount_dir=OTHER_DIR)
    warm = free("warm", 100)
    plan = plan_mount(make_pool(mine, doomed, warm), want(), facts())
    assert plan.action is Action.RESUME
    assert plan.slab == mine
    assert names(plan.remove) == ["doomed"]
    assert plan.evicted == ()


def test_own_slab_being_formatted_by_a_live_call_is_busy():
    mine = slab("mine", State.CREATING, mount_dir=MY_DIR, creator=SOMEONE_ALIVE)
    with pytest.raises(Busy, match="mine"):
        plan_mount(make_pool(mine, vg_free_mb=10240), want(), facts())


def test_own_half_made_slab_with_dead_creator_is_reformatted():
    mine = slab("mine", State.CREATING, mount_dir=MY_DIR, creator=ME_DEAD)
    doomed = slab("doomed", State.DOOMED)
    warm = free("warm", 100)  # a reusable slab does not beat the dir's own half-made one
    plan = plan_mount(make_pool(mine, doomed, warm), want(), facts())
    assert plan.action is Action.REFORMAT
    assert plan.slab == mine
    assert names(plan.remove) == ["doomed"]


@pytest.mark.parametrize(
    "different",
    [dict(size_mb=2048), dict(fs="xfs"), dict(kind=Kind.ANONYMOUS)],
    ids=["size", "fs", "kind"],
)
def test_own_half_made_slab_of_another_shape_is_garbage_not_reformatted(different):
    mine = slab("mine", State.CREATING, mount_dir=MY_DIR, creator=ME_DEAD, **different)
    plan = plan_mount(make_pool(mine, vg_free_mb=1024), want(), facts())
    assert plan.action is Action.CREATE
    assert names(plan.remove) == ["mine"]
    assert plan.evicted == ()


def test_other_dirs_half_made_slab_with_dead_creator_is_never_taken_over():
    theirs = slab("theirs", State.CREATING, mount_dir=OTHER_DIR, creator=ME_DEAD)
    plan = plan_mount(make_pool(theirs, vg_free_mb=1024), want(), facts())
    assert plan.action is Action.CREATE
    assert names(plan.remove) == ["theirs"]


# ---- plan_mount: the node's size cap -----------------------------------------------------


def test_a_request_above_the_cap_is_refused_before_anything_is_evicted():
    warm = [free(f"warm{i}", i, size_mb=2048) for i in range(4)]  # all of the volume group's room
    with pytest.raises(BadRequest, match="size_mb 8192 is above this node's max_size_mb 4096"):
        plan_mount(make_pool(*warm, vg_size_mb=8192), want(size_mb=8192), facts(), max_size_mb=4096)


def test_a_request_above_the_cap_is_refused_even_when_a_warm_slab_matches():
    with pytest.raises(BadRequest, match="max_size_mb 1000"):
        plan_mount(make_pool(free("warm", 5)), want(size_mb=1024), facts(), max_size_mb=1000)


def test_a_request_at_the_cap_or_with_no_cap_is_planned():
    assert plan_mount(make_pool(vg_free_mb=2048), want(size_mb=1024), facts(), max_size_mb=1024).action is Action.CREATE
    assert plan_mount(make_pool(vg_free_mb=2048), want(size_mb=1024), facts(), max_size_mb=0).action is Action.CREATE


def test_a_pods_own_slab_is_resumed_above_a_cap_lowered_since():
    mine = used("mine", MY_DIR, size_mb=4096)
    assert plan_mount(make_pool(mine), want(size_mb=4096), facts(), max_size_mb=1024).action is Action.RESUME


# ---- plan_mount: reuse -------------------------------------------------------------------


def test_reuse_picks_the_warmest_exact_match():
    candidates = [
        free("old", 100),
        free("warmest", 300),
        free("middle", 200),
        free("wrong-fs", 900, fs="xfs"),
        free("wrong-size", 900, size_mb=2048),
        free("wrong-kind", 900, kind=Kind.ANONYMOUS),
        used("in-use", OTHER_DIR),
    ]
    mounted = free("mounted", 1000)
    plan = plan_mount(make_pool(*candidates, mounted, vg_free_mb=50 * 1024), want(), facts(mounted=[mounted]))
    assert plan.action is Action.REUSE
    assert plan.slab.name == "warmest"
    assert plan.remove == () and plan.evicted == ()


def test_reuse_for_xfs_takes_only_xfs():
    plan = plan_mount(make_pool(free("ext4", 500), free("xfs", 1, fs="xfs")), want(fs="xfs"), facts())
    assert (plan.action, plan.slab.name) == (Action.REUSE, "xfs")


def test_reuse_removes_garbage_too():
    plan = plan_mount(make_pool(free("warm", 5), slab("doomed", State.DOOMED)), want(), facts())
    assert (plan.action, plan.slab.name, names(plan.remove)) == (Action.REUSE, "warm", ["doomed"])


def test_orphan_of_a_gone_pod_is_reusable():
    orphan = used("orphan", GONE_DIR)
    plan = plan_mount(make_pool(orphan), want(), facts())
    assert (plan.action, plan.slab) == (Action.REUSE, orphan)


def test_used_slab_of_a_live_pod_is_not_reusable():
    plan = plan_mount(make_pool(used("theirs", OTHER_DIR), vg_free_mb=1024), want(), facts())
    assert plan.action is Action.CREATE
    assert plan.remove == ()


def test_mounted_free_slab_is_never_reused():
    mounted = free("mounted", 5)
    plan = plan_mount(make_pool(mounted, vg_free_mb=1024), want(), facts(mounted=[mounted]))
    assert plan.action is Action.CREATE
    assert plan.remove == ()


def test_anonymous_never_reuses():
    pool = make_pool(free("graph", 5), free("anon", 6, kind=Kind.ANONYMOUS), vg_free_mb=1024)
    plan = plan_mount(pool, want(kind=Kind.ANONYMOUS), facts())
    assert plan.action is Action.CREATE
    assert plan.slab is None
    assert plan.remove == () and plan.evicted == ()


# ---- plan_mount: create, evict, reclaim --------------------------------------------------


def test_create_with_room_evicts_nothing():
    plan = plan_mount(make_pool(free("other-size", 5, size_mb=2048), vg_free_mb=1024), want(), facts())
    assert (plan.action, plan.slab, plan.remove, plan.evicted, plan.size_bytes) == (Action.CREATE, None, (), (), 1024 * MIB)


def test_create_evicts_least_recently_used_and_only_as_many_as_needed():
    newest = free("newest", 30, size_mb=2048)
    oldest = free("oldest", 10, size_mb=2048)
    middle = free("middle", 20, size_mb=2048)
    pool = make_pool(newest, oldest, middle, vg_free_mb=100)
    plan = plan_mount(pool, want(size_mb=3000), facts())  # needs 3000: 100 + 2048 + 2048 is enough
    assert plan.action is Action.CREATE
    assert names(plan.evicted) == ["oldest", "middle"]
    assert names(plan.remove) == ["oldest", "middle"]
    assert plan.size_bytes == 3000 * MIB


def test_eviction_ties_on_release_time_break_by_name():
    pool = make_pool(free("b", 7, size_mb=512), free("a", 7, size_mb=512), vg_free_mb=0)
    plan = plan_mount(pool, want(size_mb=500), facts())
    assert names(plan.evicted) == ["a"]


def test_orphans_are_evicted_before_warm_free_slabs():
    orphan = used("orphan", GONE_DIR, size_mb=512)  # released_at 0: coldest of all
    warm = free("warm", 5, size_mb=512)
    plan = plan_mount(make_pool(warm, orphan), want(size_mb=512, fs="xfs"), facts())
    assert names(plan.evicted) == ["orphan"]


def test_mounted_and_in_use_slabs_are_never_evicted():
    mounted = free("mounted", 1, size_mb=4096)
    busy = slab("busy", State.CREATING, size_mb=4096, mount_dir=OTHER_DIR, creator=SOMEONE_ALIVE)
    theirs = used("theirs", OTHER_DIR, size_mb=4096)
    evictable = free("evictable", 50, size_mb=1024)
    pool = make_pool(mounted, busy, theirs, evictable, vg_free_mb=0)
    plan = plan_mount(pool, want(size_mb=1000, fs="xfs"), facts(mounted=[mounted]))
    assert names(plan.evicted) == ["evictable"]
    assert names(plan.remove) == ["evictable"]


def test_garbage_is_removed_and_counts_as_free_space():
    doomed = slab("doomed", State.DOOMED, size_mb=512, mount_dir=OTHER_DIR)
    dead_half_made = slab("half-made", State.CREATING, size_mb=256, mount_dir=OTHER_DIR, creator=ME_DEAD)
    anonymous_orphan = used("anon-orphan", GONE_DIR, size_mb=256, kind=Kind.ANONYMOUS)
    warm = free("warm", 5, size_mb=2048)  # other size: would be evicted if garbage were not enough
    pool = make_pool(doomed, dead_half_made, anonymous_orphan, warm, vg_free_mb=0)
    plan = plan_mount(pool, want(size_mb=1024), facts())
    assert plan.action is Action.CREATE
    assert names(plan.remove) == ["doomed", "half-made", "anon-orphan"]
    assert plan.evicted == ()


def test_garbage_comes_first_then_evictions():
    doomed = slab("doomed", State.DOOMED, size_mb=512)
    warm = free("warm", 5, size_mb=2048)
    plan = plan_mount(make_pool(warm, doomed, vg_free_mb=0), want(size_mb=1024), facts())
    assert names(plan.remove) == ["doomed", "warm"]
    assert names(plan.evicted) == ["warm"]


def test_busy_slab_of_another_dir_is_left_alone():
    busy = slab("busy", State.CREATING, mount_dir=OTHER_DIR, creator=SOMEONE_ALIVE)
    plan = plan_mount(make_pool(busy, vg_free_mb=1024), want(), facts())
    assert plan.remove == ()


def test_pool_exhausted_when_even_evicting_everything_is_not_enough():
    warm = free("warm", 5, size_mb=200)
    theirs = used("theirs", OTHER_DIR, size_mb=10000)
    with pytest.raises(PoolExhausted) as caught:
        plan_mount(make_pool(warm, theirs, vg_size_mb=20000, vg_free_mb=100), want(size_mb=1024), facts())
    message = str(caught.value)
    assert "needs 1024 MiB" in message
    assert "100 MiB free" in message
    assert "200 MiB more in 1 free slab(s)" in message
    assert "vg-ax" in message


def test_pool_exhausted_reports_the_extent_rounded_need():
    with pytest.raises(PoolExhausted, match="needs 4 MiB, 0 MiB free"):
        plan_mount(make_pool(vg_free_mb=0), want(size_mb=1), facts())


def test_request_larger_than_the_volume_group_is_a_bad_request():
    with pytest.raises(BadRequest) as caught:
        plan_mount(make_pool(vg_size_mb=10240, vg_free_mb=10240), want(size_mb=10241), facts())
    assert "size_mb 10241" in str(caught.value)
    assert "vg-ax (10240 MiB in all)" in str(caught.value)


def test_request_of_exactly_the_volume_group_size_is_allowed():
    plan = plan_mount(make_pool(vg_size_mb=10240, vg_free_mb=10240), want(size_mb=10240), facts())
    assert (plan.action, plan.size_bytes) == (Action.CREATE, 10240 * MIB)


def test_bad_request_is_checked_on_the_rounded_size():
    pool = Pool("vg-ax", 10 * MIB, 10 * MIB, EXTENT, ())  # 10 MiB: rounds a 9 MiB slab up to 12
    with pytest.raises(BadRequest):
        plan_mount(pool, want(size_mb=9), facts())


@pytest.mark.parametrize(
    "size_mb,extent_mb,expected_mb",
    [(1, 4, 4), (4, 4, 4), (5, 4, 8), (1024, 4, 1024), (100, 32, 128), (1, 1, 1)],
)
def test_round_to_extents(size_mb, extent_mb, expected_mb):
    assert round_to_extents(size_mb, extent_mb * MIB) == expected_mb * MIB


def test_round_to_odd_extent_size():
    assert round_to_extents(1, 3 * MIB // 2) == 3 * MIB // 2
    assert round_to_extents(2, 3 * MIB // 2) == 3 * MIB


@given(st.integers(1, 1 << 30), st.integers(1, 1 << 30))
def test_rounded_size_is_the_smallest_whole_number_of_extents_that_fits(size_mb, extent):
    rounded = round_to_extents(size_mb, extent)
    assert rounded % extent == 0
    assert size_mb * MIB <= rounded < size_mb * MIB + extent


# ---- release -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,usage,expected",
    [
        (Kind.ANONYMOUS, 0.0, Release.DELETE),
        (Kind.ANONYMOUS, None, Release.DELETE),
        (Kind.GRAPH, 0.51, Release.DELETE),
        (Kind.GRAPH, 1.0, Release.DELETE),
        (Kind.GRAPH, 0.5, Release.KEEP),
        (Kind.GRAPH, 0.0, Release.KEEP),
        (Kind.GRAPH, None, Release.MEASURE_FIRST),
    ],
)
def test_plan_release(kind, usage, expected):
    assert plan_release(slab("s", State.USED, kind=kind, mount_dir=MY_DIR), usage, 0.5) is expected


@pytest.mark.parametrize(
    "blocks,free_blocks,avail_blocks,expected",
    [
        (1000, 1000, 1000, 0.0),  # empty
        (1000, 0, 0, 1.0),  # full
        (1000, 500, 500, 0.5),
        (1000, 400, 350, 600 / 950),  # 50 blocks reserved for root count as neither used nor available
        (0, 0, 0, 0.0),  # nothing to measure
    ],
)
def test_usage_fraction_is_computed_like_df(blocks, free_blocks, avail_blocks, expected):
    assert usage_fraction(blocks, free_blocks, avail_blocks) == pytest.approx(expected)


@pytest.mark.parametrize(
    "blocks,inodes,expected",
    [
        ((1000, 900, 900), (1000, 100, 100), 0.9),  # small files: most inodes used, few blocks
        ((1000, 100, 100), (1000, 900, 900), 0.9),  # big files: the blocks decide
        ((1000, 500, 500), (0, 0, 0), 0.5),  # no inode counts reported: blocks alone
        ((1000, 1000, 1000), (1000, 1000, 1000), 0.0),
    ],
)
def test_usage_is_the_fuller_of_blocks_and_inodes(blocks, inodes, expected):
    assert usage_fraction(*blocks, *inodes) == pytest.approx(expected)


# ---- cache scope ----------------------------------------------------------------------------


def test_reuse_only_inherits_slabs_of_the_same_cache_scope():
    other_ns = free("team-b", 900)._replace(scope="ns.team-b")
    node_wide = free("node-wide", 800)
    mine = free("team-a", 100)._replace(scope="ns.team-a")
    pool = make_pool(other_ns, node_wide, mine, vg_free_mb=50 * 1024)
    plan = plan_mount(pool, want()._replace(scope="ns.team-a"), facts())
    assert (plan.action, plan.slab.name) == (Action.REUSE, "team-a")
    plan = plan_mount(pool, want(), facts())
    assert (plan.action, plan.slab.name) == (Action.REUSE, "node-wide")


def test_a_scope_with_no_slab_of_its_own_gets_a_new_one_and_may_evict_other_scopes():
    other = free("team-b", 900)._replace(scope="ns.team-b")
    plan = plan_mount(make_pool(other, vg_size_mb=1024, vg_free_mb=0), want()._replace(scope="key.ci"), facts())
    # Space is node-wide: another scope's warm slab may be evicted, but never handed over.
    assert plan.action is Action.CREATE and names(plan.evicted) == ["team-b"]


def test_scope_tag_round_trips_and_is_part_of_the_identity():
    scoped = free("s", 5)._replace(scope="key.team_a.1")
    assert "ax.scope=key.team_a.1" in all_tags(scoped)
    assert slab_from_tags("s", scoped.size_bytes, all_tags(scoped)).scope == "key.team_a.1"


def test_slabs_made_before_scopes_existed_are_node_scoped():
    tags = {"ax.slab", "ax.type=graph", "ax.fs=ext4", "ax.size_mb=1024", "ax.state=free", "ax.released=5"}
    assert slab_from_tags("old", MIB, tags).scope == "node"


def test_usage_at_release_is_kept_in_a_free_slab_tag():
    kept = free("s", 5)._replace(usage_permille=231)
    assert "ax.usage=231" in all_tags(kept)
    assert slab_from_tags("s", kept.size_bytes, all_tags(kept)).usage_permille == 231
    assert slab_from_tags("s", kept.size_bytes, all_tags(kept) - {"ax.usage=231"}).usage_permille is None


# ---- measured before it is handed on (#14 item 5) and claimed-but-never-mounted (item 7) ----


def test_a_warm_slab_nobody_measured_is_measured_before_its_pod_gets_it():
    unmeasured = free("unmeasured", 300)
    plan = plan_mount(make_pool(unmeasured, free("measured", 100, usage_permille=200)), want(), facts())
    assert (plan.action, plan.slab.name, plan.measure) == (Action.REUSE, "unmeasured", True)
    plan = plan_mount(make_pool(free("measured", 100, usage_permille=200)), want(), facts())
    assert (plan.slab.name, plan.measure) == ("measured", False)


def test_an_orphan_is_measured_before_it_is_handed_on():
    orphan = used("orphan", GONE_DIR)
    plan = plan_mount(make_pool(orphan), want(), facts())
    assert (plan.action, plan.slab.name, plan.measure) == (Action.REUSE, "orphan", True)


def test_a_slab_known_to_be_over_the_threshold_is_never_handed_on():
    # Measured at 40% when the threshold was higher; the node now keeps slabs up to 30%.
    plan = plan_mount(make_pool(free("full", 100, usage_permille=400), vg_free_mb=2048), want(), facts(), threshold=0.3)
    assert plan.action is Action.CREATE


def test_a_dirs_claimed_slab_is_taken_up_again_as_a_reuse_checked_and_replaceable():
    claimed = slab("claimed", State.CLAIMED, mount_dir=MY_DIR, usage_permille=100)
    plan = plan_mount(make_pool(claimed, free("other", 500, usage_permille=100)), want(), facts())
    assert (plan.action, plan.slab.name, plan.measure) == (Action.REUSE, "claimed", False)


def test_release_uses_the_usage_in_the_tags_when_nothing_could_be_measured():
    claimed = slab("c", State.CLAIMED, mount_dir=MY_DIR, usage_permille=600)
    assert plan_release(claimed, None, 0.5) is Release.DELETE
    assert plan_release(claimed._replace(usage_permille=200), None, 0.5) is Release.KEEP
    assert plan_release(claimed._replace(usage_permille=None), None, 0.5) is Release.MEASURE_FIRST
    assert plan_release(claimed._replace(usage_permille=None), 0.2, 0.5) is Release.KEEP


# ---- LVM's metadata area (#14 item 3) ----------------------------------------------------------


def test_metadata_headroom_is_what_lvm_reports_free_less_a_sector_of_alignment():
    # LVM's vg_mda_free already counts only the half of the area one copy may take.
    assert metadata_headroom(516096, 1048576) == 516096 - 512
    assert metadata_headroom(None, 1048576) is None and metadata_headroom(1000, 0) is None
    assert metadata_headroom(0, 1048576) < 0


def pool_with_metadata(*slabs, headroom: int, vg_free_mb: int = 10 * 1024):
    return make_pool(*slabs, vg_free_mb=vg_free_mb)._replace(metadata_headroom_bytes=headroom)


def test_a_new_slab_is_refused_before_the_metadata_area_fills_and_nothing_is_evicted():
    in_use = used("busy", "/elsewhere")
    with pytest.raises(PoolExhausted, match="LVM metadata area is nearly full.*nothing was created or evicted"):
        plan_mount(pool_with_metadata(in_use, headroom=1500), want(), facts())


def test_free_slabs_are_evicted_least_recently_used_first_to_make_metadata_room():
    slabs = [free(f"f{i}", released_at=100 + i, size_mb=512) for i in range(4)]
    # Room for the new slab and the claims of all four: no eviction although the area is not empty.
    plan = plan_mount(pool_with_metadata(*slabs, headroom=2048 + 4 * 384), want(), facts())
    assert plan.action is Action.CREATE and plan.evicted == ()
    # Too little: the oldest free slabs go until there is enough, the newest stay.
    plan = plan_mount(pool_with_metadata(*slabs, headroom=2048), want(), facts())
    assert plan.action is Action.CREATE and names(plan.evicted) == ["f0", "f1"]


def test_a_warm_slab_is_still_handed_out_when_no_new_slab_fits_in_the_metadata():
    warm = free("warm", 100, usage_permille=100)
    plan = plan_mount(pool_with_metadata(warm, headroom=0), want(), facts())
    assert (plan.action, plan.slab.name) == (Action.REUSE, "warm")


def test_an_unknown_metadata_area_does_not_block_new_slabs():
    assert plan_mount(make_pool(vg_free_mb=2048), want(), facts()).action is Action.CREATE
