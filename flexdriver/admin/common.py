"""What every subcommand shares: the config, the command runner, one-line errors, the pool as
the driver sees it, confirmation of changes, and the node lock."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator, NoReturn, Optional, Tuple

import click

from .. import config as config_module
from .. import inventory
from ..errors import DriverError
from ..pool import Condition, Facts, Pool, Provisioning, Slab, State, condition
from ..system.lock import node_lock
from ..system.lvm import LVM
from ..system.runner import Runner

# Exit codes every subcommand keeps to, so that scripts and tools can rely on them (listed for
# people in `ax-vol-plugin --help`).
EXIT_OK = 0
EXIT_PROBLEMS = 1  # the command ran and found (or left) something wrong
EXIT_USAGE = 2  # bad arguments (click's own code for usage errors), or a change not confirmed
EXIT_FAILED = 3  # the command could not do its work (config unreadable, LVM failed, lock busy)

# A slab LVM will not remove: its device is busy, most often because its filesystem is still
# mounted in another mount namespace. It keeps its tags, so the driver's next call or gc tries again.
BUSY = ("could not delete {name}: its device is busy (its filesystem may still be mounted in another mount "
        "namespace); left for later")


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"ax-vol-plugin: {message}", err=True)
    sys.exit(code)


def load_config(ctx: click.Context) -> config_module.Config:
    path = (ctx.obj or {}).get("config_path")
    try:
        return config_module.load({config_module.PATH_ENV: path} if path else {})
    except DriverError as err:
        fail(str(err))


def runner_of(ctx: click.Context) -> Runner:
    """The command runner; tests put a fake one in the context object."""
    return (ctx.obj or {}).get("runner") or Runner()


def lvm_of(runner: Runner, config: config_module.Config) -> LVM:
    """The node's LVM, reporting the thin pool's figures when the node is in thin mode."""
    return LVM(runner, config.volume_group, config.command_timeout_s, thin=config.provisioning is Provisioning.THIN)


def read(lvm: LVM) -> inventory.Snapshot:
    try:
        return inventory.read_pool(lvm)
    except DriverError as err:
        fail(str(err))


def reread_under_lock(lvm: LVM) -> Tuple[Pool, Facts]:
    """The pool and its facts read again once the node lock is held (call it inside `locked`):
    what was listed and confirmed may have changed meanwhile. Fails if the volume group went."""
    fresh = read(lvm)
    if fresh.pool is None:
        fail(f"volume group {lvm.vg} disappeared; nothing changed")
    return fresh.pool, inventory.gather_facts(fresh.pool, fresh.mounts)


def interactive() -> bool:
    return sys.stdin.isatty()


def confirm(question: str, yes: bool) -> None:
    """Go on only with --yes or a 'y' typed at a terminal; otherwise exit having changed nothing."""
    if yes:
        return
    if not interactive():
        fail("refusing to change the pool without --yes (no terminal to confirm on); nothing changed", EXIT_USAGE)
    if not click.confirm(question, default=False):
        fail("not confirmed; nothing changed", EXIT_USAGE)


@contextlib.contextmanager
def locked(config: config_module.Config) -> Iterator[None]:
    """The driver's node lock: no mount or unmount decides anything while a change is made."""
    try:
        with node_lock(config.run_dir, config.lock_timeout_s):
            yield
    except DriverError as err:
        fail(str(err))


def now() -> int:
    return int(time.time())


def mib(size_bytes: int) -> str:
    """Sizes as people read them: 256 MiB, 10 GiB, 1.5 GiB."""
    mb = size_bytes / (1 << 20)
    if mb < 1024:
        return f"{mb:.0f} MiB"
    gb = mb / 1024
    return f"{gb:.0f} GiB" if abs(gb - round(gb)) < 0.05 else f"{gb:.1f} GiB"


def age(seconds: Optional[int]) -> str:
    """A duration in its largest whole unit: 45s, 12m, 3h, 5d."""
    if seconds is None:
        return "-"
    seconds = max(0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# What `status` calls each slab, from the driver's own classification (pool.condition): the
# garbage the driver reclaims is told apart by why it is garbage.
STATES = ("in use", "busy", "free", "orphan", "half-made", "doomed")


def state_of(slab: Slab, facts: Facts) -> str:
    found = condition(slab, facts)
    if found is Condition.GARBAGE:
        if slab.state is State.DOOMED:
            return "doomed"
        if slab.state is State.CREATING:
            return "half-made"
        return "orphan"  # an anonymous slab whose pod is gone: deleted, not pooled
    return found.value
