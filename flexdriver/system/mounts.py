"""The kernel's mount table, read from /proc/self/mountinfo, and mount/umount."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from ..record import record
from .runner import Runner

MOUNTINFO = "/proc/self/mountinfo"
MOUNT_TIMEOUT_S = 300.0
_ESCAPE = re.compile(r"\\([0-7]{3})")


@record
class MountEntry:
    mount_point: str
    device: tuple[int, int]
    fs_type: str
    source: str


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            major, minor = fields[2].split(":")
            entries.append(
                MountEntry(
                    mount_point=_unescape(fields[4]),
                    device=(int(major), int(minor)),
                    fs_type=fields[sep + 1],
                    source=_unescape(fields[sep + 2]),
                )
            )
        except (ValueError, IndexError):
            continue  # a line this parser does not understand is not one of ours
    return entries


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash as octal escapes.
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def read_mounts(path: str = MOUNTINFO) -> list[MountEntry]:
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        return parse_mountinfo(handle.read())


def mount_at(entries: Sequence[MountEntry], mount_point: str) -> MountEntry | None:
    """The topmost mount on `mount_point` (later lines are mounted over earlier ones)."""
    found = None
    for entry in entries:
        if entry.mount_point == mount_point:
            found = entry
    return found


def canonical(path: str) -> str:
    # The mount table holds resolved paths; /var/lib/kubelet is a symlink on some distributions.
    return os.path.realpath(path)


class Mounter:
    def __init__(self, runner: Runner, timeout_s: float = MOUNT_TIMEOUT_S) -> None:
        self.runner = runner
        self.timeout_s = timeout_s

    def mount(self, device: str, mount_point: str, fs_type: str, read_only: bool, thin: bool = False) -> None:
        options = ["ro" if read_only else "rw", "noatime"]
        if thin and fs_type == "ext4":
            # mkfs leaves the inode tables to the kernel, which zeroes them in the background
            # after mount. On a thin volume they already read as zeros (the pool zeroes what it
            # provisions), so that would only provision zero-filled chunks: for every new volume,
            # and again in every snapshot of one not yet done (a 10 GiB slab has 160 MiB of them).
            options.append("noinit_itable")
        self.runner.run(
            ["mount", "-t", fs_type, "-o", ",".join(options), device, mount_point], timeout=self.timeout_s
        )

    def unmount(self, mount_point: str) -> None:
        # Never lazy (-l): the slab must really be released before it is deleted or handed on.
        self.runner.run(["umount", mount_point], timeout=self.timeout_s)
