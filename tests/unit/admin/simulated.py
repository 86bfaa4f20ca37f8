"""A simulated node for the admin command: the driver tests' simulated LVM and mount table,
plus what only the admin command asks of the node (blkid, vgcreate, the metadata area)."""

from __future__ import annotations

import json
import os

from flexdriver.pool import MIB, Kind, Slab, State
from flexdriver.system import host
from flexdriver.system.runner import Completed

from ..test_driver import VG, SimulatedNode

DEAD = "0000-boot:1:1"  # a process identity nobody has
__all__ = ["DEAD", "VG", "AdminNode", "slab", "me"]


class AdminNode(SimulatedNode):
    def __init__(self, lock_path: str) -> None:
        super().__init__(lock_path)
        self.mda = (3 << 20, 8 << 20)  # vg_mda_free (of the half one copy may take), vg_mda_size
        self.signatures = ""  # blkid -p -o export output for the device; '' when blank

    def run(self, argv, *, timeout: float = 120.0, ok_codes=(0,)) -> Completed:
        if argv[0] == "blkid":  # exit 2: nothing found
            self._note(list(argv), "single", self._lock_is_held())
            return Completed(list(argv), 0 if self.signatures else 2, self.signatures, "", 0.0)
        return super().run(argv, timeout=timeout, ok_codes=ok_codes)

    def _vgs(self, argv):
        if "vg_mda_free,vg_mda_size" in argv:
            return json.dumps({"report": [{"vg": [{"vg_mda_free": str(self.mda[0]), "vg_mda_size": str(self.mda[1])}]}]})
        return super()._vgs(argv)

    def _vgcreate(self, argv):
        self.has_vg = True

    def tags(self, name: str) -> set:
        return self.volumes[name]["tags"]


def slab(name: str, state: State, minor: int, *, mount_dir=None, uid="", released_at=0, creator="", usage=None,
         kind=Kind.GRAPH, size_mb=256, fs="ext4", scope="node") -> Slab:
    return Slab(name, size_mb * MIB, size_mb, fs, kind, state, mount_dir=mount_dir, pod_uid=uid, creator=creator,
                released_at=released_at, device=(253, minor), active=True, scope=scope, usage_permille=usage)


def me() -> str:
    return host.process_identity(os.getpid())
