"""`ax-vol-plugin status`: every slab with its state as the driver would judge it right now,
then the volume group's totals. Read-only and lock-free: it runs one `lvs` and reads the mount
table, like any call of the driver, and changes nothing."""

from __future__ import annotations

import json
from typing import Dict, List, Optional, Sequence

import click

from .. import inventory
from ..errors import DriverError
from ..pool import Pool, Slab, State
from ..system import filesystems
from ..system.mounts import MountEntry
from .common import EXIT_OK, STATES, age, load_config, lvm_of, mib, now, read, runner_of, state_of


def rows(pool: Pool, mounts: Sequence[MountEntry], at: int) -> List[Dict[str, object]]:
    """One dict per slab: what both the table and --json show."""
    facts = inventory.gather_facts(pool, mounts)
    found = []
    for slab in pool.slabs:
        points = [e.mount_point for e in mounts if slab.device is not None and e.device == slab.device]
        if points:
            last_used: Optional[int] = 0
            usage = _live_usage(points[0], slab)
        else:
            last_used = at - slab.released_at if slab.state is State.FREE and slab.released_at else None
            usage = slab.usage_permille / 10 if slab.state is State.FREE and slab.usage_permille is not None else None
        found.append(
            {
                "name": slab.name,
                "size_bytes": slab.size_bytes,
                "size_mb": slab.size_mb,
                "fs": slab.fs_type,
                "type": slab.kind.value,
                "scope": slab.scope,
                "state": state_of(slab, facts),
                "tagged": slab.state.value,
                "pod": slab.pod_uid or None,
                "mount_dir": slab.mount_dir,
                "mounted_at": points,
                "released_at": slab.released_at or None,
                "last_used_s": last_used,
                "usage_percent": None if usage is None else round(usage, 1),
            }
        )
    order = {name: i for i, name in enumerate(STATES)}
    found.sort(key=lambda r: (order[r["state"]], -(r["released_at"] or 0), r["name"]))
    return found


def _live_usage(mount_point: str, slab: Slab) -> Optional[float]:
    try:
        return 100 * filesystems.measure(mount_point, slab.device)
    except (OSError, DriverError):
        return None  # unmounted a moment ago, or covered by another mount: unknown, not wrong


def summary(pool: Pool, slab_rows: Sequence[Dict[str, object]], unreadable: Sequence[str]) -> Dict[str, object]:
    counts = {name: sum(1 for r in slab_rows if r["state"] == name) for name in STATES}
    return {
        "volume_group": {
            "name": pool.volume_group,
            "size_bytes": pool.vg_size_bytes,
            "free_bytes": pool.vg_free_bytes,
            "slab_bytes": sum(s.size_bytes for s in pool.slabs),
            "extent_bytes": pool.extent_bytes,
        },
        "thin_pool": _thin_pool(pool),
        "counts": counts,
        "slabs": list(slab_rows),
        "unreadable": list(unreadable),
    }


def _thin_pool(pool: Pool) -> Optional[Dict[str, object]]:
    thin = pool.thin_pool
    if thin is None:
        return None
    return {
        "name": thin.name,
        "data_bytes": thin.data_bytes,
        "data_used_bytes": thin.data_used_bytes,
        "metadata_bytes": thin.metadata_bytes,
        "metadata_used_bytes": thin.metadata_used_bytes,
        "snapshots": sum(1 for s in pool.slabs if s.origin),
    }


COLUMNS = ("SLAB", "SIZE", "FS", "SCOPE", "STATE", "LAST USED", "USE%", "POD", "MOUNT DIR")


def table(body: Dict[str, object]) -> List[str]:
    lines = []
    cells = [
        [
            r["name"], mib(r["size_bytes"]), r["fs"], r["scope"], r["state"],
            "now" if r["mounted_at"] else age(r["last_used_s"]),
            "-" if r["usage_percent"] is None else f"{r['usage_percent']:.0f}%",
            r["pod"] or "-", r["mount_dir"] or "-",
        ]
        for r in body["slabs"]
    ]
    if cells:
        widths = [max(len(str(row[i])) for row in [list(COLUMNS)] + cells) for i in range(len(COLUMNS))]
        for row in [list(COLUMNS)] + cells:
            lines.append("  ".join(str(value).ljust(width) for value, width in zip(row, widths)).rstrip())
        lines.append("")
    vg = body["volume_group"]
    counts = body["counts"]
    shown = ", ".join(f"{counts[name]} {name}" for name in STATES if counts[name] or name in ("in use", "free"))
    lines.append(
        f"volume group {vg['name']}: {mib(vg['size_bytes'])}, {mib(vg['free_bytes'])} free, "
        f"{mib(vg['slab_bytes'])} in {len(body['slabs'])} slab(s): {shown}"
    )
    thin = body.get("thin_pool")
    if thin:
        lines.append(
            f"thin pool {thin['name']}: {mib(thin['data_used_bytes'])} of {mib(thin['data_bytes'])} data used "
            f"({100 * thin['data_used_bytes'] / max(thin['data_bytes'], 1):.0f}%), metadata "
            f"{100 * thin['metadata_used_bytes'] / max(thin['metadata_bytes'], 1):.0f}% used; "
            f"{thin['snapshots']} slab(s) are snapshots of a warm one"
        )
    if body["unreadable"]:
        lines.append(
            f"tagged {', '.join(body['unreadable'])} but the tags do not describe a slab: "
            f"the driver leaves them alone (see ax-vol-plugin doctor)"
        )
    return lines


@click.command(short_help="Slabs, their state, and the totals.")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object: {volume_group, thin_pool, counts, slabs, unreadable}."
)
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Every slab (size, fs, scope, state, pod, mount dir, last used, use%) and the totals."""
    config = load_config(ctx)
    snapshot = read(lvm_of(runner_of(ctx), config))
    if snapshot.pool is None:
        message = (
            f"volume group {config.volume_group} does not exist: the driver makes it on {config.device} "
            f"at the first mount, or run ax-vol-plugin prepare"
        )
        if as_json:
            click.echo(json.dumps({"volume_group": None, "device": config.device, "message": message}, indent=2))
        else:
            click.echo(message)
        raise SystemExit(EXIT_OK)
    body = summary(snapshot.pool, rows(snapshot.pool, snapshot.mounts, now()), snapshot.unreadable)
    if as_json:
        click.echo(json.dumps(body, indent=2))
    else:
        click.echo("\n".join(table(body)))
