"""`ax-vol-plugin doctor`: is this node able to run the driver, and is its pool healthy?

One line per Check; exit 1 (EXIT_PROBLEMS) when any check fails. `--prerequisites` limits it to
what the node must have before the driver is installed; install/install.sh runs that mode with
the config it is about to write.
"""

from __future__ import annotations

import json
import sys
from typing import List

import click

from .. import checks as checks_module
from .. import config as config_module
from ..checks import Check
from ..errors import DriverError
from ..system.runner import Runner
from .cli import EXIT_FAILED, EXIT_OK, EXIT_PROBLEMS


def pool_health_checks(config: config_module.Config, runner: Runner) -> List[Check]:
    """Checks of the slab pool itself (volume group, slabs, tags), added after the prerequisites.

    The place where pool-health checks plug in; none yet.
    """
    return []


def run_checks(config: config_module.Config, runner: Runner, prerequisites_only: bool) -> List[Check]:
    found = checks_module.evaluate(checks_module.probe_node(config, runner))
    if not prerequisites_only:
        found += pool_health_checks(config, runner)
    return found


@click.command()
@click.option("--prerequisites", is_flag=True, help="Only what the node needs before the driver is installed.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: {ok, checks: [{name, ok, detail, fix}]}.")
@click.pass_context
def doctor(ctx: click.Context, prerequisites: bool, as_json: bool) -> None:
    """Check this node: tools, kernel, python3, the slab device (exit 1 if anything fails)."""
    path = (ctx.obj or {}).get("config_path")
    try:
        config = config_module.load({config_module.PATH_ENV: path} if path else {})
    except DriverError as err:
        click.echo(f"ax-vol-plugin: {err}", err=True)
        sys.exit(EXIT_FAILED)
    found = run_checks(config, Runner(), prerequisites)
    healthy = all(check.ok for check in found)
    if as_json:
        body = {"ok": healthy, "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix} for c in found]}
        click.echo(json.dumps(body, indent=2))
    else:
        for check in found:
            click.echo(check.line())
    sys.exit(EXIT_OK if healthy else EXIT_PROBLEMS)
