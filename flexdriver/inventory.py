"""Reading the pool as it is right now: one LVM report and the kernel's mount table, turned into
the pool policy's Pool and Facts.

The driver reads it under the node lock before every decision, and the admin command
(`ax-vol-plugin status`, `gc`, `evict`, `doctor`) reads it the same way, so both classify every
slab by the same pool.condition from the same facts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from .options import pod_dir_of
from .pool import SLAB_TAG, THIN_POOL_TAG, Facts, Pool, State, ThinPool, metadata_headroom, slab_from_tags
from .record import record
from .system import host
from .system.lvm import LVM, LogicalVolume, VolumeGroupReport
from .system.mounts import MountEntry, read_mounts


@record
class Snapshot:
    pool: Pool | None  # None when the volume group does not exist
    mounts: Sequence[MountEntry]
    unreadable: tuple[str, ...] = ()  # LVs tagged ax.slab whose tags do not describe a slab


def read_pool(
    lvm: LVM,
    mounts_reader: Callable[[], list[MountEntry]] | None = None,
    create_missing: Callable[[], None] | None = None,
) -> Snapshot:
    """The pool and the mount table. When the volume group is missing, `create_missing` (if
    given) is called to make it and the report is read again; otherwise the pool is None."""
    reader = mounts_reader or read_mounts
    report = lvm.report()
    if report is None:
        if create_missing is None:
            return Snapshot(None, reader())
        create_missing()
        report = lvm.report()
    pool, unreadable = pool_from_report(report)
    # The mount table is read after lvs, so a slab mounted in between is seen as mounted.
    return Snapshot(pool, reader(), unreadable)


def pool_from_report(report: VolumeGroupReport) -> tuple[Pool, tuple[str, ...]]:
    slabs = []
    unreadable = []
    others = []
    thin = None
    for volume in report.volumes:
        if THIN_POOL_TAG in volume.tags:
            thin = _thin_pool(volume)
            continue
        slab = slab_from_tags(volume.name, volume.size_bytes, volume.tags, device=volume.device, active=volume.active)
        if slab is not None:
            slabs.append(slab)
        elif SLAB_TAG in volume.tags:
            unreadable.append(volume.name)
        else:
            others.append(volume.name)
    pool = Pool(
        volume_group=report.name,
        vg_size_bytes=report.size_bytes,
        vg_free_bytes=report.free_bytes,
        extent_bytes=report.extent_bytes,
        slabs=tuple(slabs),
        metadata_headroom_bytes=metadata_headroom(report.metadata_free_bytes, report.metadata_size_bytes),
        thin_pool=thin,
        other_volumes=tuple(others),
    )
    return pool, tuple(unreadable)


def _thin_pool(volume: LogicalVolume) -> ThinPool:
    """The thin pool's figures. In a thick report (no thin fields) they are unknown, and it
    counts as full: a thick-mode driver only needs to know it is there (check_provisioning)."""
    data = volume.data_percent
    metadata = volume.metadata_percent
    metadata_bytes = volume.metadata_size_bytes or 0
    return ThinPool(
        name=volume.name,
        data_bytes=volume.size_bytes,
        data_used_bytes=volume.size_bytes if data is None else int(volume.size_bytes * data / 100),
        metadata_bytes=metadata_bytes,
        metadata_used_bytes=metadata_bytes if metadata is None else int(metadata_bytes * metadata / 100),
        error_when_full=volume.error_when_full,
        known=data is not None and metadata is not None,
    )


def gather_facts(pool: Pool, entries: Sequence[MountEntry]) -> Facts:
    live = {s.creator for s in pool.slabs if s.state is State.CREATING and host.is_alive(s.creator)}
    gone = {
        s.mount_dir
        for s in pool.slabs
        if s.state in (State.USED, State.CLAIMED) and s.mount_dir and not os.path.exists(owner_path(s.mount_dir))
    }
    return Facts(
        mounted_devices=frozenset(e.device for e in entries),
        live_creators=frozenset(live),
        gone_owners=frozenset(gone),
    )


def owner_path(mount_dir: str) -> str:
    """The path whose disappearance means the owning pod is gone for good.

    Kubelet removes a pod's whole dir only when the pod is deleted; the mount dir itself comes
    and goes between kubelet's retries, so it is used only outside kubelet's layout.
    """
    return pod_dir_of(mount_dir) or mount_dir
