"""`ax-vol-plugin config`: the node config as the driver reads it, every key resolved (the file's
value, else the built-in default). Read-only.

Scripts (install/uninstall.sh) ask it for the values they need instead of parsing the file
themselves: a second parser would read some files differently from the driver (key case,
continuation lines, sections, a file the driver refuses), and uninstall --purge deletes what
the values name.
"""

from __future__ import annotations

import json
from typing import Tuple

import click

from .. import config as config_module
from .common import EXIT_FAILED, EXIT_USAGE, fail, load_config

KEYS = config_module.Config._fields


def _printable(key: str, value: object) -> str:
    """One value on one line of its own, or a refusal: a script reads one line per key, so a
    value holding a line break or another control character would shift or forge the ones after."""
    text = str(value)
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        fail(f"{key} holds a line break or another control character ({text!r}); fix the config file", EXIT_FAILED)
    return text


@click.command("config", short_help="Print the config as the driver reads it.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object of every key (or of the KEYs given).")
@click.argument("keys", nargs=-1, metavar="[KEY]...")
@click.pass_context
def show_config(ctx: click.Context, as_json: bool, keys: Tuple[str, ...]) -> None:
    """Print the config as the driver reads it: `key = value` for every key, or, given KEYs,
    only their values, one per line in the order asked (for scripts)."""
    unknown = [key for key in keys if key not in KEYS]
    if unknown:
        fail(f"unknown key '{unknown[0]}' (known: {', '.join(KEYS)})", EXIT_USAGE)
    # Enum values (provisioning) as the words the file takes.
    values = {key: getattr(value, "value", value) for key, value in load_config(ctx)._asdict().items()}
    chosen = list(keys) or list(KEYS)
    if as_json:
        click.echo(json.dumps({key: values[key] for key in chosen}, indent=1))
    else:
        # Every value checked before the first is printed: a refusal leaves no partial answer.
        shown = [(key, _printable(key, values[key])) for key in chosen]
        for key, text in shown:
            click.echo(text if keys else f"{key} = {text}")
