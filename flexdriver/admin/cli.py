"""The `ax-vol-plugin` command group. Each subcommand lives in its own module of this package
and is registered here; exit codes are documented in EXIT_CODES and in the README."""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..config import PATH_ENV

# Exit codes every subcommand keeps to, so that scripts and tools can rely on them.
EXIT_OK = 0
EXIT_PROBLEMS = 1  # the command ran and found (or left) something wrong
EXIT_USAGE = 2  # bad arguments (click's own code for usage errors)
EXIT_FAILED = 3  # the command could not do its work (config unreadable, LVM failed, lock busy)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    ctx.obj = {"config_path": config_path}


# Registered after `main` and the exit codes exist: the subcommand imports both from here.
from .doctor import doctor  # noqa: E402

main.add_command(doctor)


def run() -> None:
    """Entry point of dist/ax-vol-plugin."""
    sys.exit(main(prog_name="ax-vol-plugin"))
