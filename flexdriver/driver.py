"""mount and unmount as short sequences of steps, each safe to be killed after.

The order of steps is what makes the driver crash-proof:
- Every decision (which slab, what to evict, keep or delete) is made under the node lock, from a
  fresh `lvs`, and recorded in the slab's tags by one atomic LVM command before anything else.
- Slow work (mkfs, mount) runs outside the lock on a slab already tagged for this mount dir,
  so no other call can take it, and concurrent pods do not queue behind one mkfs.
- Kubelet retries every failed call with the same arguments; a retry finds the dir's slab by
  its tags and carries on from whatever step the killed call reached.
- Whatever a dead call leaves behind (a half-made slab, a slab "in use" by a pod that is gone)
  is recognised by any later call and reclaimed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from . import failpoints, inventory, volume_group
from .config import Config
from .errors import BadRequest, Busy, CommandFailed, DriverError, PoolExhausted
from .journal import CallRecord
from .options import ANONYMOUS, MountRequest, parse_mount_dir, pod_dir_of
from .pool import (
    NAME_PREFIX,
    Action,
    Condition,
    Decision,
    Facts,
    Kind,
    Pool,
    Provisioning,
    Release,
    Slab,
    State,
    Want,
    all_tags,
    check_provisioning,
    check_size_cap,
    condition,
    fits_after_removal,
    measure_first,
    plan_mount,
    plan_release,
    state_tags,
    surplus_free,
)
from .system import filesystems, host, udev
from .system.lock import node_lock
from .system.lvm import LVM, dm_path
from .system.lvm_shell import LVMShell
from .system.mounts import MountEntry, Mounter, canonical, mount_at, read_mounts
from .system.runner import Runner


class Driver:
    def __init__(
        self, config: Config, record: CallRecord, runner: Runner | None = None, wait_for_node=udev.wait_for_node,
        shell: LVMShell | None = None,
    ) -> None:
        self.config = config
        self.record = record
        self.runner = runner or Runner()
        self.wait_for_node = wait_for_node
        self.thin = config.provisioning is Provisioning.THIN
        self.lvm = LVM(self.runner, config.volume_group, config.command_timeout_s, shell=shell, thin=self.thin)
        self.mounter = Mounter(self.runner, config.command_timeout_s)
        self.me = host.process_identity(os.getpid()) or f"unknown:{os.getpid()}:0"

    # ---- mount ---------------------------------------------------------------------------

    def mount(self, request: MountRequest) -> str:
        path = canonical(request.mount_dir)
        if not os.path.isdir(path):
            raise BadRequest(f"mount dir {path} does not exist or is not a directory")
        want = Want(
            mount_dir=path,
            kind=Kind.ANONYMOUS if request.volume_type == ANONYMOUS else Kind.GRAPH,
            size_mb=request.size_mb,
            fs_type=request.fs_type,
            scope=request.cache_scope,
        )
        self.record.note(
            pod=request.pod_uid or None, size_mb=want.size_mb, fs=want.fs_type, type=want.kind.value, scope=want.scope
        )
        discarded = []
        while True:
            try:
                return self._mount_once(request, want, path)
            except _WarmSlabUnusable as unusable:
                # A warm slab holds only cache: one that cannot be mounted is deleted and the
                # same call goes on with the next choice (another warm slab, or a new one). A
                # snapshot that cannot be used means its origin cannot: that goes too.
                if unusable.slab.origin:
                    self._discard_origin(unusable.slab.origin)
                discarded.append(f"{unusable.slab.origin or unusable.slab.name}: {unusable.reason}")
                self.record.note(discarded_warm=discarded)
                if len(discarded) >= MAX_WARM_FALLBACKS:
                    raise DriverError(
                        f"{len(discarded)} warm slabs in a row could not be mounted and were deleted "
                        f"({'; '.join(discarded)}); retry"
                    ) from None

    def _mount_once(self, request: MountRequest, want: Want, path: str) -> str:
        self.lvm.start_shell()
        with self._lock():
            pool, entries = self._snapshot(create_for_mb=want.size_mb)
            self.record.saw(pool)
            existing = mount_at(entries, path)
            if existing is not None:
                return self._already_mounted(pool, existing, path)
            pool = self._check_layout(pool)
            plan, pool, entries = self._plan(pool, entries, want)
            left = self._remove(plan.remove, evicted=plan.evicted)
            # A thin slab takes no extents of its own: what could not be removed costs it nothing now.
            if left and plan.action is Action.CREATE and pool.thin_pool is None and not fits_after_removal(pool, plan, left):
                raise PoolExhausted(
                    f"no room for a {want.size_mb} MiB slab: {', '.join(s.name for s in left)} could not be removed "
                    "(its device is busy: its filesystem may still be mounted in another mount namespace); kubelet will retry"
                )
            failpoints.hit("mount-after-evict")
            slab, needs_format = self._act(plan, want, request, pool)
        failpoints.hit("mount-after-decision")

        device = dm_path(self.config.volume_group, slab.name)
        self.wait_for_node(device, self.config.command_timeout_s)
        if needs_format:
            try:
                # mkfs time grows with the slab: it gets more than one command's allowance.
                filesystems.make(
                    self.runner, slab.fs_type, device, timeout_s=15 * self.config.command_timeout_s, thin=self.thin
                )
            except CommandFailed:
                self._discard(slab)
                raise
            failpoints.hit("mount-after-mkfs")
            formatted = slab._replace(state=State.USED, creator="")
            self._retag(slab, formatted)  # our own CREATING slab: no decision, so no lock needed
            slab = formatted
            failpoints.hit("mount-after-format-tag")
        elif plan.action in (Action.REUSE, Action.SNAPSHOT):
            problem = filesystems.superblock_problem(device, slab.fs_type)
            if problem is not None:
                self._discard(slab)
                raise _WarmSlabUnusable(slab, problem)
            if slab.origin and slab.state is State.CLAIMED:
                # Idempotent, so a retry after a crash anywhere before the mount just does it again.
                try:
                    filesystems.new_uuid(self.runner, slab.fs_type, device, self.config.command_timeout_s)
                except CommandFailed as err:
                    self._discard(slab)
                    raise _WarmSlabUnusable(slab, str(err)) from err
                failpoints.hit("mount-after-new-uuid")
        failpoints.hit("mount-before-mount")
        try:
            self.mounter.mount(device, path, slab.fs_type, request.read_only, thin=self.thin)
        except CommandFailed as err:
            if plan.action is Action.RESUME:
                raise  # the pod's own data: never deleted for a failed mount
            self._discard(slab)  # empty or cache only: a fresh slab beats a loop
            if plan.action in (Action.REUSE, Action.SNAPSHOT):
                raise _WarmSlabUnusable(slab, str(err)) from err
            raise
        failpoints.hit("mount-after-mount")
        if slab.state is State.CLAIMED:
            self._finish_claim(slab, path, device, plan.measure)
        return f"mounted slab {slab.name} ({self.record.fields['decision'].text}) on {path}"

    def _finish_claim(self, slab: Slab, path: str, device: str, measure: bool) -> None:
        """A claimed warm slab is mounted on its new pod's dir: if nobody measured it (it went
        back to the pool without being mounted), measure it now, before the pod gets it, so the
        usage rule holds for it too; then it is the pod's."""
        if measure:
            usage = filesystems.measure(path, device)
            self.record.note(usage=round(usage, 4), measured_before_use=True)
            failpoints.hit("mount-after-reuse-measure")
            if plan_release(slab, usage, self.config.usage_threshold) is Release.DELETE:
                self.mounter.unmount(path)
                self._discard(slab)
                raise _WarmSlabUnusable(
                    slab, f"nobody had measured it and it is {usage:.0%} full, over the usage threshold"
                )
        self._retag(slab, slab._replace(state=State.USED, usage_permille=None))
        failpoints.hit("mount-after-used-tag")

    def _act(self, plan, want: Want, request: MountRequest, pool: Pool) -> tuple[Slab, bool]:
        """Record the plan in LVM tags; returns the slab and whether it still needs mkfs."""
        slab = plan.slab
        self.record.note(slab=slab.name if slab else None)
        if plan.action is Action.RESUME:
            self.record.note(decision=Decision.RESUMED)
            if not slab.active:
                self.lvm.activate(slab.name)  # after a reboot on a node that does not auto-activate
            return slab, False
        if plan.action is Action.REUSE:
            if slab.state is State.CLAIMED:
                claimed = slab  # claimed for this dir by a try that died before mounting it
            else:
                # Its usage tag stays until it is mounted: a slab claimed by a call that then
                # died goes back to the pool as measured as it was.
                claimed = slab._replace(state=State.CLAIMED, mount_dir=want.mount_dir, pod_uid=request.pod_uid, released_at=0)
                self._retag(slab, claimed)
                failpoints.hit("mount-after-claim")
            self.record.note(decision=Decision.REUSED, warm_since=slab.released_at or None)
            if not slab.active:
                self.lvm.activate(slab.name)
            return claimed, False
        if plan.action is Action.SNAPSHOT:
            # The pod gets a new slab that starts as a copy-on-write copy of the warm one, claimed
            # for its dir from the first instant (one lvcreate sets every tag); the warm slab
            # stays free for the next pod. It inherits the usage measured when the warm slab was
            # released: an unmeasured one is measured once mounted, as a reused slab is.
            snapshot = Slab(
                name=NAME_PREFIX + os.urandom(6).hex(),
                size_bytes=slab.size_bytes,
                size_mb=slab.size_mb,
                fs_type=slab.fs_type,
                kind=slab.kind,
                state=State.CLAIMED,
                mount_dir=want.mount_dir,
                pod_uid=request.pod_uid,
                scope=slab.scope,
                usage_permille=slab.usage_permille,
                origin=slab.name,
            )
            self.lvm.snapshot(slab.name, snapshot.name, all_tags(snapshot))
            self.record.note(slab=snapshot.name, origin=slab.name, decision=Decision.SNAPSHOTTED,
                             warm_since=slab.released_at or None)
            failpoints.hit("mount-after-snapshot")
            return snapshot, False
        if plan.action is Action.REFORMAT:
            taken = slab._replace(creator=self.me)
            self._retag(slab, taken)
            self.record.note(decision=Decision.REFORMATTED)
            if not slab.active:
                self.lvm.activate(slab.name)
            return taken, True
        new = Slab(
            name=NAME_PREFIX + os.urandom(6).hex(),  # not `secrets`: its import loads OpenSSL
            size_bytes=plan.size_bytes,
            size_mb=want.size_mb,
            fs_type=want.fs_type,
            kind=want.kind,
            state=State.CREATING,
            mount_dir=want.mount_dir,
            pod_uid=request.pod_uid,
            creator=self.me,
            scope=want.scope,
        )
        self.lvm.create(new.name, new.size_bytes, all_tags(new), thin_pool=pool.thin_pool.name if pool.thin_pool else None)
        self.record.note(slab=new.name, decision=Decision.CREATED)
        failpoints.hit("mount-after-lvcreate")
        return new, True

    def _already_mounted(self, pool: Pool, existing: MountEntry, path: str) -> str:
        for slab in pool.slabs:
            if slab.device == existing.device and slab.mount_dir == path:
                self.record.note(slab=slab.name, decision=Decision.ALREADY_MOUNTED)
                if slab.state is State.CLAIMED:  # the call that mounted it died before the last step
                    measure = measure_first(slab, self.config.usage_threshold)
                    self._finish_claim(slab, path, dm_path(self.config.volume_group, slab.name), measure)
                return f"slab {slab.name} is already mounted on {path}"
        raise DriverError(f"{path} already has {existing.source} ({existing.fs_type}) mounted on it, not a slab of this driver")

    # ---- unmount -------------------------------------------------------------------------

    def unmount(self, mount_dir: str) -> str:
        """Decide under the node lock, from a fresh `lvs`, and record the decision in the slab's
        tags; the slow steps (umount, which writes back what the pod left dirty, and lvremove)
        then run outside it, on a slab no other call will take: one still tagged for this dir, or
        doomed. A pod leaving gigabytes of dirty data does not hold up every mount on the node."""
        path = canonical(parse_mount_dir(mount_dir))
        self.record.note(pod=_pod_of(path))
        self.lvm.start_shell()
        with self._lock():
            release = self._decide_release(path)
        if isinstance(release, str):
            return release
        slab, decision, usage, mounted, thin = release
        self.record.note(release=decision)
        if mounted and thin and decision is Release.KEEP:
            self._trim(path)
        if mounted:
            failpoints.hit("unmount-before-umount")
            self.mounter.unmount(path)
            failpoints.hit("unmount-after-umount")
        if decision is Release.DELETE:
            failpoints.hit("unmount-before-delete")
            if self.lvm.remove([slab.name]):
                # The pod's part is done (its dir is unmounted); the slab keeps the tags that
                # make it garbage, and a later call or `gc` removes it once it is not busy.
                self.record.note(decision=Decision.DEFERRED, unremovable=[slab.name])
                return (f"unmounted {path}; slab {slab.name} could not be removed yet (its device is busy: its "
                        "filesystem may still be mounted in another mount namespace); a later call removes it")
            failpoints.hit("unmount-after-delete")
            self.record.note(decision=Decision.DELETED)
            return f"unmounted {path}; deleted slab {slab.name}"
        measured = slab.usage_permille if usage is None else round(usage * 1000)
        self._retag(
            slab,
            slab._replace(
                state=State.FREE, mount_dir=None, pod_uid="", creator="", released_at=int(time.time()),
                usage_permille=measured,
            ),
        )
        failpoints.hit("unmount-after-keep-tag")
        if thin:
            self._drop_surplus(slab)
        if decision is Release.MEASURE_FIRST:
            self.record.note(decision=Decision.KEPT_UNMEASURED)
            return f"{path} was not mounted; slab {slab.name} kept for the next pod, which measures it first"
        self.record.note(decision=Decision.KEPT)
        return f"unmounted {path}; slab {slab.name} kept for the next pod"

    def _decide_release(self, path: str):
        """Under the node lock: the dir's slab, what becomes of it, its usage (None: not
        measured) and whether it is mounted on the dir; or the call's answer when there is
        nothing more to do."""
        pool, entries = self._snapshot(create_for_mb=None)
        self.record.saw(pool)
        existing = mount_at(entries, path)
        slabs = pool.slabs if pool else ()
        # The volume group's own layout, not the config's: a pod's slab is released whatever the
        # config says now.
        thin = pool is not None and pool.thin_pool is not None
        if existing is not None:
            slab = next((s for s in slabs if s.device == existing.device), None)
            if slab is None:
                raise DriverError(
                    f"{path} has {existing.source} ({existing.fs_type}) mounted on it, "
                    f"not a slab of volume group {self.config.volume_group}; not unmounting it"
                )
            self.record.note(slab=slab.name, type=slab.kind.value)
            usage = filesystems.measure(path, slab.device)
            self.record.note(usage=round(usage, 4))
            failpoints.hit("unmount-after-measure")
            decision = plan_release(slab, usage, self.config.usage_threshold)
            if decision is Release.DELETE and slab.state is not State.DOOMED:
                # Recorded before the umount: a retry after a crash here must not mistake an
                # unmounted, over-full slab for one that may go back to the pool; and no other
                # call takes a doomed slab while it is still mounted.
                slab = self._retag(slab, slab._replace(state=State.DOOMED))
                failpoints.hit("unmount-after-doomed-tag")
            return slab, decision, usage, True, thin
        slab = next((s for s in slabs if s.mount_dir == path), None)
        if slab is None:
            self.record.note(decision=Decision.NOTHING)
            return f"{path} is not mounted and has no slab recorded"
        self.record.note(slab=slab.name, type=slab.kind.value)
        mounted_elsewhere = next((e for e in entries if e.device == slab.device), None)
        if slab.device is not None and mounted_elsewhere is not None:
            self.record.note(decision=Decision.LEFT_ALONE)
            return f"slab {slab.name} recorded for {path} is mounted at {mounted_elsewhere.mount_point}; left alone"
        if slab.state is State.CREATING and host.is_alive(slab.creator):
            raise Busy(f"slab {slab.name} for {path} is still being formatted by another call; retry")
        if slab.state in (State.CREATING, State.DOOMED):
            return slab, Release.DELETE, None, False, thin
        return slab, plan_release(slab, None, self.config.usage_threshold), None, False, thin

    # ---- shared steps --------------------------------------------------------------------

    def _lock(self):
        return node_lock(self.config.run_dir, self.config.lock_timeout_s)

    def _snapshot(self, create_for_mb: int | None) -> tuple[Pool | None, Sequence[MountEntry]]:
        create = None if create_for_mb is None else (lambda: self._create_volume_group(create_for_mb))
        snapshot = inventory.read_pool(self.lvm, read_mounts, create_missing=create)
        return snapshot.pool, snapshot.mounts

    def _check_layout(self, pool: Pool) -> Pool:
        """Under the lock: the volume group is laid out for this node's provisioning mode. An
        empty volume group (made by `prepare` without --thin, or a first mount killed between
        vgcreate and the thin pool) gets its thin pool now; anything else of the other mode is
        refused (pool.check_provisioning). A thin pool found without --errorwhenfull gets it."""
        if self.thin and pool.thin_pool is None and not pool.slabs and not pool.other_volumes:
            volume_group.create_thin_pool(self.lvm, pool.vg_free_bytes)
            self.record.note(thin_pool_created=True)
            pool, _ = self._snapshot(create_for_mb=None)
        check_provisioning(pool, self.config.provisioning)
        if pool.thin_pool is not None and self.thin and not pool.thin_pool.known:
            # Not active (a node that does not auto-activate, after a reboot): LVM reports no
            # figures for it, and a pool of unknown fill must not be planned as a full one.
            self.lvm.activate(pool.thin_pool.name)
            pool, _ = self._snapshot(create_for_mb=None)
            if not pool.thin_pool.known:
                raise DriverError(
                    f"LVM reports no data and metadata figures for thin pool {pool.volume_group}/"
                    f"{pool.thin_pool.name} even once activated; see lvs -a {pool.volume_group}"
                )
        if pool.thin_pool is not None and not pool.thin_pool.error_when_full:
            self.lvm.error_when_full(pool.thin_pool.name)
        return pool

    def _plan(self, pool: Pool, entries: Sequence[MountEntry], want: Want):
        """Under the lock: the mount's plan. In thin mode a pool above its high-water mark first
        gives back space one removal at a time (Action.MAKE_ROOM), each followed by a fresh report,
        as what a removal frees is known only after it."""
        made_room: list[str] = []
        stuck: set[str] = set()  # could not be removed (busy): planned without, so the next choice is tried
        for _ in range(MAX_MAKE_ROOM):
            plan = plan_mount(
                pool, want, self._facts(pool, entries), self.config.max_size_mb, self.config.usage_threshold,
                self.config.thin_high_water,
            )
            if plan.action is not Action.MAKE_ROOM:
                return plan, pool, entries
            left = set(self._remove(plan.remove, evicted=plan.evicted))
            stuck |= {s.name for s in left}
            made_room += [s.name for s in plan.remove if s.name not in stuck]
            self.record.note(made_room=made_room)
            pool, entries = self._snapshot(create_for_mb=None)
            pool = pool._replace(slabs=tuple(s for s in pool.slabs if s.name not in stuck))
            self.record.saw(pool)  # the gauges: the pool as it is after the removals
        raise PoolExhausted(
            f"thin pool {pool.volume_group}/{pool.thin_pool.name} is still above its high-water mark after "
            f"removing {len(made_room)} slabs; kubelet will retry"
        )

    def _trim(self, path: str) -> None:
        """Thin mode, before a kept slab's umount: what its pod deleted goes back to the pool.
        Best effort: a failed trim costs pool space, not the pod's unmount."""
        try:
            filesystems.trim(self.runner, path, 15 * self.config.command_timeout_s)
            self.record.note(trimmed=True)
        except CommandFailed as err:
            self.record.note(trim_failed=str(err))
        failpoints.hit("unmount-after-trim")

    def _drop_surplus(self, kept: Slab) -> None:
        """Thin mode, after a slab went back to the pool: older free slabs of its key beyond
        thin_keep_free are deleted, under the lock (a mount may be about to snapshot one)."""
        with self._lock():
            pool, entries = self._snapshot(create_for_mb=None)
            if pool is None:
                return
            facts = self._facts(pool, entries)
            surplus = [
                s for s in surplus_free(pool, kept, self.config.thin_keep_free)
                if condition(s, facts) is Condition.FREE
            ]
            if surplus:
                left = set(self.lvm.remove([s.name for s in surplus]))
                self.record.note(surplus_deleted=[s.name for s in surplus if s.name not in left])

    def _discard_origin(self, name: str) -> None:
        """Under the lock: delete a free (or orphaned) slab whose snapshot could not be used,
        unless it is no longer one."""
        with self._lock():
            pool, entries = self._snapshot(create_for_mb=None)
            origin = next((s for s in pool.slabs if s.name == name), None) if pool else None
            if origin is not None and condition(origin, self._facts(pool, entries)) in (Condition.FREE, Condition.ORPHAN):
                self._discard(origin)

    def _facts(self, pool: Pool, entries: Sequence[MountEntry]) -> Facts:
        return inventory.gather_facts(pool, entries)

    def _create_volume_group(self, size_mb: int) -> None:
        check_size_cap(size_mb, self.config.max_size_mb)  # a refused request makes no volume group either
        created_on = volume_group.create_on_blank_device(
            self.runner, self.lvm, self.config.device, needed_mb=size_mb, provisioning=self.config.provisioning
        )
        self.record.note(volume_group_created=created_on)

    def _remove(self, slabs: Sequence[Slab], evicted: Sequence[Slab] = ()) -> tuple[Slab, ...]:
        """Remove what the plan says; returns the slabs LVM could not remove. Those stay as they
        are (garbage keeps its tags, a warm slab stays free) for a later call or `gc`: one busy
        device must not fail every other pod's mount on the node."""
        if not slabs:
            return ()
        left = set(self.lvm.remove([s.name for s in slabs]))
        # Added to what earlier removals of the same call noted (thin mode makes room in steps).
        noted = self.record.fields
        self.record.note(
            evicted=(noted.get("evicted") or []) + [s.name for s in evicted if s.name not in left] or None,
            reclaimed=(noted.get("reclaimed") or []) + [s.name for s in slabs if s not in evicted and s.name not in left]
            or None,
            unremovable=sorted(set(noted.get("unremovable") or []) | left) or None,
        )
        return tuple(s for s in slabs if s.name in left)

    def _retag(self, old: Slab, new: Slab) -> Slab:
        self.lvm.retag(old.name, add=state_tags(new), delete=state_tags(old))
        return new

    def _discard(self, slab: Slab) -> None:
        """Best effort: delete a slab this call just took and could not use; if even that
        fails, the doomed tag lets any later call reclaim it."""
        try:
            self._retag(slab, slab._replace(state=State.DOOMED, creator=""))
            if not self.lvm.remove([slab.name]):
                self.record.note(discarded=slab.name)
        except CommandFailed:
            pass


# A warm slab that cannot be mounted is deleted and the next choice tried; a pool full of broken
# slabs (a failing device, a broken mount) must still end the call.
MAX_WARM_FALLBACKS = 3
# Thin mode: removals (one free slab each) a mount may make to bring the pool below its
# high-water mark before it gives up for this call.
MAX_MAKE_ROOM = 64


class _WarmSlabUnusable(Exception):
    """A reused warm slab turned out unusable and has been discarded."""

    def __init__(self, slab: Slab, reason: str) -> None:
        super().__init__(reason)
        self.slab = slab
        self.reason = reason


def _pod_of(path: str) -> str | None:
    pod_dir = pod_dir_of(path)
    return os.path.basename(pod_dir) if pod_dir else None
