"""`ax-vol-plugin prepare`: make the volume group now instead of at the first mount, or switch a
drained node between thick and thin provisioning.

Making it is the driver's own function (volume_group.create_on_blank_device), so the same
refusal: a device carrying any signature is left as it is, and the message names what is on it.
Running it again once the volume group exists in the mode asked for changes nothing.

Switching (--thin on a thick volume group, --thick on a thin one) deletes every slab, as a thick
slab cannot move into a thin pool nor a thin one out of it: only free caches are lost, since it
refuses while any slab is in use or being made (drain the node first), and it is never done by
the driver on its own (pool.check_provisioning refuses mounts until an admin has run this).
"""

from __future__ import annotations

from typing import Optional

import click

from .. import volume_group
from ..errors import DeviceRefused, DriverError
from ..pool import Condition, Pool, Provisioning, condition
from .common import (
    EXIT_PROBLEMS,
    confirm,
    fail,
    load_config,
    locked,
    lvm_of,
    mib,
    read,
    reread_under_lock,
    runner_of,
)


@click.command(short_help="Create the volume group on a blank device, or switch it thick/thin.")
@click.option("--device", metavar="DEV", help="The blank disk to hold the pool (default: device in the config).")
@click.option("--thin", "mode", flag_value="thin", help="Thin provisioning: a thin pool holding every slab.")
@click.option("--thick", "mode", flag_value="thick", help="Thick provisioning: each slab its own extents.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def prepare(ctx: click.Context, device: Optional[str], mode: Optional[str], yes: bool) -> None:
    """Create the volume group on a blank device (refuses any device with a signature); with
    --thin or --thick, switch an existing one to that mode (deletes its free slabs)."""
    config = load_config(ctx)
    wanted = Provisioning(mode) if mode else config.provisioning
    device = device or config.device
    runner = runner_of(ctx)
    lvm = lvm_of(runner, config)
    existing = read(lvm).pool
    if existing is not None:
        if mode is None:
            # Only an explicit --thin or --thick switches: a bare prepare (a bootstrap script run
            # again) never deletes caches because the config and the volume group disagree.
            click.echo(f"volume group {config.volume_group} already exists; nothing to do")
            _note_config(config, existing.provisioning)
            return
        _switch(config, lvm, existing, wanted, yes)
        _note_config(config, wanted)
        return
    try:
        volume_group.check_blank_device(runner, lvm, device)
    except DriverError as err:
        fail(str(err), EXIT_PROBLEMS)
    what = " with a thin pool" if wanted is Provisioning.THIN else ""
    confirm(f"Create volume group {config.volume_group}{what} on {device}? Anything written to it later is slabs only", yes)
    with locked(config):
        if read(lvm).pool is not None:  # the driver's first mount may have made it meanwhile
            click.echo(f"volume group {config.volume_group} already exists; nothing to do")
            return
        try:
            volume_group.create_on_blank_device(runner, lvm, device, provisioning=wanted)
        except DeviceRefused as err:  # something was written to it since the check above
            fail(str(err), EXIT_PROBLEMS)
    pool = read(lvm).pool
    size = f" ({mib(pool.vg_size_bytes)})" if pool is not None else ""
    click.echo(f"created volume group {config.volume_group}{what} on {device}{size}")
    if device != config.device:
        click.echo(f"note: the config names device {config.device}; the driver uses it only to make a missing volume group")
    _note_config(config, wanted)


def _switch(config, lvm, pool: Pool, wanted: Provisioning, yes: bool) -> None:
    if pool.provisioning is wanted:
        click.echo(f"volume group {config.volume_group} already exists; nothing to do")
        return
    _check_drained(pool, read(lvm))
    confirm(
        f"Switch volume group {config.volume_group} to {wanted.value} provisioning? Its {len(pool.slabs)} free "
        f"slab(s) are deleted (their caches are lost)", yes,
    )
    with locked(config):
        pool, facts = reread_under_lock(lvm)
        if pool.provisioning is wanted:
            click.echo(f"volume group {config.volume_group} is {wanted.value} already; nothing to do")
            return
        _check_drained(pool, None, facts)
        left = lvm.remove([s.name for s in pool.slabs])
        if left:
            fail(f"could not delete {', '.join(left)} (busy: mounted in another mount namespace?); "
                 f"the volume group is left {pool.provisioning.value} with what remains; run it again once "
                 "they are free", EXIT_PROBLEMS)
        if wanted is Provisioning.THIN:
            volume_group.create_thin_pool(lvm, pool.vg_size_bytes)
        elif lvm.remove([pool.thin_pool.name]):
            fail(f"could not delete thin pool {pool.thin_pool.name} (its slabs are deleted); run it again", EXIT_PROBLEMS)
    click.echo(f"volume group {config.volume_group} is now {wanted.value}: deleted {len(pool.slabs)} free slab(s)")


def _check_drained(pool: Pool, snapshot=None, facts=None) -> None:
    """Refuse while any slab is in use or being made, or the volume group holds LVs that are
    not slabs (which a thin pool on all its space would need gone)."""
    if facts is None:
        from .. import inventory

        facts = inventory.gather_facts(pool, snapshot.mounts)
    busy = [s.name for s in pool.slabs if condition(s, facts) in (Condition.IN_USE, Condition.BUSY)]
    if busy:
        fail(f"slab(s) {', '.join(busy)} are in use or being made: drain the node first; nothing changed", EXIT_PROBLEMS)
    if pool.other_volumes:
        fail(f"volume group {pool.volume_group} holds logical volumes that are not slabs "
             f"({', '.join(pool.other_volumes)}); nothing changed", EXIT_PROBLEMS)


def _note_config(config, wanted: Provisioning) -> None:
    if config.provisioning is not wanted:
        click.echo(f"note: the config says provisioning = {config.provisioning.value}; set provisioning = "
                   f"{wanted.value} for the driver to use the volume group")
