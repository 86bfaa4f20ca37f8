"""`ax-vol-plugin gc`: reclaim what a crash or a lost pod left in the pool.

What counts as left over is the driver's own classification (pool.condition over the facts the
driver gathers), so gc reclaims exactly what the driver's next mount would:
- a graph slab still tagged used (or claimed) whose mount is gone and whose pod dir kubelet has
  removed goes back to the pool, tagged as the driver's unmount of its dir would tag it: with its
  measured usage if it has one, else unmeasured, so the mount that next picks it measures it
  before its pod gets it (pool.plan_release decides, as for the driver);
- an anonymous slab in that position, a slab half-made by a call that is dead, and a doomed slab
  are deleted.
Nothing mounted, nothing a live call is formatting, and nothing whose tags it cannot read is
touched. Changes are made under the node lock, from a fresh read of the pool.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import List, Sequence, Tuple

import click

from .. import inventory
from ..pool import Condition, Facts, Kind, Pool, Release, Slab, State, condition, plan_release, state_tags
from ..system.lvm import LVM
from .common import BUSY, EXIT_PROBLEMS, confirm, load_config, locked, lvm_of, mib, now, read, reread_under_lock, runner_of


@dataclasses.dataclass(frozen=True)
class Step:
    slab: Slab
    release: Release  # DELETE: lvremove; KEEP or MEASURE_FIRST: back to the pool
    why: str

    @property
    def key(self):
        return (self.slab.name, self.release)

    @property
    def deletes(self) -> bool:
        return self.release is Release.DELETE


def plan(pool: Pool, facts: Facts, threshold: float) -> List[Step]:
    steps = []
    for slab in pool.slabs:
        found = condition(slab, facts)
        if found is Condition.ORPHAN:
            gone = inventory.owner_path(slab.mount_dir or "")
            why = f"in use by {slab.mount_dir}, not mounted, and {gone} is gone"
            # As the driver's unmount of a dir whose slab is not mounted.
            release = plan_release(slab, None, threshold)
            if release is Release.MEASURE_FIRST:
                why += "; never measured, so measured before its next pod gets it"
            steps.append(Step(slab, release, why))
        elif found is Condition.GARBAGE:
            if slab.state is State.DOOMED:
                why = "doomed: over the usage threshold when its pod ended"
            elif slab.state is State.CREATING:
                why = f"half-made by a call that is no longer alive ({slab.creator or 'unknown'})"
            elif slab.kind is Kind.ANONYMOUS:
                why = f"anonymous, its pod is gone ({inventory.owner_path(slab.mount_dir or '')})"
            else:
                why = "garbage"
            steps.append(Step(slab, Release.DELETE, why))
    return steps


def released(slab: Slab, at: int) -> Slab:
    """The slab as the driver's unmount leaves a slab it could not measure: free since `at`, with
    the usage it had when it was last measured (a claimed slab never mounted), or none."""
    return slab._replace(state=State.FREE, mount_dir=None, pod_uid="", creator="", released_at=at)


def describe(step: Step) -> str:
    verb = "delete" if step.deletes else "free"
    return f"{verb} {step.slab.name} ({mib(step.slab.size_bytes)} {step.slab.fs_type}): {step.why}"


def apply(lvm: LVM, steps: Sequence[Step], at: int) -> Tuple[List[str], List[str]]:
    """What was done, one line each, and the slabs LVM could not remove."""
    done = []
    for step in steps:
        if not step.deletes:
            lvm.retag(step.slab.name, add=state_tags(released(step.slab, at)), delete=state_tags(step.slab))
            done.append(f"freed {step.slab.name}: back in the pool")
    doomed = [s.slab.name for s in steps if s.deletes]
    left = set(lvm.remove(doomed))
    done += [f"deleted {name}" for name in doomed if name not in left]
    return done, [name for name in doomed if name in left]



@click.command(short_help="Reclaim what crashes and deleted pods left.")
@click.option("--dry-run", is_flag=True, help="List what would be reclaimed; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def gc(ctx: click.Context, dry_run: bool, yes: bool) -> None:
    """Reclaim slabs left by crashes and deleted pods (as the driver's next mount would)."""
    config = load_config(ctx)
    lvm = lvm_of(runner_of(ctx), config)
    snapshot = read(lvm)
    if snapshot.pool is None:
        click.echo(f"volume group {config.volume_group} does not exist; nothing to reclaim")
        return
    steps = plan(snapshot.pool, inventory.gather_facts(snapshot.pool, snapshot.mounts), config.usage_threshold)
    if not steps:
        click.echo("nothing to reclaim")
        return
    for step in steps:
        click.echo(("would " if dry_run else "") + describe(step))
    if dry_run:
        return
    confirm(f"Reclaim these {len(steps)} slab(s)?", yes)
    listed = {step.key for step in steps}
    with locked(config):
        # Read again under the lock: a pod may have claimed a slab since it was listed.
        now_steps = plan(*reread_under_lock(lvm), config.usage_threshold)
        todo = [step for step in now_steps if step.key in listed]
        for name in sorted({s.slab.name for s in steps} - {s.slab.name for s in todo}):
            click.echo(f"left {name} alone: it changed since it was listed")
        done, left = apply(lvm, todo, now())  # an LVM failure ends it in one line (locked)
    for line in done:
        click.echo(line)
    for name in left:
        click.echo(BUSY.format(name=name), err=True)
    if left:
        sys.exit(EXIT_PROBLEMS)
