"""LVM through its reports: one `lvs` gives the whole pool; changes are single commands.

The pool's report, new slabs and tag changes go through one `lvm` shell per call (lvm_shell.py),
started by the runner whatever it is (a test's runner answers the shell's lines as LVM would, so
unit tests take the path nodes take): one LVM process per mount instead of two or three. What the
shell cannot settle (an empty report, tags that did not come back as asked, a shell that cannot
start or dies) is decided by the single commands, as before.

The shell gives no exit status, so a change's outcome comes from LVM's own words: the line it
prints once the change is committed (`Logical volume VG/LV changed.`, `Logical volume "LV"
created.`) with nothing at all on stderr. Anything else (a warning, an error, no line) is settled
by reading the LV back, as LVM may print that line for a change it made only in part.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

from ..errors import CommandFailed, CommandTimedOut
from ..record import record
from .lvm_shell import LVMShell, ShellUnavailable
from .runner import Runner

REPORT = ["--reportformat", "json", "--units", "b", "--nosuffix"]
LV_FIELDS = "lv_name,lv_size,lv_tags,lv_active,lv_kernel_major,lv_kernel_minor"
# vg_mda_*: the metadata area, which every new slab's LV section and every tag change is written
# to; the pool refuses new slabs before it fills (pool.metadata_headroom).
VG_FIELDS = "vg_name,vg_size,vg_free,vg_extent_size,vg_mda_free,vg_mda_size"
# Thin mode only (a thick node's report stays as it was): how full the thin pool's data and
# metadata are (the pool itself is known by its tag), and whether it fails writes when full.
THIN_FIELDS = "data_percent,metadata_percent,lv_metadata_size,lv_when_full"
LVM_TIMEOUT_S = 120.0
# The same report in the shell, where --reportformat is the shell's, not the command's: plain
# rows, fields in LV_FIELDS order after VG_FIELDS, joined by a character LVM allows in no name or tag.
SEPARATOR = "|"
SHELL_REPORT = ["--noheadings", "--units", "b", "--nosuffix", "--separator", SEPARATOR]
# Before every metadata change LVM archives the whole volume group's metadata under
# /etc/lvm/archive, and prunes only files older than backup/retain_days (30 by default;
# retain_min is a floor on their number, not a cap). The driver changes tags a few times per pod,
# so a CI node doing 1,000 pods a day would keep tens of thousands of copies of the whole pool's
# metadata, and LVM lists that dir on every change. With retain_days=0 LVM's own pruning keeps
# the node's retain_min newest archives (lvm.conf; 10 by default) and drops the rest at the next
# change, old ones included. /etc/lvm/backup/<vg>, the current metadata that vgcfgrestore restores,
# is still written on every change. Given per command it overrides that one setting for the
# driver's own commands only (the node's lvm.conf is left as it is), and it is a plain argument,
# so the lvm shell takes it as the single commands do (LVM applies a shell command's --config to
# that command alone).
BOUNDED_ARCHIVE = ["--config", "backup/retain_days=0"]
# LVM's words (libdm) when the kernel's thin pool already has the device id LVM chose for a new
# thin volume: see LVM.delete_orphan_thin_device.
ORPHAN_THIN_DEVICE = re.compile(r"already contains? thin device with device_id (\d+)")
# A change in the shell that LVM's own words settled: no read-back was needed.
CONFIRMED = object()


@record
class LogicalVolume:
    name: str
    size_bytes: int
    tags: frozenset[str]
    active: bool
    device: tuple[int, int] | None
    # Thin mode's fields (THIN_FIELDS), for the thin pool; None or False in a thick report.
    data_percent: float | None = None  # its data used
    metadata_percent: float | None = None  # its metadata used
    metadata_size_bytes: int | None = None  # its metadata LV
    error_when_full: bool = False  # it fails writes at once when full


@record
class VolumeGroupReport:
    name: str
    size_bytes: int
    free_bytes: int
    extent_bytes: int
    volumes: tuple[LogicalVolume, ...]
    metadata_free_bytes: int | None = None  # of the smallest metadata area; None if not reported
    metadata_size_bytes: int | None = None


def dm_path(volume_group: str, name: str) -> str:
    # device-mapper's name mangling: '-' inside a VG or LV name is doubled, one '-' joins them.
    return "/dev/mapper/{}-{}".format(volume_group.replace("-", "--"), name.replace("-", "--"))


class LVM:
    def __init__(
        self, runner: Runner, volume_group: str, timeout_s: float = LVM_TIMEOUT_S, shell: LVMShell | None = None,
        thin: bool = False,
    ) -> None:
        self.runner = runner
        self.vg = volume_group
        self.timeout_s = timeout_s
        self.shell = shell if shell is not None else LVMShell(runner, timeout_s)
        self.lv_fields = f"{LV_FIELDS},{THIN_FIELDS}" if thin else LV_FIELDS

    def start_shell(self) -> None:
        """Before the node lock: see LVMShell.start."""
        self.shell.start()

    def report(self) -> VolumeGroupReport | None:
        """The volume group and all its LVs, or None when the volume group does not exist."""
        found = self._report_in_shell()
        if found is not None:
            return found
        try:
            result = self.runner.run(
                ["lvs", *REPORT, "-o", f"{VG_FIELDS},{self.lv_fields}", self.vg], timeout=self.timeout_s
            )
        except CommandFailed:
            # lvs fails the same way for a missing VG and a real error; only the VG list tells.
            if self.vg not in self.volume_group_names():
                return None
            raise
        rows = _rows(result.stdout, "lv")
        if rows:
            vg_row = rows[0]
        else:  # no LVs yet: lvs has no row to carry the VG's fields
            listing = self.runner.run(["vgs", *REPORT, "-o", VG_FIELDS, self.vg], timeout=self.timeout_s)
            vg_row = _rows(listing.stdout, "vg")[0]
        return _volume_group(vg_row, rows)

    def _report_in_shell(self) -> VolumeGroupReport | None:
        """The report from the shell when it has rows; None leaves it to the single commands
        (an empty volume group, a missing one, an error: lvs says which by its exit status)."""
        fields = f"{VG_FIELDS},{self.lv_fields}".split(",")
        try:
            result = self.shell.run(["lvs", *SHELL_REPORT, "-o", ",".join(fields), self.vg])
        except ShellUnavailable:
            return None
        rows = []
        for line in result.report.splitlines():
            values = [value.strip() for value in line.strip().split(SEPARATOR)]
            if line.strip() and len(values) != len(fields):
                return None  # not the report asked for: let lvs itself answer
            if line.strip():
                rows.append(dict(zip(fields, values)))
        if not rows:
            return None
        try:
            return _volume_group(rows[0], rows)
        except (KeyError, ValueError):
            return None

    def volume_group_names(self) -> list[str]:
        result = self.runner.run(["vgs", *REPORT, "-o", "vg_name"], timeout=self.timeout_s)
        return [row["vg_name"] for row in _rows(result.stdout, "vg")]

    def create_volume_group(self, device: str) -> None:
        # vgcreate initialises the PV itself; --yes so nothing ever waits on a prompt.
        # --metadatasize: every slab is an LV section of about 1 KiB of metadata text (its
        # tags include a base64 mount dir), more once its extents fragment, and LVM needs room
        # for the old and the new copy of the text while it commits a change. The default area
        # (about 1 MiB) would fill at a few hundred slabs and then every lvcreate and lvchange
        # fails; 8 MiB holds thousands, costs under 1% of any disk worth pooling, and only the
        # text in use is ever read or written, so a big area does not slow LVM down.
        self.runner.run(
            ["vgcreate", "--yes", "--metadatasize", "8m", self.vg, device, *BOUNDED_ARCHIVE], timeout=self.timeout_s
        )

    def create_thin_pool(self, name: str, metadata_bytes: int, chunk_bytes: int, tags: Iterable[str]) -> None:
        """The thin pool, on all the volume group's free space (less its metadata and LVM's spare
        copy of it, which `lvconvert --repair` needs). --zero y: a block a slab writes for the
        first time is zeroed where the write does not cover it, so no pod ever reads what an
        earlier tenant's deleted slab left in that block. --discards nopassdown: a trim inside a
        slab unmaps its blocks in the pool and goes no further; with LVM's default (passdown)
        fstrim in a slab gave nothing back to the pool on a disk that ignores discards (qemu's
        default), measured in the VM, and the pool reuses its own blocks anyway."""
        argv = [
            "lvcreate", "--yes", "--type", "thin-pool", "--name", name, "--extents", "100%FREE",
            "--poolmetadatasize", f"{metadata_bytes}b", "--chunksize", f"{chunk_bytes}b", "--zero", "y",
            "--discards", "nopassdown",
        ]
        for tag in sorted(tags):
            argv += ["--addtag", tag]
        self.runner.run([*argv, self.vg, *BOUNDED_ARCHIVE], timeout=self.timeout_s)
        self.error_when_full(name)

    def error_when_full(self, pool: str) -> None:
        """A full thin pool fails writes at once; by default dm-thin queues them for 60 s first,
        and every pod writing to the node would hang that long. (LVM takes this only as a change
        to an existing pool, so the driver also sets it on any pool it finds without it.)"""
        self.runner.run(
            ["lvchange", "--errorwhenfull", "y", f"{self.vg}/{pool}", *BOUNDED_ARCHIVE], timeout=self.timeout_s
        )

    def create(self, name: str, size_bytes: int, tags: Iterable[str], thin_pool: str | None = None) -> None:
        """A new slab: `size_bytes` of the volume group's extents, or, in `thin_pool`, a thin
        volume of that virtual size (which reads as zeros until written, so needs no wiping)."""
        if thin_pool is None:
            argv = [
                "lvcreate", "--yes", "--wipesignatures", "y", "--zero", "y", "--activate", "y",
                "--size", f"{size_bytes}b", "--name", name,
            ]
        else:
            argv = ["lvcreate", "--yes", "--activate", "y", "--virtualsize", f"{size_bytes}b", "--name", name]
        for tag in sorted(tags):
            argv += ["--addtag", tag]
        argv += [self.vg if thin_pool is None else f"{self.vg}/{thin_pool}", *BOUNDED_ARCHIVE]
        self._creating_in_pool(argv, name, set(tags), thin_pool is not None)

    def snapshot(self, origin: str, name: str, tags: Iterable[str]) -> None:
        """A thin snapshot of `origin`, active (LVM would otherwise mark it to be skipped at
        activation), with only `tags`: LVM copies none of the origin's tags to a snapshot."""
        argv = ["lvcreate", "--yes", "--snapshot", "--setactivationskip", "n", "--activate", "y", "--name", name]
        for tag in sorted(tags):
            argv += ["--addtag", tag]
        argv += [f"{self.vg}/{origin}", *BOUNDED_ARCHIVE]
        self._creating_in_pool(argv, name, set(tags), True)

    def _creating_in_pool(self, argv: list[str], name: str, tags: set[str], thin: bool) -> None:
        """Run an lvcreate; in a thin pool, once more after deleting a thin device the kernel's pool
        holds and LVM does not know (see delete_orphan_thin_device), if that is why it failed."""
        try:
            if not self._create_in_shell(argv, name, tags):
                self.runner.run(argv, timeout=self.timeout_s)
        except CommandFailed as err:
            found = ORPHAN_THIN_DEVICE.search(err.stderr) if thin else None
            if found is None or not self.delete_orphan_thin_device(int(found.group(1))):
                raise
            self.runner.run(argv, timeout=self.timeout_s)

    def delete_orphan_thin_device(self, device_id: int) -> bool:
        """Settle the kernel's thin pool after an lvcreate that was killed between its message to
        the pool and the end of its work (SIGKILL, kubelet's timeout, the OOM killer), which LVM
        itself leaves to manual intervention: every later create and snapshot in the pool fails
        on thin device `device_id`, which the pool already has. True when settled (run the
        lvcreate once more), False when nothing was done. Two states, told apart by LVM's metadata:

        - no LV has the id (killed before LVM committed its new LV): the device holds only what the
          killed call was making, a new slab or a pod's snapshot never handed to anyone, and is
          deleted from the pool;
        - an LV has it (killed after LVM committed the LV with its create message queued, and after
          the pool made the device, before the pool's transaction id was moved on): LVM sends the
          queued message again and the pool refuses it. The message is done, so the pool's
          transaction id is moved to LVM's, as the killed command would have; only when the pool's
          is exactly one behind LVM's, the state one queued message leaves (each of the driver's
          LVM commands queues one).

        The driver holds the node lock around every create, so no other call is in between."""
        listing = self.runner.run(
            ["lvs", *REPORT, "-o", "lv_name,thin_id,pool_lv,lv_attr,transaction_id", self.vg], timeout=self.timeout_s
        )
        rows = _rows(listing.stdout, "lv")
        owner = [row for row in rows if row.get("thin_id", "").strip() == str(device_id)]
        pools = {row["lv_name"]: row for row in rows if row.get("lv_attr", "").startswith("t")}
        if owner and owner[0].get("pool_lv", "").strip("[] ") not in pools:
            return False
        for pool in sorted(pools):
            if owner and owner[0]["pool_lv"].strip("[] ") != pool:
                continue
            # The kernel's thin-pool target is the -tpool layer while thin volumes are active on
            # it, the pool's own node otherwise.
            for layer in ("-tpool", ""):
                device = dm_path(self.vg, pool).rsplit("/", 1)[1] + layer
                status = self.runner.run(["dmsetup", "status", device], timeout=self.timeout_s, ok_codes=(0, 1))
                fields = status.stdout.split()
                if len(fields) < 4 or fields[2] != "thin-pool":
                    continue
                if not owner:
                    message = f"delete {device_id}"
                else:
                    kernel, wanted = fields[3], pools[pool].get("transaction_id", "").strip()
                    if not (kernel.isdigit() and wanted.isdigit() and int(kernel) + 1 == int(wanted)):
                        return False
                    message = f"set_transaction_id {kernel} {wanted}"
                self.runner.run(["dmsetup", "message", device, "0", message], timeout=self.timeout_s)
                return True
        return False

    def _run_and_read_back(self, argv: list[str], target: str, fields: str, done_line: str):
        """Run a change in the shell, then, unless LVM confirmed it (`done_line` on stdout and an
        empty stderr: see the module's docstring), read `fields` of `target` back in it:
        (change, read-back), the read-back "confirmed" when LVM's words settled it; None when the
        shell could not run the change; read-back None when the shell went away after."""
        try:
            change = self.shell.run(argv)
        except ShellUnavailable:
            return None
        if not change.stderr and done_line in (line.strip() for line in change.stdout.splitlines()):
            return change, CONFIRMED
        try:
            return change, self.shell.run(["lvs", *SHELL_REPORT, "-o", fields, target])
        except ShellUnavailable:
            return change, None

    def _create_in_shell(self, argv: list[str], name: str, tags: set[str]) -> bool:
        """True when the shell created the LV, active and with every tag, as a read-back shows;
        False when it could not be used (the single command runs instead: if the shell's
        lvcreate did happen, that one fails on the existing name, and the slab, tagged as being
        created by this call, is reclaimed like any a dead call left); raises when the shell
        ran the command and the LV is not there as asked."""
        target = f"{self.vg}/{name}"
        done = self._run_and_read_back(argv, target, "lv_active,lv_tags", f'Logical volume "{name}" created.')
        if done is None or done[1] is None:
            return False
        change, check = done
        if check is CONFIRMED:
            return True
        row = check.report.strip()
        if row:
            active, _, listed = row.partition(SEPARATOR)
            if active.strip() == "active" and tags <= set(listed.strip().split(",")):
                return True
        raise CommandFailed(argv, 5, change.stderr or f"lvcreate did not leave {target} active with its tags")

    def retag(self, name: str, add: Iterable[str], delete: Iterable[str]) -> None:
        """Swap tags in one lvchange, which LVM commits as one metadata update."""
        add, delete = set(add), set(delete)
        argv = ["lvchange"]
        for tag in sorted(delete - add):
            argv += ["--deltag", tag]
        for tag in sorted(add - delete):
            argv += ["--addtag", tag]
        if len(argv) == 1:
            return
        target = f"{self.vg}/{name}"
        argv += [target, *BOUNDED_ARCHIVE]
        if not self._retag_in_shell(argv, target, add, delete):
            self.runner.run(argv, timeout=self.timeout_s)

    def _retag_in_shell(self, argv: list[str], target: str, add: set[str], delete: set[str]) -> bool:
        """True when the shell made the change, as the LV's tags read back afterwards show.
        False when it did nothing (the single command runs instead); raises when it ran the
        change and the tags did not come back as asked."""
        done = self._run_and_read_back(argv, target, "lv_tags", f"Logical volume {target} changed.")
        if done is None:
            return False
        change, check = done
        if check is CONFIRMED:
            return True
        if check is not None and check.report.strip():
            tags = set(check.report.strip().split(","))
            if add <= tags and not (delete - add) & tags:
                return True
        if check is None or not change.stderr:
            # Unknown whether the change happened: add/delete of tags is idempotent, so the
            # single command settles it with a real exit status.
            return False
        raise CommandFailed(argv, 5, change.stderr)

    def activate(self, name: str) -> None:
        self.runner.run(["lvchange", "--activate", "y", f"{self.vg}/{name}", *BOUNDED_ARCHIVE], timeout=self.timeout_s)

    def remove(self, names: Sequence[str]) -> tuple[str, ...]:
        """Remove these LVs; returns those LVM could not remove, for the caller to leave for later.

        The usual cause is a slab's filesystem still mounted in another mount namespace (a
        container runtime's, a privileged pod's): its device stays busy after our umount. LVM
        goes on past an LV it cannot remove, so after a failed batch each name is tried alone to
        learn which are left (one already gone is not). A batch that timed out is not retried.
        """
        if not names:
            return ()
        try:
            self.runner.run(["lvremove", "--yes", *[f"{self.vg}/{n}" for n in names], *BOUNDED_ARCHIVE],
                            timeout=self.timeout_s)
            return ()
        except CommandTimedOut:
            raise
        except CommandFailed:
            pass
        left = []
        for name in names:
            try:
                self.runner.run(["lvremove", "--yes", f"{self.vg}/{name}", *BOUNDED_ARCHIVE], timeout=self.timeout_s)
            except CommandTimedOut:
                raise
            except CommandFailed as err:
                if "Failed to find logical volume" not in err.stderr:
                    left.append(name)
        return tuple(left)


def _rows(stdout: str, kind: str) -> list[dict[str, str]]:
    try:
        report = json.loads(stdout)["report"]
        return [row for section in report for row in section.get(kind, [])]
    except (ValueError, KeyError, TypeError) as err:
        raise CommandFailed(["lvm report"], 0, "", f"unreadable LVM JSON report: {err}") from err


def _volume_group(vg_row: dict[str, str], rows: list[dict[str, str]]) -> VolumeGroupReport:
    return VolumeGroupReport(
        name=vg_row["vg_name"],
        size_bytes=int(vg_row["vg_size"]),
        free_bytes=int(vg_row["vg_free"]),
        extent_bytes=int(vg_row["vg_extent_size"]),
        volumes=tuple(_volume(row) for row in rows),
        metadata_free_bytes=_optional_int(vg_row.get("vg_mda_free")),
        metadata_size_bytes=_optional_int(vg_row.get("vg_mda_size")),
    )


def _optional_int(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


def _volume(row: dict[str, str]) -> LogicalVolume:
    major, minor = row.get("lv_kernel_major", ""), row.get("lv_kernel_minor", "")
    device = (int(major), int(minor)) if major.isdigit() and minor.isdigit() and int(major) >= 0 else None
    tags = frozenset(tag for tag in row.get("lv_tags", "").split(",") if tag)
    return LogicalVolume(
        name=row["lv_name"],
        size_bytes=int(row["lv_size"]),
        tags=tags,
        active=row.get("lv_active", "") == "active",
        device=device,
        data_percent=_optional_float(row.get("data_percent")),
        metadata_percent=_optional_float(row.get("metadata_percent")),
        metadata_size_bytes=_optional_int(row.get("lv_metadata_size")),
        error_when_full=row.get("lv_when_full", "") == "error",
    )


def _optional_float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None
