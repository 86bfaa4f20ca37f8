"""Findings about a node, shared by the installer's prerequisite checks and `ax-vol-plugin doctor`.

A Check is one question with one answer: what was looked at, whether it is fine, what was seen,
and (when it is not fine) what the admin should do about it.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping, Sequence

from .config import Config
from .errors import CommandFailed, DeviceRefused
from .pool import Provisioning
from .record import record
from .system import host, lvm, udev
from .system.runner import Runner


@record
class Check:
    name: str  # short and stable, e.g. "lvm2 tools"; tools match on it
    ok: bool
    detail: str  # what was seen, in a person's words
    fix: str = ""  # what to do when not ok

    def line(self) -> str:
        mark = "ok " if self.ok else "FAIL"
        text = f"{mark} {self.name}: {self.detail}"
        return text if self.ok or not self.fix else f"{text} -> {self.fix}"


# The node's prerequisites. Each check is a pure function of facts (unit-testable with no node);
# `probe_node` gathers those facts through the system adapters and `prerequisites` joins the two.

LVM_TOOLS = ("lvm", "lvs", "vgs", "pvs", "vgcreate", "lvcreate", "lvchange", "lvremove")
FS_TOOLS = {"ext4": "mkfs.ext4", "xfs": "mkfs.xfs"}
FS_PACKAGES = {"ext4": "e2fsprogs", "xfs": "xfsprogs"}
OTHER_TOOLS = ("blkid", "mount", "umount")
# Thin mode only: LVM runs thin_check before it activates a thin pool (and refuses without it),
# fstrim gives a slab's deleted blocks back to the pool, tune2fs/xfs_admin give snapshots UUIDs.
THIN_TOOLS = {"thin_check": "thin-provisioning-tools", "fstrim": "util-linux", "tune2fs": "e2fsprogs",
              "xfs_admin": "xfsprogs"}
MIN_PYTHON = (3, 9)


@record
class DeviceFacts:
    path: str
    exists: bool
    is_block: bool = False
    signatures: str = ""  # what blkid -p found; '' when blank
    volume_group: str = ""  # the VG the device is a physical volume of, if any
    error: str = ""  # why it could not be looked at


@record
class NodeFacts:
    tools: Mapping[str, str | None]  # program -> absolute path, None when missing
    proc_misc: str  # /proc/misc ('' when unreadable)
    dm_class_dir: bool  # /sys/class/misc/device-mapper exists
    dm_loadable: bool  # modprobe --dry-run dm_mod succeeded
    python_version: tuple[int, ...]
    python_path: str
    device: DeviceFacts
    volume_group: str  # the configured one
    thin: bool = False  # provisioning = thin
    thin_loadable: bool = False  # modprobe --dry-run dm_thin_pool succeeded


def lvm_tools(tools: Mapping[str, str | None]) -> Check:
    missing = [name for name in LVM_TOOLS if not tools.get(name)]
    if missing:
        return Check("lvm2 tools", False, f"not found: {', '.join(missing)}", "install the lvm2 package")
    return Check("lvm2 tools", True, f"found in {os.path.dirname(tools['lvcreate'] or '')}")


def filesystem_tools(tools: Mapping[str, str | None]) -> list[Check]:
    checks = []
    for fs, program in FS_TOOLS.items():
        path = tools.get(program)
        name = f"mkfs for {fs}"
        if path:
            checks.append(Check(name, True, path))
        else:
            checks.append(Check(name, False, f"{program} not found", f"install the {FS_PACKAGES[fs]} package"))
    return checks


def other_tools(tools: Mapping[str, str | None]) -> Check:
    missing = [name for name in OTHER_TOOLS if not tools.get(name)]
    if missing:
        return Check("util-linux tools", False, f"not found: {', '.join(missing)}", "install util-linux")
    return Check("util-linux tools", True, ", ".join(OTHER_TOOLS))


def device_mapper(proc_misc: str, class_dir: bool, loadable: bool) -> Check:
    listed = any(line.split()[1:] == ["device-mapper"] for line in proc_misc.splitlines())
    if listed or class_dir:
        return Check("device-mapper", True, "in the running kernel")
    if loadable:
        # LVM loads dm_mod itself on first use, so a loadable module is enough.
        return Check("device-mapper", True, "not loaded yet, module dm_mod is available")
    return Check(
        "device-mapper", False, "not in the running kernel and no dm_mod module to load",
        "boot a kernel with CONFIG_BLK_DEV_DM (or install its modules package)",
    )


def python3(version: Sequence[int], path: str) -> Check:
    shown = ".".join(str(part) for part in version[:3])
    if tuple(version[:2]) < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        return Check("python3", False, f"{path} is {shown}, the driver needs {need} or newer", f"install python3 >= {need}")
    return Check("python3", True, f"{path} {shown}")


def device(facts: DeviceFacts, volume_group: str) -> Check:
    name = "slab device"
    if facts.error:
        return Check(name, False, f"{facts.path}: {facts.error}", "check the device, or set device in the config")
    if not facts.exists:
        return Check(name, False, f"{facts.path} does not exist", "attach the disk, or set device in the config (--device)")
    if not facts.is_block:
        return Check(name, False, f"{facts.path} is not a block device", "set device to a whole disk or partition")
    if facts.volume_group == volume_group:
        return Check(name, True, f"{facts.path} already holds volume group {volume_group}")
    if facts.volume_group:
        return Check(
            name, False, f"{facts.path} belongs to another volume group, {facts.volume_group}",
            f"use another device, or set volume_group = {facts.volume_group} if it is meant for slabs",
        )
    if facts.signatures:
        return Check(
            name, False, f"{facts.path} is not blank: {facts.signatures}",
            f"use a blank disk; only if its data may go: wipefs --all {facts.path}",
        )
    return Check(name, True, f"{facts.path} is blank; volume group {volume_group} is made on it at the first mount")


def evaluate(facts: NodeFacts) -> list[Check]:
    return [
        lvm_tools(facts.tools),
        *filesystem_tools(facts.tools),
        other_tools(facts.tools),
        device_mapper(facts.proc_misc, facts.dm_class_dir, facts.dm_loadable),
        python3(facts.python_version, facts.python_path),
        device(facts.device, facts.volume_group),
        *(thin_prerequisites(facts.tools, facts.thin_loadable) if facts.thin else []),
    ]


def thin_prerequisites(tools: Mapping[str, str | None], loadable: bool) -> list[Check]:
    missing = [program for program in THIN_TOOLS if not tools.get(program)]
    packages = sorted({THIN_TOOLS[program] for program in missing})
    found = [
        Check("thin provisioning tools", False, f"not found: {', '.join(missing)}", f"install {', '.join(packages)}")
        if missing else Check("thin provisioning tools", True, ", ".join(THIN_TOOLS))
    ]
    found.append(
        Check("dm-thin", True, "module dm_thin_pool is available") if loadable
        else Check("dm-thin", False, "module dm_thin_pool cannot be loaded", "use a kernel with CONFIG_DM_THIN_PROVISIONING")
    )
    return found


def probe_node(config: Config, runner: Runner) -> NodeFacts:
    thin = config.provisioning is Provisioning.THIN
    tools: dict[str, str | None] = {}
    for program in (*LVM_TOOLS, *FS_TOOLS.values(), *OTHER_TOOLS, *THIN_TOOLS, "modprobe"):
        try:
            tools[program] = runner.resolve(program)
        except CommandFailed:
            tools[program] = None
    return NodeFacts(
        tools=tools,
        proc_misc=_read("/proc/misc"),
        dm_class_dir=os.path.isdir("/sys/class/misc/device-mapper"),
        dm_loadable=bool(tools["modprobe"]) and _succeeds(runner, ["modprobe", "--dry-run", "--quiet", "dm_mod"]),
        python_version=tuple(sys.version_info[:3]),
        python_path=sys.executable or "python3",
        device=probe_device(config, runner, lvm_ready=all(tools[name] for name in LVM_TOOLS)),
        volume_group=config.volume_group,
        thin=thin,
        thin_loadable=thin and bool(tools["modprobe"])
        and _succeeds(runner, ["modprobe", "--dry-run", "--quiet", "dm_thin_pool"]),
    )


def probe_device(config: Config, runner: Runner, lvm_ready: bool) -> DeviceFacts:
    try:
        path = udev.resolve_device(config.device)
    except DeviceRefused as err:  # a udev match of no disk, or of several
        return DeviceFacts(config.device, exists=True, error=str(err))
    kind = file_kind(path)
    if kind == "missing":
        return DeviceFacts(path, exists=False)
    if kind != "block":
        return DeviceFacts(path, exists=True, is_block=False)
    try:
        found = host.signatures(runner, path)
        owner = _volume_group_of(runner, path) if lvm_ready and "LVM2_member" in found else ""
    except CommandFailed as err:
        return DeviceFacts(path, exists=True, is_block=True, error=str(err))
    return DeviceFacts(path, exists=True, is_block=True, signatures=found, volume_group=owner)


def _volume_group_of(runner: Runner, device_path: str) -> str:
    result = runner.run(["pvs", *lvm.REPORT, "-o", "pv_name,vg_name", device_path], timeout=lvm.LVM_TIMEOUT_S)
    rows = lvm._rows(result.stdout, "pv")
    return rows[0].get("vg_name", "") if rows else ""


def file_kind(path: str) -> str:
    """'missing', 'block' or 'other' (following symlinks, as /dev/disk/by-id names are)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    return "block" if stat.S_ISBLK(mode) else "other"


def _succeeds(runner: Runner, argv: Sequence[str]) -> bool:
    try:
        runner.run(argv, timeout=30.0)
    except CommandFailed:
        return False
    return True


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""
