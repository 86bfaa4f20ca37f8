"""The `ax-vol-plugin` command group. Each subcommand lives in its own module of this package
and is registered here; the exit codes below are also in `ax-vol-plugin --help` (EPILOG) and
in the README."""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..config import PATH_ENV
from .common import EXIT_FAILED, EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE
from .configuration import show_config
from .doctor import doctor
from .evict import evict
from .gc import gc
from .prepare import prepare
from .status import status

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE", "main", "run"]


EPILOG = """\b
Exit codes:
  0  done; or nothing to do
  1  problems found or left (doctor: a check failed; prepare: the device is not blank)
  2  bad arguments, or a change not confirmed (no --yes and no terminal, or answered no)
  3  the command could not do its work (config unreadable, LVM failed, node lock busy)

gc, evict and prepare change the pool: they ask first unless given --yes, and take the driver's
node lock. status, doctor and config only read."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(__version__, prog_name="ax-vol-plugin")
@click.option(
    "--config",
    "config_path",
    envvar=PATH_ENV,
    metavar="FILE",
    help="Node config file (default /etc/ax-vol-plugin/vol_plugin.conf).",
)
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Inspect and maintain the ax/vol_plugin slab pool on this node."""
    ctx.ensure_object(dict)["config_path"] = config_path


for command in (status, gc, evict, prepare, doctor, show_config):
    main.add_command(command)


def run() -> None:
    """Entry point of dist/ax-vol-plugin."""
    sys.exit(main(prog_name="ax-vol-plugin"))
