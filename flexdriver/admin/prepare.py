"""`ax-vol-plugin prepare`: make the volume group now instead of at the first mount.

The same function as the driver's first mount (volume_group.create_on_blank_device), so the
same refusal: a device carrying any signature is left as it is, and the message names what is
on it. Running it again once the volume group exists changes nothing.
"""

from __future__ import annotations

from typing import Optional

import click

from .. import volume_group
from ..errors import DeviceRefused, DriverError
from ..system.lvm import LVM
from .common import EXIT_PROBLEMS, confirm, fail, load_config, locked, mib, read, runner_of


@click.command(short_help="Create the volume group on a blank device.")
@click.option("--device", metavar="DEV", help="The blank disk to hold the pool (default: device in the config).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def prepare(ctx: click.Context, device: Optional[str], yes: bool) -> None:
    """Create the volume group on a blank device (refuses any device with a signature)."""
    config = load_config(ctx)
    device = device or config.device
    runner = runner_of(ctx)
    lvm = LVM(runner, config.volume_group, config.command_timeout_s)
    if read(lvm).pool is not None:
        click.echo(f"volume group {config.volume_group} already exists; nothing to do")
        return
    try:
        volume_group.check_blank_device(runner, lvm, device)
    except DriverError as err:
        fail(str(err), EXIT_PROBLEMS)
    confirm(f"Create volume group {config.volume_group} on {device}? Anything written to it later is slabs only", yes)
    with locked(config):
        if read(lvm).pool is not None:  # the driver's first mount may have made it meanwhile
            click.echo(f"volume group {config.volume_group} already exists; nothing to do")
            return
        try:
            volume_group.create_on_blank_device(runner, lvm, device)
        except DeviceRefused as err:  # something was written to it since the check above
            fail(str(err), EXIT_PROBLEMS)
    pool = read(lvm).pool
    size = f" ({mib(pool.vg_size_bytes)})" if pool is not None else ""
    click.echo(f"created volume group {config.volume_group} on {device}{size}")
    if device != config.device:
        click.echo(f"note: the config names device {config.device}; the driver uses it only to make a missing volume group")
