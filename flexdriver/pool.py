"""The slab pool's decisions, as pure functions over a snapshot. No I/O happens here.

A slab is an LVM logical volume whose whole state lives in its own LVM tags, so it cannot
disagree with LVM: an admin who removes a slab or grows the volume group tells us nothing.

    ax.slab                     membership: only LVs with this tag are ever touched
    ax.type=graph|anonymous     pooled docker graph storage, or deleted at unmount
    ax.fs=ext4|xfs              filesystem made on it
    ax.size_mb=N                the size pods asked for (the LV may be rounded up to extents)
    ax.scope=node|ns.<namespace>|key.<name>   which pods may inherit it (missing: node)
    ax.state=creating           made by lvcreate, filesystem not (yet) complete
    ax.state=used               formatted and given to the mount dir in ax.dir
    ax.state=free               formatted, unmounted, waiting in the pool since ax.released
    ax.state=doomed             measured over the threshold at unmount: to be deleted
    ax.dir=<base64 path>        the mount dir that owns it (creating/used/doomed)
    ax.pod=<uid>                the owning pod, for people reading `lvs`
    ax.creator=<boot>:<pid>:<start>   the call that is formatting it (creating only)
    ax.released=<unix seconds>  when it went back to the pool (free only); LRU order
    ax.usage=<permille>         how full its filesystem was when it went back (free only)

Tag changes are single lvchange calls, which LVM commits atomically, so a slab is always in
exactly one of these states whatever instant the driver is killed at.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Iterable, Sequence

from .errors import BadRequest, Busy, PoolExhausted
from .record import record

MIB = 1 << 20
SLAB_TAG = "ax.slab"
NAME_PREFIX = "slab-"


class State(enum.Enum):
    CREATING = "creating"
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
    return frozenset(
        {
            SLAB_TAG, f"ax.type={slab.kind.value}", f"ax.fs={slab.fs_type}", f"ax.size_mb={slab.size_mb}",
            f"ax.scope={slab.scope}",
        }
    )


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
class Pool:
    volume_group: str
    vg_size_bytes: int
    vg_free_bytes: int
    extent_bytes: int
    slabs: tuple[Slab, ...]


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


@record
class MountPlan:
    action: Action
    slab: Slab | None = None  # for RESUME, REFORMAT, REUSE
    remove: tuple[Slab, ...] = ()  # garbage and evictions, removed before the action
    evicted: tuple[Slab, ...] = ()  # the warm slabs among `remove`
    size_bytes: int = 0  # for CREATE: the LV size, rounded up to whole extents


def round_to_extents(size_mb: int, extent_bytes: int) -> int:
    size = size_mb * MIB
    return -(-size // extent_bytes) * extent_bytes


def check_size_cap(size_mb: int, max_size_mb: int) -> None:
    """A node's cap on what one pod may ask for (0: none beyond the volume group), so that one pod
    cannot evict every other tenant's warm slabs by asking for the whole disk."""
    if max_size_mb and size_mb > max_size_mb:
        raise BadRequest(f"size_mb {size_mb} is above this node's max_size_mb {max_size_mb}; nothing was created or evicted")


def plan_mount(pool: Pool, want: Want, facts: Facts, max_size_mb: int = 0) -> MountPlan:
    """What a mount does. A pod's own slab (a retry, a reboot) is mounted again whatever its size;
    anything else first passes the node's size cap."""
    size_bytes = round_to_extents(want.size_mb, pool.extent_bytes)
    if size_bytes > pool.vg_size_bytes:
        raise BadRequest(
            f"size_mb {want.size_mb} is larger than volume group {pool.volume_group} "
            f"({pool.vg_size_bytes // MIB} MiB in all)"
        )
    conditions = {slab.name: condition(slab, facts) for slab in pool.slabs}
    garbage = [s for s in pool.slabs if conditions[s.name] is Condition.GARBAGE]

    own = [s for s in pool.slabs if s.mount_dir == want.mount_dir and conditions[s.name] is not Condition.GARBAGE]
    own_used = [s for s in own if s.state is State.USED]
    if own_used:
        return MountPlan(Action.RESUME, own_used[0], remove=_others(garbage, own_used[0]))
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
    if want.kind is Kind.GRAPH:
        matching = [
            s for s in reusable
            if s.kind is Kind.GRAPH and s.size_mb == want.size_mb and s.fs_type == want.fs_type
            and s.scope == want.scope
        ]
        if matching:
            warmest = max(matching, key=lambda s: (s.released_at, s.name))
            return MountPlan(Action.REUSE, warmest, remove=tuple(garbage))

    available = pool.vg_free_bytes + sum(s.size_bytes for s in garbage)
    evicted: list[Slab] = []
    for slab in sorted(reusable, key=lambda s: (s.released_at, s.name)):  # least recently used first
        if available >= size_bytes:
            break
        evicted.append(slab)
        available += slab.size_bytes
    if available < size_bytes:
        held = sum(s.size_bytes for s in evicted)
        raise PoolExhausted(
            f"no room for a {want.size_mb} MiB slab in volume group {pool.volume_group}: "
            f"needs {size_bytes // MIB} MiB, {pool.vg_free_bytes // MIB} MiB free "
            f"and {held // MIB} MiB more in {len(evicted)} free slab(s); "
            f"nothing else can be reclaimed now, so nothing was evicted (kubelet will retry)"
        )
    return MountPlan(Action.CREATE, remove=tuple(garbage) + tuple(evicted), evicted=tuple(evicted), size_bytes=size_bytes)


def fits_after_removal(pool: Pool, plan: MountPlan, left: Sequence[Slab]) -> bool:
    """Whether a CREATE plan's new slab still fits when the slabs in `left` could not be removed."""
    kept = {s.name for s in left}
    freed = sum(s.size_bytes for s in plan.remove if s.name not in kept)
    return pool.vg_free_bytes + freed >= plan.size_bytes


def _others(garbage: Sequence[Slab], keep: Slab) -> tuple[Slab, ...]:
    return tuple(s for s in garbage if s.name != keep.name)


class Release(enum.Enum):
    KEEP = "keep"
    DELETE = "delete"


def plan_release(slab: Slab, usage: float | None, threshold: float) -> Release:
    """Keep a graph slab for the next pod unless its filesystem is more than `threshold` full.

    `usage` is None when the slab was not mounted, so nothing could be measured: it goes back
    to the pool as it is (kubelet only unmounts such dirs after a crash or a reboot).
    """
    if slab.kind is Kind.ANONYMOUS:
        return Release.DELETE
    if usage is not None and usage > threshold:
        return Release.DELETE
    return Release.KEEP


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
