"""Facts about this node: who is alive, and what is on a block device."""

from __future__ import annotations

import os

from .runner import Runner

BOOT_ID = "/proc/sys/kernel/random/boot_id"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def process_identity(pid: int) -> str | None:
    """`<boot id>:<pid>:<start time>`: unique to one process for all time on this node.

    A pid alone is not: it is reused, and a reboot resets everything.
    """
    boot = (_read(BOOT_ID) or "").strip()
    stat = _read(f"/proc/{pid}/stat")
    if not boot or not stat:
        return None
    # Field 22 (start time); the command name in field 2 may hold spaces and parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    return f"{boot}:{pid}:{fields[19]}"


def written_bytes(pid: int) -> int:
    """What process `pid` (and the children it has reaped) sent towards storage so far; 0 when
    the kernel does not say."""
    for line in (_read(f"/proc/{pid}/io") or "").splitlines():
        if line.startswith("write_bytes:"):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return 0
    return 0


def is_alive(identity: str) -> bool:
    try:
        _, pid, _ = identity.split(":")
        return process_identity(int(pid)) == identity
    except ValueError:
        return False


def device_size(path: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def signatures(runner: Runner, device: str) -> str:
    """What blkid's low-level probe finds on `device` ('' when the device is blank)."""
    # -p probes the device itself, ignoring blkid's cache; exit 2 means nothing was found,
    # exit 8 that several signatures disagree (still not blank).
    result = runner.run(["blkid", "-p", "-o", "export", device], ok_codes=(0, 2, 8))
    if result.returncode == 2:
        return ""
    if result.returncode == 8:
        return "several conflicting signatures"
    found = []
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        if key in ("TYPE", "PTTYPE"):
            found.append(f"{key.lower()} {value}")
    return ", ".join(found) or "an unknown signature"
