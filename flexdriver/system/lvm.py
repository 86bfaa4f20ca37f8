"""LVM through its JSON reports: one `lvs` gives the whole pool; changes are single commands."""

from __future__ import annotations

import dataclasses
import json
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

from ..errors import CommandFailed
from .runner import Runner

REPORT = ["--reportformat", "json", "--units", "b", "--nosuffix"]
LV_FIELDS = "lv_name,lv_size,lv_tags,lv_active,lv_kernel_major,lv_kernel_minor"
VG_FIELDS = "vg_name,vg_size,vg_free,vg_extent_size"
LVM_TIMEOUT_S = 120.0


@dataclasses.dataclass(frozen=True)
class LogicalVolume:
    name: str
    size_bytes: int
    tags: FrozenSet[str]
    active: bool
    device: Optional[Tuple[int, int]]


@dataclasses.dataclass(frozen=True)
class VolumeGroupReport:
    name: str
    size_bytes: int
    free_bytes: int
    extent_bytes: int
    volumes: Tuple[LogicalVolume, ...]


def dm_path(volume_group: str, name: str) -> str:
    # device-mapper's name mangling: '-' inside a VG or LV name is doubled, one '-' joins them.
    return "/dev/mapper/{}-{}".format(volume_group.replace("-", "--"), name.replace("-", "--"))


class LVM:
    def __init__(self, runner: Runner, volume_group: str, timeout_s: float = LVM_TIMEOUT_S) -> None:
        self.runner = runner
        self.vg = volume_group
        self.timeout_s = timeout_s

    def report(self) -> Optional[VolumeGroupReport]:
        """The volume group and all its LVs, or None when the volume group does not exist."""
        try:
            result = self.runner.run(
                ["lvs", *REPORT, "-o", f"{VG_FIELDS},{LV_FIELDS}", self.vg], timeout=self.timeout_s
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
        return VolumeGroupReport(
            name=vg_row["vg_name"],
            size_bytes=int(vg_row["vg_size"]),
            free_bytes=int(vg_row["vg_free"]),
            extent_bytes=int(vg_row["vg_extent_size"]),
            volumes=tuple(_volume(row) for row in rows),
        )

    def volume_group_names(self) -> List[str]:
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
            ["vgcreate", "--yes", "--metadatasize", "8m", self.vg, device], timeout=self.timeout_s
        )

    def create(self, name: str, size_bytes: int, tags: Iterable[str]) -> None:
        argv = [
            "lvcreate", "--yes", "--wipesignatures", "y", "--zero", "y", "--activate", "y",
            "--size", f"{size_bytes}b", "--name", name,
        ]
        for tag in sorted(tags):
            argv += ["--addtag", tag]
        self.runner.run(argv + [self.vg], timeout=self.timeout_s)

    def retag(self, name: str, add: Iterable[str], delete: Iterable[str]) -> None:
        """Swap tags in one lvchange, which LVM commits as one metadata update."""
        add, delete = set(add), set(delete)
        argv = ["lvchange"]
        for tag in sorted(delete - add):
            argv += ["--deltag", tag]
        for tag in sorted(add - delete):
            argv += ["--addtag", tag]
        if len(argv) > 1:
            self.runner.run(argv + [f"{self.vg}/{name}"], timeout=self.timeout_s)

    def activate(self, name: str) -> None:
        self.runner.run(["lvchange", "--activate", "y", f"{self.vg}/{name}"], timeout=self.timeout_s)

    def remove(self, names: Sequence[str]) -> None:
        if names:
            self.runner.run(["lvremove", "--yes", *[f"{self.vg}/{n}" for n in names]], timeout=self.timeout_s)


def _rows(stdout: str, kind: str) -> List[Dict[str, str]]:
    try:
        report = json.loads(stdout)["report"]
        return [row for section in report for row in section.get(kind, [])]
    except (ValueError, KeyError, TypeError) as err:
        raise CommandFailed(["lvm report"], 0, "", f"unreadable LVM JSON report: {err}") from err


def _volume(row: Dict[str, str]) -> LogicalVolume:
    major, minor = row.get("lv_kernel_major", ""), row.get("lv_kernel_minor", "")
    device = (int(major), int(minor)) if major.isdigit() and minor.isdigit() and int(major) >= 0 else None
    tags = frozenset(tag for tag in row.get("lv_tags", "").split(",") if tag)
    return LogicalVolume(
        name=row["lv_name"],
        size_bytes=int(row["lv_size"]),
        tags=tags,
        active=row.get("lv_active", "") == "active",
        device=device,
    )
