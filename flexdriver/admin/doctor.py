"""`ax-vol-plugin doctor`: is this node able to run the driver, and is its pool healthy?

One line per Check; exit 1 (EXIT_PROBLEMS) when any check fails. `--prerequisites` limits it to
what the node must have before the driver is installed; install/install.sh runs that mode with
the config it is about to write.
"""

from __future__ import annotations

import json
import sys
from typing import List, Optional, Sequence, Tuple

import click

from .. import checks as checks_module
from .. import config as config_module
from .. import inventory
from ..checks import Check
from ..errors import DriverError
from ..pool import MDA_HEADER_BYTES, THIN_METADATA_HIGH_WATER, Facts, Pool, State, metadata_headroom
from ..system import lvm as lvm_module
from ..system.mounts import MountEntry
from ..system.runner import Runner
from .common import EXIT_OK, EXIT_PROBLEMS, load_config, lvm_of, mib, runner_of, state_of


def pool_health_checks(config: config_module.Config, runner: Runner) -> List[Check]:
    """Checks of the slab pool itself, added after the prerequisites: the volume group, every
    slab's tags, slabs and mounts that disagree, leftovers for gc, LVM metadata space."""
    lvm = lvm_of(runner, config)
    try:
        snapshot = inventory.read_pool(lvm)
    except DriverError as err:
        return [Check("volume group", False, f"{config.volume_group} cannot be read: {err}", "run as root; see lvs")]
    if snapshot.pool is None:
        return [missing_volume_group(config, runner)]
    pool, mounts = snapshot.pool, snapshot.mounts
    facts = inventory.gather_facts(pool, mounts)
    return [
        volume_group_present(pool),
        slab_tags(pool, snapshot.unreadable),
        in_use_unmounted(pool, facts),
        waiting_for_gc(pool, facts),
        slab_mounts(pool, mounts),
        metadata_space(pool, *_metadata_area(runner, config)),
        *([thin_pool_space(pool, config.thin_high_water)] if pool.thin_pool is not None else []),
    ]


def thin_pool_space(pool: Pool, high_water: float) -> Check:
    """Thin mode: the pool's data and metadata use against the marks past which the driver
    refuses new slabs, and whether a full pool fails writes at once."""
    thin = pool.thin_pool
    name = "thin pool"
    detail = (f"{pool.volume_group}/{thin.name}: data {thin.data_fraction:.0%} of {mib(thin.data_bytes)} used "
              f"(new slabs refused from {high_water:.0%}), metadata {thin.metadata_fraction:.0%} of "
              f"{mib(thin.metadata_bytes)} (refused from {THIN_METADATA_HIGH_WATER:.0%})")
    if not thin.error_when_full:
        return Check(name, False, f"{detail}; a full pool would queue writes for 60 s instead of failing them",
                     f"lvchange --errorwhenfull y {pool.volume_group}/{thin.name} (the next mount does it too)")
    if thin.data_fraction >= high_water or thin.metadata_fraction >= THIN_METADATA_HIGH_WATER:
        return Check(name, False, f"over its mark: {detail}; new mounts are refused once no free slab is left to evict",
                     "let pods end, evict free slabs (ax-vol-plugin evict), or give the node a bigger disk")
    return Check(name, True, detail)


def missing_volume_group(config: config_module.Config, runner: Runner) -> Check:
    device = checks_module.device(checks_module.probe_device(config, runner, lvm_ready=True), config.volume_group)
    if device.ok:
        return Check(
            "volume group", True,
            f"{config.volume_group} does not exist yet; {config.device} is blank and ready for it "
            f"(made at the first mount, or by ax-vol-plugin prepare)",
        )
    return Check("volume group", False, f"{config.volume_group} does not exist and {device.detail}", device.fix)


def volume_group_present(pool: Pool) -> Check:
    return Check(
        "volume group", True,
        f"{pool.volume_group}: {len(pool.slabs)} slab(s), {mib(pool.vg_free_bytes)} of {mib(pool.vg_size_bytes)} free",
    )


def slab_tags(pool: Pool, unreadable: Sequence[str]) -> Check:
    if unreadable:
        return Check(
            "slab tags", False,
            f"{', '.join(unreadable)} in {pool.volume_group} carry the ax.slab tag but tags the driver cannot read; "
            f"it leaves them alone",
            f"look at lvs -o lv_name,lv_tags {pool.volume_group}; lvremove them if nothing needs their data",
        )
    return Check("slab tags", True, f"all {len(pool.slabs)} slab(s) readable")


def in_use_unmounted(pool: Pool, facts: Facts) -> Check:
    found = [
        s for s in pool.slabs
        if s.state in (State.USED, State.CLAIMED) and state_of(s, facts) == "in use"
        and s.device not in facts.mounted_devices
    ]
    if found:
        listed = "; ".join(f"{s.name} for {s.mount_dir}" for s in found)
        return Check(
            "slabs in use, unmounted", False, f"tagged in use but mounted nowhere: {listed}",
            "kubelet mounts them again when their pods start (after a reboot, say); once a pod is deleted "
            "and its dir removed, ax-vol-plugin gc returns its slab to the pool",
        )
    return Check("slabs in use, unmounted", True, "every slab in use is mounted")


def waiting_for_gc(pool: Pool, facts: Facts) -> Check:
    found = [(s, state_of(s, facts)) for s in pool.slabs]
    left = [f"{s.name} ({state})" for s, state in found if state in ("orphan", "half-made", "doomed")]
    if left:
        return Check(
            "slabs waiting for gc", False, ", ".join(left),
            "ax-vol-plugin gc (the driver's next mount reclaims them too)",
        )
    return Check("slabs waiting for gc", True, "none")


def slab_mounts(pool: Pool, mounts: Sequence[MountEntry]) -> Check:
    by_device = {s.device: s for s in pool.slabs if s.device is not None}
    wrong = []
    for entry in mounts:
        slab = by_device.get(entry.device)
        if slab is None:
            continue
        if slab.state not in (State.USED, State.CLAIMED):  # claimed: being mounted for its pod right now
            wrong.append(f"{slab.name} is mounted on {entry.mount_point} but tagged {slab.state.value}")
        elif slab.mount_dir != entry.mount_point:
            wrong.append(f"{slab.name} is mounted on {entry.mount_point} but recorded for {slab.mount_dir}")
    if wrong:
        return Check(
            "slab mounts", False, "; ".join(wrong),
            "the driver mounts a slab only on the dir it records: umount the extra mounts "
            "unless they were made by hand on purpose",
        )
    mounted = sum(1 for s in pool.slabs if s.device in {e.device for e in mounts})
    return Check("slab mounts", True, f"{mounted} mounted, each on its own dir")


# Below this fraction of the room LVM's metadata text may take, a burst of new slabs could fill
# it (the driver then refuses new slabs; past it every lvcreate and lvchange would fail).
METADATA_LOW = 0.125


def metadata_space(pool: Pool, free_bytes: Optional[int], size_bytes: Optional[int]) -> Check:
    name = "volume group metadata"
    if free_bytes is None or not size_bytes:
        return Check(
            name, False, f"vgs does not report the metadata area of {pool.volume_group}",
            "see vgs -o vg_mda_free,vg_mda_size",
        )
    # LVM writes each change as a new copy beside the old one: the text may fill half the area,
    # and what vgs reports free is what that half leaves.
    room = metadata_headroom(free_bytes, size_bytes) or 0
    largest = metadata_headroom((size_bytes - MDA_HEADER_BYTES) // 2, size_bytes) or 1
    detail = (f"{max(room, 0) // 1024} KiB of {largest // 1024} KiB left for the metadata text "
              f"({size_bytes // 1024} KiB area), {len(pool.slabs)} slab(s)")
    if room < largest * METADATA_LOW:
        return Check(
            name, False, f"low: {detail}",
            "evict free slabs (ax-vol-plugin evict); for more room, drain the node, vgremove the volume group "
            "and make it again with ax-vol-plugin prepare (8 MiB area)",
        )
    return Check(name, True, detail)


def _metadata_area(runner: Runner, config: config_module.Config) -> Tuple[Optional[int], Optional[int]]:
    try:
        result = runner.run(
            ["vgs", *lvm_module.REPORT, "-o", "vg_mda_free,vg_mda_size", config.volume_group],
            timeout=config.command_timeout_s,
        )
        (row,) = lvm_module._rows(result.stdout, "vg")
        return int(row["vg_mda_free"]), int(row["vg_mda_size"])
    except (DriverError, ValueError, KeyError):
        return None, None


def run_checks(config: config_module.Config, runner: Runner, prerequisites_only: bool) -> List[Check]:
    found = checks_module.evaluate(checks_module.probe_node(config, runner))
    if not prerequisites_only:
        found += pool_health_checks(config, runner)
    return found


@click.command(short_help="Check the node and its pool.")
@click.option("--prerequisites", is_flag=True, help="Only what the node needs before the driver is installed.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: {ok, checks: [{name, ok, detail, fix}]}.")
@click.pass_context
def doctor(ctx: click.Context, prerequisites: bool, as_json: bool) -> None:
    """Check this node (tools, kernel, python3, the slab device) and its pool (exit 1 if anything fails)."""
    config = load_config(ctx)
    found = run_checks(config, runner_of(ctx), prerequisites)
    healthy = all(check.ok for check in found)
    if as_json:
        body = {"ok": healthy, "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix} for c in found]}
        click.echo(json.dumps(body, indent=2))
    else:
        for check in found:
            click.echo(check.line())
    sys.exit(EXIT_OK if healthy else EXIT_PROBLEMS)
