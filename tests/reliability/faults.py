"""Faults from below the driver, made for real inside the VM and always undone.

- A system tool replaced by a script that fails or hangs. /usr is a throw-away overlay in the
  VM; the driver looks in /usr/sbin first (runner.SEARCH_PATH), so a script there takes the
  place of the real tool for the driver, and is removed (the real one put back) afterwards.
- A device that goes away: a device-mapper linear map over the spare disk, switched to an error
  table (every read and write fails, as when a disk drops off the bus), and back. The map starts
  1 MiB into the disk, so LVM, which scans the spare disk too, finds the physical volume's label
  only on the map: at offset 0 it would see the same PV twice and refuse to change the VG.
- The node config rewritten (small command timeout) and restored.
"""

from __future__ import annotations

import contextlib
import os

from tests.realkernel import node
from tests.realkernel.conftest import CONFIG_PATH, node_config

SBIN = "/usr/sbin"
HANG_MARKER = "3597"  # the wrapper's sleep, so the checker can tell it from any other sleep

FAIL_SCRIPT = """#!/bin/sh
echo "{tool}: simulated failure: Input/output error on the scratch disk" >&2
exit 5
"""
# The sleep is a grandchild of the driver holding its pipes: only killing the whole process
# group of the timed-out command ends it.
HANG_SCRIPT = f"""#!/bin/sh
/bin/sleep {HANG_MARKER} &
wait
"""


# LVM's commands are links to one binary, and the driver runs its reads, new slabs and tag
# changes inside that binary's shell (`lvm` reading commands on stdin): replacing the link alone
# would miss those. So a failing or hanging LVM command is made by putting this wrapper in the
# binary's place: the command fails (or hangs) whether it runs alone or as a line sent to the
# shell (the line is answered with the failure on stderr, or never, instead of reaching LVM);
# everything else runs the real binary under its own name, which is how LVM tells its commands
# apart.
LVM_COMMANDS = {"lvs", "vgs", "pvs", "lvcreate", "lvchange", "lvremove", "vgcreate", "vgchange"}
LVM_WRAPPER = """#!/bin/bash
real=/usr/sbin/.lvm.real
message="{tool}: simulated failure: Input/output error on the scratch disk"
fault() {{
  {fault}
}}
name=$(basename "$0")
if [ "$name" = {tool} ]; then
  fault
  exit 5
fi
if [ "$name" = lvm ] && [ $# -eq 0 ]; then
  while IFS= read -r line; do
    case "$line" in
      "{tool} "*) fault ;;
      *) printf '%s\\n' "$line" ;;
    esac
  done | exec -a lvm "$real"
  exit
fi
exec -a "$name" "$real" "$@"
"""
LVM_FAULTS = {"fail": 'echo "  $message" >&2', "hang": f"/bin/sleep {HANG_MARKER}"}


@contextlib.contextmanager
def replaced_tool(tool: str, script: str):
    """`tool` fails (FAIL_SCRIPT) or hangs (HANG_SCRIPT) for the driver until the block ends."""
    text = script.format(tool=tool)
    if tool in LVM_COMMANDS:
        fault = LVM_FAULTS["fail" if script == FAIL_SCRIPT else "hang"]
        tool, text = "lvm", LVM_WRAPPER.format(tool=tool, fault=fault)
    target = os.path.join(SBIN, tool)
    saved = os.path.join(SBIN, f".{tool}.real")
    had_real = os.path.lexists(target)
    if had_real:
        os.rename(target, saved)
    try:
        with open(target, "w") as handle:
            handle.write(text)
        os.chmod(target, 0o755)
        yield
    finally:
        os.unlink(target)
        if had_real:
            os.rename(saved, target)


def failing(tool: str):
    return replaced_tool(tool, FAIL_SCRIPT)


def hanging(tool: str):
    return replaced_tool(tool, HANG_SCRIPT)


def write_config(**settings) -> None:
    with open(CONFIG_PATH, "w") as handle:
        handle.write(node_config(**settings))


@contextlib.contextmanager
def config(**settings):
    write_config(**settings)
    try:
        yield
    finally:
        write_config()


class FragileDevice:
    """/dev/mapper/<name>: the spare disk through a linear map that can be made to fail."""

    OFFSET_SECTORS = 2048

    def __init__(self, backing: str, name: str = "ax-fragile") -> None:
        self.backing = backing
        self.name = name
        self.path = f"/dev/mapper/{name}"
        with open(f"/sys/block/{os.path.basename(backing)}/size") as handle:
            self.sectors = int(handle.read()) - self.OFFSET_SECTORS

    def _linear(self) -> str:
        return f"0 {self.sectors} linear {self.backing} {self.OFFSET_SECTORS}"

    def create(self) -> None:
        # Whatever an earlier trial left at the start of the disk (a PV label) must not be seen.
        node.run("wipefs", "--all", "--force", self.backing)
        node.run("dmsetup", "create", self.name, "--table", self._linear())
        node.run("udevadm", "settle", check=False)

    def _swap(self, table: str) -> None:
        node.run("dmsetup", "suspend", "--noflush", self.name, check=False)
        node.run("dmsetup", "load", self.name, "--table", table)
        node.run("dmsetup", "resume", self.name)

    def vanish(self) -> None:
        self._swap(f"0 {self.sectors} error")

    def come_back(self) -> None:
        self._swap(self._linear())

    def remove(self) -> None:
        node.run("dmsetup", "remove", "--force", self.name, check=False)
