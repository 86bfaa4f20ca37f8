"""`ax-vol-plugin evict`: delete free slabs by age or by count, to give the disk back or to drop
caches nobody has used for a while. Only slabs the driver itself would call free (pool.condition
FREE: tagged free and not mounted) are ever chosen; the choice is made again under the node
lock right before the one lvremove, so a slab a pod claims meanwhile is left alone."""

from __future__ import annotations

import re
import sys
from typing import List, Optional

import click

from .. import inventory
from ..pool import Condition, Facts, Pool, Slab, condition
from .common import BUSY, EXIT_PROBLEMS, age, confirm, load_config, locked, lvm_of, mib, now, read, reread_under_lock, runner_of

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"([0-9]{1,9})([smhdw])", str(value).strip())
        if not match:
            self.fail(f"{value!r} is not a duration like 30m, 12h, 7d or 2w", param, ctx)
        return int(match.group(1)) * _UNITS[match.group(2)]


def plan(
    pool: Pool,
    facts: Facts,
    at: int,
    older_than_s: Optional[int] = None,
    keep: Optional[int] = None,
    size_mb: Optional[int] = None,
    fs_type: Optional[str] = None,
) -> List[Slab]:
    """The free slabs to evict: among those matching the filters, all but the `keep` most
    recently released, and of those only the ones released more than `older_than_s` ago."""
    free = [
        s for s in pool.slabs
        if condition(s, facts) is Condition.FREE
        and (size_mb is None or s.size_mb == size_mb)
        and (fs_type is None or s.fs_type == fs_type)
    ]
    newest_first = sorted(free, key=lambda s: (s.released_at, s.name), reverse=True)  # the driver's LRU order
    chosen = newest_first[keep:] if keep is not None else newest_first
    if older_than_s is not None:
        chosen = [s for s in chosen if at - s.released_at > older_than_s]
    return chosen


@click.command(short_help="Delete free slabs by age or count.")
@click.option(
    "--older-than", type=Duration(), metavar="DURATION", help="Free slabs released longer ago than this (30m, 12h, 7d)."
)
@click.option("--keep", type=click.IntRange(min=0), metavar="N", help="Keep the N most recently released, evict the rest.")
@click.option("--size-mb", type=click.IntRange(min=1), metavar="MB", help="Only slabs of this size_mb.")
@click.option("--fs", "fs_type", type=click.Choice(["ext4", "xfs"]), help="Only slabs with this filesystem.")
@click.option("--dry-run", is_flag=True, help="List what would be evicted; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def evict(ctx, older_than, keep, size_mb, fs_type, dry_run, yes) -> None:
    """Delete free slabs by age (--older-than) or count (--keep); both given: both must agree."""
    if older_than is None and keep is None:
        raise click.UsageError("say which free slabs to evict: --older-than DURATION, --keep N, or both")
    config = load_config(ctx)
    lvm = lvm_of(runner_of(ctx), config)
    criteria = dict(older_than_s=older_than, keep=keep, size_mb=size_mb, fs_type=fs_type)
    snapshot = read(lvm)
    if snapshot.pool is None:
        click.echo(f"volume group {config.volume_group} does not exist; nothing to evict")
        return
    at = now()
    chosen = plan(snapshot.pool, inventory.gather_facts(snapshot.pool, snapshot.mounts), at, **criteria)
    if not chosen:
        click.echo("no free slab matches; nothing to evict")
        return
    for slab in chosen:
        click.echo(
            f"{'would evict' if dry_run else 'evict'} {slab.name} ({mib(slab.size_bytes)} {slab.fs_type}, "
            f"free for {age(at - slab.released_at) if slab.released_at else 'an unknown time'})"
        )
    if dry_run:
        return
    confirm(f"Delete these {len(chosen)} free slab(s) and their caches ({mib(sum(s.size_bytes for s in chosen))})?", yes)
    listed = {s.name for s in chosen}
    with locked(config):
        # Chosen again under the lock, by the same rules: whatever a pod claimed meanwhile, or
        # what is no longer free, drops out; nothing new is added to what was confirmed.
        still = plan(*reread_under_lock(lvm), at, **criteria)
        todo = [s for s in still if s.name in listed]
        for name in sorted(listed - {s.name for s in todo}):
            click.echo(f"left {name} alone: it is no longer a free slab to evict")
        left = set(lvm.remove([s.name for s in todo]))
    done = [s for s in todo if s.name not in left]
    if done:
        click.echo(f"evicted {len(done)} slab(s), {mib(sum(s.size_bytes for s in done))}: {', '.join(s.name for s in done)}")
    for name in sorted(left):
        click.echo(BUSY.format(name=name), err=True)
    if left:
        sys.exit(EXIT_PROBLEMS)
