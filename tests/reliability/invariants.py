"""The one invariant checker every reliability scenario ends each trial with.

It looks at the node from outside, as an admin would (LVM's own report, the kernel's mount table
and device-mapper table, the process list, the pods' files), and returns what it found wrong
sorted into the figures the report carries, instead of stopping at the first problem:

- leaked: a slab half-made (creating) or doomed and left behind, an LV in the volume group that
  is not a slab, a slab in use but mounted nowhere, a device-mapper device of the volume group
  with no LV, space that LVM counts neither as free nor as a slab's, a command the driver
  started still running after its call ended;
- double mounts: a slab mounted twice, a free slab mounted, a slab mounted on a dir it is not
  recorded for;
- data loss: a running pod without its slab, or whose marker file does not read what was last
  written into it.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import signal
from typing import Dict, Iterable, List, Mapping, Optional

from flexdriver.pool import THIN_POOL_TAG
from tests.realkernel import node
from tests.realkernel.node import Pod

# Programs the driver runs; one still alive after every call has ended was left behind.
DRIVER_CHILDREN = ("mkfs.ext4", "mke2fs", "mkfs.xfs", "lvcreate", "lvchange", "lvremove", "lvs", "vgs", "vgcreate",
                   "fstrim", "tune2fs", "xfs_admin", "thin_check")


@dataclasses.dataclass
class Findings:
    leaked: List[str] = dataclasses.field(default_factory=list)
    double_mounts: List[str] = dataclasses.field(default_factory=list)
    data_loss: List[str] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.leaked or self.double_mounts or self.data_loss)

    def all(self) -> List[str]:
        return (
            [f"leaked: {m}" for m in self.leaked]
            + [f"double mount: {m}" for m in self.double_mounts]
            + [f"data loss: {m}" for m in self.data_loss]
        )


def _lvm_json(*argv: str):
    result = node.run(*argv, "--reportformat", "json", "--units", "b", "--nosuffix", check=False)
    return result.returncode, (json.loads(result.stdout) if result.stdout.strip() else {})


def volume_group_sizes() -> Optional[tuple]:
    """(size, free) in bytes, or None when the volume group does not exist."""
    rc, report = _lvm_json("vgs", "-o", "vg_name,vg_size,vg_free")
    rows = [row for row in report.get("report", [{}])[0].get("vg", []) if row["vg_name"] == node.VOLUME_GROUP]
    if rc != 0 or not rows:
        return None
    return int(rows[0]["vg_size"]), int(rows[0]["vg_free"])


@dataclasses.dataclass
class PoolState:
    """What LVM reports of the volume group: its slabs, and what holds its extents."""

    sizes: Optional[tuple]  # (size, free) in bytes, or None when there is no volume group
    slabs: Dict[str, node.SlabView]  # visible LVs but the thin pool, by name
    in_extents: int = 0  # bytes of extents held by LVs (a thin pool's data, metadata and spare)
    lv_names: frozenset = frozenset()  # every LV, hidden ones too (a thin pool's parts)


def pool_state() -> PoolState:
    """The volume group as two LVM commands see it. Thin volumes hold no extents of their own
    (their blocks are the thin pool's), so extents are counted over every other LV, hidden ones
    included: in either mode free + in_extents is the volume group's size."""
    sizes = volume_group_sizes()
    if sizes is None:
        return PoolState(None, {})
    rc, report = _lvm_json("lvs", "-a", "-o", "lv_name,lv_size,lv_tags,segtype", node.VOLUME_GROUP)
    if rc != 0:
        raise RuntimeError(f"lvs {node.VOLUME_GROUP} failed (exit {rc})")
    views, in_extents, names = {}, 0, set()
    for row in report["report"][0]["lv"]:
        name = row["lv_name"].strip("[]")
        names.add(name)
        if row["segtype"] not in ("thin", "thin-pool"):
            in_extents += int(row["lv_size"])
        tags = {}
        for tag in filter(None, row["lv_tags"].split(",")):
            key, _, value = tag.partition("=")
            tags[key] = value
        if row["lv_name"].startswith("[") or THIN_POOL_TAG in tags:
            continue
        views[name] = node.SlabView(name, int(row["lv_size"]), tags)
    return PoolState(sizes, views, in_extents, frozenset(names))


def dm_devices_of_volume_group() -> List[str]:
    """LV names of the volume group's device-mapper devices (a thin pool's "-tpool" layer is its
    pool's)."""
    prefix = node.VOLUME_GROUP.replace("-", "--") + "-"
    out = node.run("dmsetup", "ls", check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip() and not line.startswith("No devices")]
    found = []
    for name in names:
        if name.startswith(prefix):
            lv = name[len(prefix):]
            found.append(lv[: -len("-tpool")] if lv.endswith("-tpool") else lv)
    return [lv.replace("--", "-") for lv in found]


def stray_processes(extra: Iterable[str] = ()) -> List[str]:
    """Driver calls and the commands they run, still alive (every call has ended by now)."""
    return [f"pid {pid}: {text[:120]}" for pid, text in _strays(extra)]


def kill_strays(extra: Iterable[str] = ()) -> None:
    """After a failed trial, once they are counted: so that the next trial is not blamed."""
    for pid, _ in _strays(extra):
        try:
            os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass


def _strays(extra: Iterable[str]) -> List[tuple]:
    found = []
    wanted = set(DRIVER_CHILDREN) | set(extra)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        if not argv:
            continue
        words = {os.path.basename(argv[0])} | {os.path.basename(a) for a in argv[1:2]}
        text = " ".join(argv)
        if words & wanted or node.DRIVER in text or any(marker in text for marker in extra):
            found.append((pid, text))
    return found


def check(running: Mapping[Pod, str], extra_processes: Iterable[str] = ()) -> Findings:
    """`running`: each running pod and the text last written to its marker file."""
    findings = Findings()
    state = pool_state()
    pool = state.slabs
    mounted = node.slab_mounts()  # mount point -> slab name
    times = collections.Counter(mounted.values())

    for name, count in times.items():
        if count > 1:
            points = sorted(p for p, n in mounted.items() if n == name)
            findings.double_mounts.append(f"{name} is mounted {count} times: {points}")
    for point, name in mounted.items():
        slab = pool.get(name)
        if slab is None or "ax.slab" not in slab.tags:
            findings.double_mounts.append(f"{name}, mounted on {point}, is not a slab of the pool")
        elif slab.state == "free":
            findings.double_mounts.append(f"free slab {name} is mounted on {point}")
        elif slab.dir != point:
            findings.double_mounts.append(f"{name} is mounted on {point} but recorded for {slab.dir}")

    for slab in pool.values():
        if "ax.slab" not in slab.tags:
            findings.leaked.append(f"LV {slab.name} in {node.VOLUME_GROUP} is not a recorded slab (tags {slab.tags})")
        elif slab.state not in ("free", "used") and not node.in_use(slab, mounted):
            findings.leaked.append(f"{slab.name} left in state {slab.state!r} (dir {slab.dir})")
        elif slab.state == "used" and mounted.get(slab.dir) != slab.name:
            findings.leaked.append(f"{slab.name} is in use by {slab.dir} but not mounted there")

    if state.sizes is not None:
        size, free = state.sizes
        if free + state.in_extents != size:
            findings.leaked.append(f"volume group: {free} free + {state.in_extents} in LVs != {size}")
    for name in dm_devices_of_volume_group():
        if name not in state.lv_names:
            findings.leaked.append(f"device-mapper device of {name} has no LV")
    findings.leaked.extend(f"process left running: {p}" for p in stray_processes(extra_processes))

    for pod, marker in running.items():
        if mounted.get(pod.dir) is None:
            findings.data_loss.append(f"running pod {pod.uid} has no slab mounted")
            continue
        found = node.read_marker(pod)
        if found != marker:
            findings.data_loss.append(f"pod {pod.uid}: marker reads {found!r}, expected {marker!r}")
    return findings


def snapshot() -> tuple:
    """What a refused call must leave exactly as it was: LVs with their tags, the mount table,
    and the scratch disk's signatures."""
    from tests.realkernel.conftest import SCRATCH

    state = pool_state()
    lvs = {name: (s.size_bytes, tuple(sorted(s.tags.items()))) for name, s in state.slabs.items()}
    blkid = node.run("blkid", "-p", "-o", "export", SCRATCH, check=False)
    return (state.sizes, lvs, tuple(node.mounts()), blkid.returncode, blkid.stdout)


def describe_difference(before: tuple, after: tuple) -> str:
    labels = ("volume group size and free space", "LVs and tags", "mount table", "blkid rc", "blkid")
    changed = [label for label, a, b in zip(labels, before, after) if a != b]
    return ", ".join(changed)


def markers(pods: Iterable[Pod], texts: Dict[Pod, str]) -> Dict[Pod, str]:
    return {pod: texts[pod] for pod in pods}
