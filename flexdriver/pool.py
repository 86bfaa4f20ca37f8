"""The slab pool's decisions, as pure functions over a snapshot. No I/O happens here.

A slab is an LVM logical volume whose whole state lives in its own LVM tags, so it cannot
disagree with LVM: an admin who removes a slab or grows the volume group tells us nothing.

    ax.slab                     membership: only LVs with this tag are ever touched
    ax.type=graph|anonymous     pooled docker graph storage, or deleted at unmount
    ax.fs=ext4|xfs              filesystem made on it
    ax.size_mb=N                the size pods asked for (the LV may be rounded up to extents)
    ax.scope=node|ns.<namespace>|key.<name>   which pods may inherit it (missing: node)
    ax.state=creating           made by lvcreate, filesystem not (yet) complete
    ax.state=claimed            a warm slab handed to the mount dir in ax.dir, not yet mounted there
    ax.state=used               formatted and mounted (or being mounted) for the mount dir in ax.dir
    ax.state=free               formatted, unmounted, waiting in the pool since ax.released
    ax.state=doomed             measured over the threshold at unmount: to be deleted
    ax.dir=<base64 path>        the mount dir that owns it (creating/used/doomed)
    ax.pod=<uid>                the owning pod, for people reading `lvs`
    ax.creator=<boot>:<pid>:<start>   the call that is formatting it (creating only)
    ax.released=<unix seconds>  when it went back to the pool (free only); LRU order
    ax.usage=<permille>         how full its filesystem was when it went back (free and claimed);
                                missing: never measured, so measured before a pod gets it
    ax.origin=<slab name>       thin mode: the warm slab this one is a snapshot of (its filesystem
                                gets a new UUID before it is first mounted)
    ax.thinpool                 thin mode: the volume group's thin pool, which holds every slab

Tag changes are single lvchange calls, which LVM commits atomically, so a slab is always in
exactly one of these states whatever instant the driver is killed at.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Iterable, Sequence

from .errors import BadRequest, Busy, ConfigError, PoolExhausted
from .record import record

MIB = 1 << 20
SLAB_TAG = "ax.slab"
THIN_POOL_TAG = "ax.thinpool"
NAME_PREFIX = "slab-"


class Provisioning(enum.Enum):
    """How a node's slabs take space: each its own extents (thick), or blocks of one thin pool,
    shared copy-on-write between a warm slab and the snapshots handed out of it (thin)."""

    THICK = "thick"
    THIN = "thin"


class State(enum.Enum):
    CREATING = "creating"
    # A claimed slab has not been mounted for its new pod yet: a retry after a crash checks it
    # again, and may replace it, as the first try would have; a used one holds the pod's data.
    CLAIMED = "claimed"
    USED = "used"
    FREE = "free"
    DOOMED = "doomed"


class Kind(enum.Enum):
    GRAPH = "graph"
    ANONYMOUS = "anonymous"


@record
class Slab:
    name: str
    size_bytes: int
    size_mb: int
    fs_type: str
    kind: Kind
    state: State
    mount_dir: str | None = None
    pod_uid: str = ""
    creator: str = ""
    released_at: int = 0
    device: tuple[int, int] | None = None  # kernel major:minor while active
    active: bool = False
    scope: str = "node"
    usage_permille: int | None = None  # measured at release; None when unknown
    origin: str = ""  # thin mode: the slab it was snapshotted from

    @property
    def known_usage(self) -> float | None:
        return None if self.usage_permille is None else self.usage_permille / 1000


def encode_dir(path: str) -> str:
    return base64.urlsafe_b64encode(path.encode()).decode()


def decode_dir(value: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(value.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def slab_from_tags(name: str, size_bytes: int, tags: Iterable[str], device=None, active=False) -> Slab | None:
    """The slab these tags describe, or None for an LV that is not (or not wholly) ours."""
    tags = frozenset(tags)
    if SLAB_TAG not in tags:
        return None
    values = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if sep:
            if values.setdefault(key, value) != value:
                return None  # two values for one key (say, two states): not ours to guess
    try:
        state = State(values["ax.state"])
        kind = Kind(values["ax.type"])
        size_mb = int(values["ax.size_mb"])
        fs_type = values["ax.fs"]
        released_at = int(values.get("ax.released", "0"))
        usage = int(values["ax.usage"]) if "ax.usage" in values else None
    except (KeyError, ValueError):
        return None
    mount_dir = decode_dir(values["ax.dir"]) if "ax.dir" in values else None
    return Slab(
        name=name,
        size_bytes=size_bytes,
        size_mb=size_mb,
        fs_type=fs_type,
        kind=kind,
        state=state,
        mount_dir=mount_dir,
        pod_uid=values.get("ax.pod", ""),
        creator=values.get("ax.creator", ""),
        released_at=released_at,
        device=device,
        active=active,
        scope=values.get("ax.scope", "node"),
        usage_permille=usage,
        origin=values.get("ax.origin", ""),
    )


def state_tags(slab: Slab) -> frozenset[str]:
    """Every tag that says where a slab is in its life (all but the fixed identity tags)."""
    tags = {f"ax.state={slab.state.value}"}
    if slab.mount_dir is not None:
        tags.add(f"ax.dir={encode_dir(slab.mount_dir)}")
    if slab.pod_uid:
        tags.add(f"ax.pod={slab.pod_uid}")
    if slab.creator:
        tags.add(f"ax.creator={slab.creator}")
    if slab.released_at:
        tags.add(f"ax.released={slab.released_at}")
    if slab.usage_permille is not None:
        tags.add(f"ax.usage={slab.usage_permille}")
    return frozenset(tags)


def identity_tags(slab: Slab) -> frozenset[str]:
    tags = {
        SLAB_TAG, f"ax.type={slab.kind.value}", f"ax.fs={slab.fs_type}", f"ax.size_mb={slab.size_mb}",
        f"ax.scope={slab.scope}",
    }
    if slab.origin:
        tags.add(f"ax.origin={slab.origin}")
    return frozenset(tags)


def all_tags(slab: Slab) -> frozenset[str]:
    return identity_tags(slab) | state_tags(slab)


class Condition(enum.Enum):
    """What a slab is, given its tags and what the node says about it right now."""

    IN_USE = "in use"  # leave it alone
    FREE = "free"  # reusable, evictable
    ORPHAN = "orphan"  # used, unmounted, its pod gone: back to the pool
    BUSY = "busy"  # being formatted by a live call
    GARBAGE = "garbage"  # half-made by a dead call, doomed, or anonymous and orphaned: delete


@record
class Facts:
    """Node facts the adapters gather for one snapshot; the policy only reads them."""

    mounted_devices: frozenset[tuple[int, int]] = frozenset()
    live_creators: frozenset[str] = frozenset()
    gone_owners: frozenset[str] = frozenset()  # mount dirs whose pod no longer exists


def condition(slab: Slab, facts: Facts) -> Condition:
    if slab.device is not None and slab.device in facts.mounted_devices:
        return Condition.IN_USE  # mounted anywhere, by anyone: never reuse or delete it
    if slab.state is State.FREE:
        return Condition.FREE
    if slab.state is State.DOOMED:
        return Condition.GARBAGE
    if slab.state is State.CREATING:
        return Condition.BUSY if slab.creator in facts.live_creators else Condition.GARBAGE
    if slab.mount_dir in facts.gone_owners:
        return Condition.GARBAGE if slab.kind is Kind.ANONYMOUS else Condition.ORPHAN
    return Condition.IN_USE


@record
class ThinPool:
    """The thin pool every slab of a thin-mode node lives in (an LV tagged ax.thinpool)."""

    name: str
    data_bytes: int
    data_used_bytes: int
    metadata_bytes: int
    metadata_used_bytes: int
    error_when_full: bool = True
    # False when LVM reported no figures (the pool is not active, or the report is a thick
    # one): then the fractions read as full, and the driver activates the pool before planning.
    known: bool = True

    @property
    def data_fraction(self) -> float:
        return self.data_used_bytes / self.data_bytes if self.data_bytes else 1.0

    @property
    def metadata_fraction(self) -> float:
        return self.metadata_used_bytes / self.metadata_bytes if self.metadata_bytes else 1.0


@record
class Pool:
    volume_group: str
    vg_size_bytes: int
    vg_free_bytes: int
    extent_bytes: int
    slabs: tuple[Slab, ...]
    # How much LVM's metadata text may still grow before every change to the volume group
    # fails (see metadata_headroom); None when LVM did not say.
    metadata_headroom_bytes: int | None = None
    thin_pool: ThinPool | None = None
    # LVs that are not slabs (the thin pool's hidden data and metadata LVs are not listed).
    other_volumes: tuple[str, ...] = ()

    @property
    def provisioning(self) -> Provisioning:
        return Provisioning.THIN if self.thin_pool is not None else Provisioning.THICK


# LVM keeps its metadata as text in a circular area on each PV, and writes a change as a new whole
# copy beside the old one: one copy may take at most half the area (less its 512-byte header).
# `vgs` reports as vg_mda_free what that half leaves beside the current copy, in whole sectors;
# a new copy also starts on a sector boundary, which may cost one more.
MDA_HEADER_BYTES = 512
SECTOR_BYTES = 512


def metadata_headroom(mda_free: int | None, mda_size: int | None) -> int | None:
    """Bytes the metadata text can still grow by, from LVM's vg_mda_free and vg_mda_size."""
    if mda_free is None or not mda_size:
        return None
    return mda_free - SECTOR_BYTES


# A slab's share of the metadata text: its LV section with a segment and its tags (about 1.3 KB
# measured, with a long kubelet mount dir in base64), rounded up. A new slab is made only while
# the text has room for it and for every free slab to be claimed (a claim adds the dir and pod
# tags, ~300 bytes): a full area would fail every lvcreate and every claim on the node.
METADATA_PER_SLAB = 2048
METADATA_PER_CLAIM = 384


@record
class Want:
    """What a mount asks the pool for."""

    mount_dir: str
    kind: Kind
    size_mb: int
    fs_type: str
    scope: str = "node"


class Action(enum.Enum):
    RESUME = "resume"  # this dir's own slab, formatted: mount it again (kubelet retry, reboot)
    REFORMAT = "reformat"  # this dir's own half-made slab, its maker dead: format it again
    REUSE = "reuse"  # a warm free slab of the same size and filesystem
    CREATE = "create"  # a new slab
    # Thin mode: a new copy-on-write snapshot of the warmest free slab of the same key; the free
    # slab itself stays in the pool, so every pod of a burst starts from the same warm cache.
    SNAPSHOT = "snapshot"
    # Thin mode: the pool is above its high-water mark; remove these (garbage, then the least
    # recently used free slabs), read the pool again and plan again.
    MAKE_ROOM = "make room"


@record
class MountPlan:
    action: Action
    slab: Slab | None = None  # for RESUME, REFORMAT, REUSE; the origin for SNAPSHOT
    remove: tuple[Slab, ...] = ()  # garbage and evictions, removed before the action
    evicted: tuple[Slab, ...] = ()  # the warm slabs among `remove`
    size_bytes: int = 0  # for CREATE: the LV size (virtual in thin mode), rounded up to whole extents
    measure: bool = False  # for REUSE: nobody measured this slab; measure it before the pod gets it


def round_to_extents(size_mb: int, extent_bytes: int) -> int:
    size = size_mb * MIB
    return -(-size // extent_bytes) * extent_bytes


def check_size_cap(size_mb: int, max_size_mb: int) -> None:
    """A node's cap on what one pod may ask for (0: none beyond the volume group), so that one pod
    cannot evict every other tenant's warm slabs by asking for the whole disk."""
    if max_size_mb and size_mb > max_size_mb:
        raise BadRequest(f"size_mb {size_mb} is above this node's max_size_mb {max_size_mb}; nothing was created or evicted")


def plan_mount(
    pool: Pool, want: Want, facts: Facts, max_size_mb: int = 0, threshold: float = 0.5, high_water: float = 0.8
) -> MountPlan:
    """What a mount does. A pod's own slab (a retry, a reboot) is mounted again whatever its size;
    anything else first passes the node's size cap. A warm slab is handed on only if it is
    known to be at most `threshold` full, or is to be measured first (MountPlan.measure). In
    thin mode `high_water` is the fraction of the thin pool's data above which no new slab is
    handed out (see _plan_thin)."""
    size_bytes = round_to_extents(want.size_mb, pool.extent_bytes)
    limit, holder = (
        (pool.thin_pool.data_bytes, f"thin pool {pool.volume_group}/{pool.thin_pool.name}")
        if pool.thin_pool is not None else (pool.vg_size_bytes, f"volume group {pool.volume_group}")
    )
    if size_bytes > limit:
        raise BadRequest(f"size_mb {want.size_mb} is larger than {holder} ({limit // MIB} MiB in all)")
    conditions = {slab.name: condition(slab, facts) for slab in pool.slabs}
    garbage = [s for s in pool.slabs if conditions[s.name] is Condition.GARBAGE]

    own = [s for s in pool.slabs if s.mount_dir == want.mount_dir and conditions[s.name] is not Condition.GARBAGE]
    own_used = [s for s in own if s.state is State.USED]
    if own_used:
        return MountPlan(Action.RESUME, own_used[0], remove=_others(garbage, own_used[0]))
    own_claimed = [s for s in own if s.state is State.CLAIMED]
    if own_claimed:
        # Claimed by an earlier try that died before mounting it: carry on where it stopped.
        return _reuse(own_claimed[0], _others(garbage, own_claimed[0]), threshold)
    own_creating = [s for s in own if s.state is State.CREATING]
    if own_creating:
        raise Busy(f"slab {own_creating[0].name} for this dir is still being formatted by another call; retry")
    half_made = [
        s for s in garbage
        if s.mount_dir == want.mount_dir and s.state is State.CREATING
        and (s.kind, s.size_mb, s.fs_type) == (want.kind, want.size_mb, want.fs_type)
    ]
    if half_made:
        return MountPlan(Action.REFORMAT, half_made[0], remove=_others(garbage, half_made[0]))

    check_size_cap(want.size_mb, max_size_mb)
    reusable = [s for s in pool.slabs if conditions[s.name] in (Condition.FREE, Condition.ORPHAN)]
    warmest = _warmest(reusable, want, threshold)
    if pool.thin_pool is not None:
        return _plan_thin(pool, pool.thin_pool, want, size_bytes, garbage, reusable, warmest, high_water, threshold)
    if warmest is not None:
        return _reuse(warmest, tuple(garbage), threshold)

    available = pool.vg_free_bytes + sum(s.size_bytes for s in garbage)
    metadata_short = _metadata_short(pool, removed=len(garbage), evicted=0)
    evicted: list[Slab] = []
    for slab in sorted(reusable, key=lambda s: (s.released_at, s.name)):  # least recently used first
        if available >= size_bytes and not metadata_short:
            break
        evicted.append(slab)
        available += slab.size_bytes
        metadata_short = _metadata_short(pool, removed=len(garbage) + len(evicted), evicted=len(evicted))
    if metadata_short:
        raise PoolExhausted(
            f"no new slab in volume group {pool.volume_group}: its LVM metadata area is nearly full "
            f"({max(pool.metadata_headroom_bytes, 0) // 1024} KiB left for {len(pool.slabs)} slabs) and no free slab "
            "is left to evict; nothing was created or evicted (kubelet will retry; warm slabs of the size "
            "asked for are still handed out)"
        )
    if available < size_bytes:
        held = sum(s.size_bytes for s in evicted)
        raise PoolExhausted(
            f"no room for a {want.size_mb} MiB slab in volume group {pool.volume_group}: "
            f"needs {size_bytes // MIB} MiB, {pool.vg_free_bytes // MIB} MiB free "
            f"and {held // MIB} MiB more in {len(evicted)} free slab(s); "
            f"nothing else can be reclaimed now, so nothing was evicted (kubelet will retry)"
        )
    return MountPlan(Action.CREATE, remove=tuple(garbage) + tuple(evicted), evicted=tuple(evicted), size_bytes=size_bytes)


def _warmest(reusable: Sequence[Slab], want: Want, threshold: float) -> Slab | None:
    """The most recently released reusable slab a pod of `want` may inherit, if any."""
    if want.kind is not Kind.GRAPH:
        return None
    matching = [
        s for s in reusable
        if s.kind is Kind.GRAPH and s.size_mb == want.size_mb and s.fs_type == want.fs_type
        and s.scope == want.scope and plan_release(s, None, threshold) is not Release.DELETE
    ]
    return max(matching, key=lambda s: (s.released_at, s.name)) if matching else None


# dm-thin keeps its mappings in the pool's metadata device; when that fills, the pool stops
# (read-only, and `lvconvert --repair` by an admin). The driver never lets it get near that: the
# metadata is sized for far more mappings than the data can hold (volume_group.thin_metadata_bytes),
# and past this fraction no slab is handed out, as past the data high-water mark.
THIN_METADATA_HIGH_WATER = 0.75


def _plan_thin(
    pool: Pool, thin: ThinPool, want: Want, size_bytes: int, garbage: Sequence[Slab],
    reusable: Sequence[Slab], warmest: Slab | None, high_water: float, threshold: float,
) -> MountPlan:
    """Thin mode: a snapshot of the warmest free slab of the key, or a new thin volume.

    A slab's blocks are shared with its snapshots, so what a removal gives back is known only
    after it (LVM reports the blocks each volume maps, not those it maps alone). Above the
    high-water mark the plan is therefore to remove garbage and then one free slab at a time,
    least recently used first, the would-be origin last, and to plan again from a fresh report;
    with nothing left to remove, the mount is refused. Writes past the mark still succeed: the
    mark keeps headroom for the pods already running, and a full pool fails their writes at once
    (the pool is made with --errorwhenfull) instead of hanging them.
    """
    data_over = thin.data_fraction >= high_water
    metadata_over = thin.metadata_fraction >= THIN_METADATA_HIGH_WATER
    if data_over or metadata_over or _metadata_short(pool, removed=len(garbage), evicted=0):
        if garbage:
            return MountPlan(Action.MAKE_ROOM, remove=tuple(garbage))
        evictable = sorted(reusable, key=lambda s: (s is warmest, s.released_at, s.name))
        if evictable:
            return MountPlan(Action.MAKE_ROOM, remove=(evictable[0],), evicted=(evictable[0],))
        what = (
            f"{thin.data_fraction:.0%} of its data is used (high-water mark {high_water:.0%})" if data_over
            else f"{thin.metadata_fraction:.0%} of its metadata is used (limit {THIN_METADATA_HIGH_WATER:.0%})"
            if metadata_over else "the volume group's LVM metadata area is nearly full"
        )
        raise PoolExhausted(
            f"no new slab in thin pool {pool.volume_group}/{thin.name}: {what} and no free slab is left "
            "to evict; nothing was created (the pods running now keep their headroom; kubelet will retry, "
            "and mounts work again once pods end)"
        )
    if warmest is not None:
        # A snapshot of an unmeasured slab is measured before its pod gets it, as a reused one is.
        return MountPlan(Action.SNAPSHOT, warmest, remove=tuple(garbage), measure=measure_first(warmest, threshold))
    return MountPlan(Action.CREATE, remove=tuple(garbage), size_bytes=size_bytes)


def surplus_free(pool: Pool, kept: Slab, keep: int) -> tuple[Slab, ...]:
    """Thin mode, after `kept` went back to the pool: the free slabs of its key (kind, size,
    filesystem, scope) beyond the `keep` most recently released, oldest first, to be deleted.
    Pods get snapshots of the warmest, so older copies of a cache only hold pool space."""
    key = (kept.kind, kept.size_mb, kept.fs_type, kept.scope)
    same = [
        s for s in pool.slabs
        if s.state is State.FREE and (s.kind, s.size_mb, s.fs_type, s.scope) == key
    ]
    if not any(s.name == kept.name for s in same):
        same.append(kept)
    newest_first = sorted(same, key=lambda s: (s.released_at, s.name), reverse=True)
    return tuple(reversed(newest_first[keep:]))


def check_provisioning(pool: Pool, wanted: Provisioning) -> None:
    """Refuse to work on a volume group laid out for the other mode. Converting one means
    deleting every slab (a thick slab cannot move into a thin pool): only an admin does that,
    on a drained node, with `ax-vol-plugin prepare`."""
    if pool.provisioning is wanted:
        return
    if wanted is Provisioning.THIN and not pool.slabs and pool.other_volumes:
        raise ConfigError(
            f"this node's config says provisioning = thin, but volume group {pool.volume_group} has no thin pool "
            f"and holds logical volumes that are not slabs ({', '.join(pool.other_volumes)}), which a thin pool on "
            f"all its space needs gone; nothing was changed. lvremove them if an interrupted thin pool creation "
            f"left them, or set provisioning = thick"
        )
    if wanted is Provisioning.THIN:
        raise ConfigError(
            f"this node's config says provisioning = thin, but volume group {pool.volume_group} has "
            f"thick slabs and no thin pool; nothing was changed. To switch the node: drain it, then run "
            f"`ax-vol-plugin prepare --thin` (it deletes the free slabs, then makes the thin pool), or set "
            f"provisioning = thick"
        )
    raise ConfigError(
        f"this node's config says provisioning = thick, but volume group {pool.volume_group} holds "
        f"thin pool {pool.thin_pool.name}; nothing was changed. Set provisioning = thin, or drain the node "
        f"and run `ax-vol-plugin prepare --thick`"
    )


def _metadata_short(pool: Pool, removed: int, evicted: int) -> bool:
    """Whether one more slab would leave LVM's metadata too little room once `removed` slabs
    (`evicted` of them warm) are gone; each removal is counted as giving back half a slab's share."""
    if pool.metadata_headroom_bytes is None:
        return False
    claimable = max(sum(1 for s in pool.slabs if s.state is State.FREE) - evicted, 0)
    needed = METADATA_PER_SLAB + METADATA_PER_CLAIM * claimable
    return pool.metadata_headroom_bytes + removed * (METADATA_PER_SLAB // 2) < needed


def fits_after_removal(pool: Pool, plan: MountPlan, left: Sequence[Slab]) -> bool:
    """Whether a CREATE plan's new slab still fits when the slabs in `left` could not be removed."""
    kept = {s.name for s in left}
    freed = sum(s.size_bytes for s in plan.remove if s.name not in kept)
    return pool.vg_free_bytes + freed >= plan.size_bytes


def _reuse(slab: Slab, remove: tuple[Slab, ...], threshold: float) -> MountPlan:
    return MountPlan(Action.REUSE, slab, remove=remove, measure=measure_first(slab, threshold))


def measure_first(slab: Slab, threshold: float) -> bool:
    """Whether a slab must be measured before a pod gets it: nobody has measured it."""
    return plan_release(slab, None, threshold) is Release.MEASURE_FIRST


def _others(garbage: Sequence[Slab], keep: Slab) -> tuple[Slab, ...]:
    return tuple(s for s in garbage if s.name != keep.name)


class Release(enum.Enum):
    """What becomes of a slab whose pod is done with it."""

    KEEP = "keep"  # back to the pool: known to be at most the threshold full
    DELETE = "delete"  # anonymous, or fuller than the threshold
    # Back to the pool unmeasured (its dir was not mounted: after a reboot, a crash, a pod lost
    # while the node was down): the mount that next picks it measures it before its pod gets it.
    MEASURE_FIRST = "measure first"


def plan_release(slab: Slab, usage: float | None, threshold: float) -> Release:
    """Keep a graph slab for the next pod unless its filesystem is more than `threshold` full.

    `usage` is what was just measured, or None when the slab could not be (it was not mounted);
    then the usage recorded in its tags counts, and with none recorded it is measured before it
    is handed on. The driver's unmount and mount, `gc` and the metrics all decide through here.
    """
    if slab.kind is Kind.ANONYMOUS:
        return Release.DELETE
    if usage is None:
        usage = slab.known_usage
    if usage is None:
        return Release.MEASURE_FIRST
    return Release.DELETE if usage > threshold else Release.KEEP


class Decision(enum.Enum):
    """What a call did: `text` is how its log line says it, `label` the metrics' short value."""

    CREATED = ("created new slab", "create")
    REFORMATTED = ("took over half-made slab", "reformat")
    REUSED = ("reused warm slab", "reuse")
    SNAPSHOTTED = ("snapshot of warm slab", "snapshot")
    RESUMED = ("resumed own slab", "resume")
    ALREADY_MOUNTED = ("already mounted", "already_mounted")
    KEPT = ("kept slab", "keep")
    KEPT_UNMEASURED = ("kept slab, to be measured before its next pod gets it", "keep")
    DELETED = ("deleted slab", "delete")
    DEFERRED = ("removal deferred", "delete")
    NOTHING = ("nothing to do", "nothing")
    LEFT_ALONE = ("left alone: mounted elsewhere", "nothing")

    def __new__(cls, text: str, label: str):
        member = object.__new__(cls)
        member._value_ = text
        member.label = label
        return member

    @property
    def text(self) -> str:
        return self.value


def usage_fraction(
    blocks: int, free_blocks: int, avail_blocks: int, inodes: int = 0, free_inodes: int = 0, avail_inodes: int = 0
) -> float:
    """How full a filesystem is: the fuller of its blocks and its inodes, each used / (used +
    available) as df computes Use% (what is reserved for root counts as neither).

    Inodes count because a cache of many small files (node_modules-heavy images) can run out of
    them with most blocks free: the next pod would get ENOSPC while df -h shows room. A
    filesystem that reports no inode counts (0) is measured by its blocks alone.
    """

    def fraction(total: int, free: int, avail: int) -> float:
        used = total - free
        return used / (used + avail) if used + avail > 0 else 0.0

    return max(fraction(blocks, free_blocks, avail_blocks), fraction(inodes, free_inodes, avail_inodes))
