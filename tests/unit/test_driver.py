"""driver.py: the order of steps in mount and unmount, against a simulated node.

The simulated node keeps just enough LVM state (volumes and their tags), a mount table, and a
record of every command, and notes for each command whether the node lock was held.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import time

import pytest

from flexdriver import driver as driver_module
from flexdriver.config import Config
from flexdriver.driver import Driver
from flexdriver.errors import BadRequest, CommandFailed, DeviceRefused, DriverError, PoolExhausted
from flexdriver.journal import CallRecord
from flexdriver.options import GRAPH, MountRequest
from flexdriver.pool import MIB, Kind, Slab, State, all_tags, encode_dir
from flexdriver.system import filesystems
from flexdriver.system.lvm import dm_path
from flexdriver.system.mounts import MountEntry
from flexdriver.system.runner import Completed

VG = "vg-ax"
UID = "4f1b3a8e-5c2d-4e7f-9a0b-1c2d3e4f5a6b"
OTHER_UID = "9e8d7c6b-0000-4e7f-9a0b-1c2d3e4f5a6b"


METADATA_CHANGES = ("vgcreate", "lvcreate", "lvchange", "lvremove")


class SimulatedNode:
    def __init__(self, lock_path: str, vg_size_mb: int = 8192) -> None:
        self.lock_path = lock_path
        self.vg_size = vg_size_mb * MIB
        self.has_vg = True
        self.volumes: dict = {}  # name -> {"size": bytes, "tags": set, "device": (major, minor)}
        self.mounts: list = []
        self.calls: list = []
        self.locked: list = []  # per call: was the node lock held while it ran
        self.failing: set = set()
        self.waited: list = []  # device nodes the driver waited for before mkfs or mount
        self.failing_mounts: set = set()  # devices whose mount fails (a broken filesystem)
        self.broken_superblocks: set = set()  # devices whose superblock check finds a problem
        self.busy: set = set()  # volumes whose device is busy (mounted in another mount namespace)
        self.usage = 0.0
        self._minors = itertools.count()

    # -- set-up and inspection

    def add(self, slab: Slab) -> None:
        self.volumes[slab.name] = {"size": slab.size_bytes, "tags": set(all_tags(slab)), "device": slab.device}

    def mount_slab(self, name: str, mount_point: str) -> None:
        self.mounts.append(MountEntry(mount_point, self.volumes[name]["device"], "ext4", dm_path(VG, name)))

    def programs(self) -> list:
        return [argv[0] for argv in self.calls]

    def call(self, program: str) -> list:
        (argv,) = [argv for argv in self.calls if argv[0] == program]
        return argv

    # -- the Runner interface

    def run(self, argv, *, timeout: float = 120.0, ok_codes=(0,)) -> Completed:
        argv = list(argv)
        if argv[0] in METADATA_CHANGES:
            # Every change the driver or the admin command makes must keep LVM's archive bounded
            # (system/lvm.py); with that checked here, the rest of a test reads the command as LVM
            # acts on it.
            assert argv[-2:] == ["--config", "backup/retain_days=0"], f"archive not bounded: {argv}"
            argv = argv[:-2]
        self.calls.append(argv)
        self.locked.append(self._lock_is_held())
        if argv[0] in self.failing:
            raise CommandFailed(argv, 1, f"{argv[0]}: simulated failure")
        handler = getattr(self, "_" + argv[0].replace(".", "_"))
        return Completed(argv, 0, handler(argv) or "", "", 0.0)

    def _lock_is_held(self) -> bool:
        if not os.path.exists(self.lock_path):
            return False
        fd = os.open(self.lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def _vg_row(self) -> dict:
        used = sum(v["size"] for v in self.volumes.values())
        return {"vg_name": VG, "vg_size": str(self.vg_size), "vg_free": str(self.vg_size - used), "vg_extent_size": str(4 * MIB)}

    def _lvs(self, argv):
        if not self.has_vg:
            raise CommandFailed(argv, 5, f'Volume group "{VG}" not found')
        rows = [
            dict(self._vg_row(), lv_name=name, lv_size=str(v["size"]), lv_tags=",".join(sorted(v["tags"])),
                 lv_active="active", lv_kernel_major=str(v["device"][0]), lv_kernel_minor=str(v["device"][1]))
            for name, v in self.volumes.items()
        ]
        return json.dumps({"report": [{"lv": rows}]})

    def _vgs(self, argv):
        rows = [self._vg_row()] if self.has_vg else []
        return json.dumps({"report": [{"vg": rows}]})

    def _lvcreate(self, argv):
        name = argv[argv.index("--name") + 1]
        size = int(argv[argv.index("--size") + 1].rstrip("b"))
        tags = {argv[i + 1] for i, arg in enumerate(argv) if arg == "--addtag"}
        self.volumes[name] = {"size": size, "tags": tags, "device": (253, next(self._minors))}

    def _lvchange(self, argv):
        tags = self.volumes[argv[-1].split("/", 1)[1]]["tags"]
        for option, value in zip(argv[1:-1:2], argv[2:-1:2]):
            if option == "--deltag":
                tags.discard(value)
            elif option == "--addtag":
                tags.add(value)

    def _lvremove(self, argv):
        # As LVM does: each LV that can go goes; one whose device is busy stays and fails the call.
        failed = []
        for target in argv[2:]:
            name = target.split("/", 1)[1]
            if name not in self.volumes:
                failed.append(f'Failed to find logical volume "{target}"')
            elif name in self.busy:
                failed.append(f"Logical volume {target} contains a filesystem in use.")
            else:
                del self.volumes[name]
        if failed:
            raise CommandFailed(argv, 5, "\n".join(failed))

    def _mkfs_ext4(self, argv):
        pass

    _mkfs_xfs = _mkfs_ext4

    def _mount(self, argv):
        source, mount_point = argv[-2], argv[-1]
        if source in self.failing_mounts:
            raise CommandFailed(argv, 32, f"mount: {mount_point}: wrong fs type, bad superblock on {source}")
        (name,) = [n for n in self.volumes if dm_path(VG, n) == source]
        self.mounts.append(MountEntry(mount_point, self.volumes[name]["device"], argv[2], source))

    def _umount(self, argv):
        (entry,) = [e for e in self.mounts if e.mount_point == argv[1]]
        self.mounts.remove(entry)


@pytest.fixture
def node(tmp_path, monkeypatch):
    sim = SimulatedNode(lock_path=str(tmp_path / "run" / "lock"))
    monkeypatch.setattr(driver_module, "read_mounts", lambda: list(sim.mounts))
    monkeypatch.setattr(filesystems, "measure", lambda mount_point, device: sim.usage)
    monkeypatch.setattr(
        filesystems, "superblock_problem",
        lambda device, fs_type: "simulated bad superblock" if device in sim.broken_superblocks else None,
    )
    return sim


def pod_volume_dir(tmp_path, uid: str = UID) -> str:
    path = tmp_path / "kubelet" / "pods" / uid / "volumes" / "ax~vol_plugin" / "docker"
    path.mkdir(parents=True)
    return os.path.realpath(path)


def make_driver(tmp_path, node, verb: str = "mount", **config) -> Driver:
    config = Config(run_dir=str(tmp_path / "run"), log_file=str(tmp_path / "driver.log"), **config)
    # The fake node has no device nodes; waiting for one is recorded instead.
    return Driver(config, CallRecord(verb), runner=node, wait_for_node=lambda path, timeout: node.waited.append(path))


def request_for(mount_dir: str, uid: str = UID, size_mb: int = 1024, fs_type: str = "ext4") -> MountRequest:
    return MountRequest(mount_dir=mount_dir, volume_type=GRAPH, size_mb=size_mb, fs_type=fs_type, read_only=False, pod_uid=uid)


def seeded(name: str, state: State, minor: int, mount_dir=None, uid: str = "", released_at: int = 0) -> Slab:
    return Slab(name, 1024 * MIB, 1024, "ext4", Kind.GRAPH, state, mount_dir=mount_dir, pod_uid=uid,
                released_at=released_at, device=(253, 100 + minor), active=True)


def addtags(tags) -> list:
    return [part for tag in sorted(tags) for part in ("--addtag", tag)]


# ---- mount ---------------------------------------------------------------------------------


def test_cold_mount_creates_then_formats_then_tags_used_then_mounts(tmp_path, node):
    path = pod_volume_dir(tmp_path)
    driver = make_driver(tmp_path, node)
    message = driver.mount(request_for(path))

    # An empty volume group: lvs has no row for it, so vgs reports its size.
    assert node.programs() == ["lvs", "vgs", "lvcreate", "mkfs.ext4", "lvchange", "mount"]
    (name,) = node.volumes
    device = dm_path(VG, name)
    creating = {
        "ax.slab", "ax.type=graph", "ax.fs=ext4", "ax.size_mb=1024", "ax.scope=node", "ax.state=creating",
        f"ax.dir={encode_dir(path)}", f"ax.pod={UID}", f"ax.creator={driver.me}",
    }
    assert node.call("lvcreate") == [
        "lvcreate", "--yes", "--wipesignatures", "y", "--zero", "y", "--activate", "y",
        "--size", f"{1024 * MIB}b", "--name", name, *addtags(creating), VG,
    ]
    assert node.call("mkfs.ext4") == filesystems.mkfs_argv("ext4", device)
    assert node.call("lvchange") == [
        "lvchange", "--deltag", f"ax.creator={driver.me}", "--deltag", "ax.state=creating", "--addtag", "ax.state=used",
        f"{VG}/{name}",
    ]
    assert node.call("mount") == ["mount", "-t", "ext4", "-o", "rw,noatime", device, path]
    assert node.waited == [device]  # its device node, before mkfs touches it
    assert node.volumes[name]["tags"] == creating - {"ax.state=creating", f"ax.creator={driver.me}"} | {"ax.state=used"}
    assert message == f"mounted slab {name} (created new slab) on {path}"
    assert driver.record.fields["decision"] == "created new slab"


def test_decisions_are_made_under_the_lock_and_slow_work_outside_it(tmp_path, node):
    path = pod_volume_dir(tmp_path)
    make_driver(tmp_path, node).mount(request_for(path))
    assert list(zip(node.programs(), node.locked)) == [
        ("lvs", True), ("vgs", True), ("lvcreate", True), ("mkfs.ext4", False), ("lvchange", False), ("mount", False),
    ]


def test_mount_reuses_the_warmest_free_slab_without_mkfs(tmp_path, node):
    node.add(seeded("slab-cold", State.FREE, 1, released_at=100))
    node.add(seeded("slab-warm", State.FREE, 2, released_at=200))
    path = pod_volume_dir(tmp_path)
    message = make_driver(tmp_path, node).mount(request_for(path))

    assert node.programs() == ["lvs", "lvchange", "mount"]
    assert node.calls[1] == [
        "lvchange", "--deltag", "ax.released=200", "--deltag", "ax.state=free",
        "--addtag", f"ax.dir={encode_dir(path)}", "--addtag", f"ax.pod={UID}", "--addtag", "ax.state=used",
        f"{VG}/slab-warm",
    ]
    assert node.calls[2][-2:] == [dm_path(VG, "slab-warm"), path]
    assert message == f"mounted slab slab-warm (reused warm slab) on {path}"


def test_a_warm_slab_with_a_bad_superblock_is_deleted_and_the_next_one_used(tmp_path, node):
    node.add(seeded("slab-cold", State.FREE, 1, released_at=100))
    node.add(seeded("slab-warm", State.FREE, 2, released_at=200))
    node.broken_superblocks.add(dm_path(VG, "slab-warm"))
    path = pod_volume_dir(tmp_path)
    driver = make_driver(tmp_path, node)
    message = driver.mount(request_for(path))

    assert node.programs() == ["lvs", "lvchange", "lvchange", "lvremove", "lvs", "lvchange", "mount"]
    assert node.calls[3] == ["lvremove", "--yes", f"{VG}/slab-warm"]
    assert set(node.volumes) == {"slab-cold"}
    assert message == f"mounted slab slab-cold (reused warm slab) on {path}"
    assert driver.record.fields["discarded_warm"] == ["slab-warm: simulated bad superblock"]


def test_a_warm_slab_that_fails_to_mount_is_deleted_and_a_new_slab_made_in_the_same_call(tmp_path, node):
    node.add(seeded("slab-warm", State.FREE, 2, released_at=200))
    node.failing_mounts.add(dm_path(VG, "slab-warm"))
    path = pod_volume_dir(tmp_path)
    message = make_driver(tmp_path, node).mount(request_for(path))

    assert node.programs() == [
        "lvs", "lvchange", "mount", "lvchange", "lvremove", "lvs", "vgs", "lvcreate", "mkfs.ext4", "lvchange", "mount",
    ]
    (name,) = node.volumes
    assert name != "slab-warm"
    assert message == f"mounted slab {name} (created new slab) on {path}"


def test_warm_fallbacks_are_bounded(tmp_path, node):
    for minor in range(1, 6):
        node.add(seeded(f"slab-{minor}", State.FREE, minor, released_at=100 + minor))
        node.broken_superblocks.add(dm_path(VG, f"slab-{minor}"))
    with pytest.raises(DriverError, match="3 warm slabs in a row could not be mounted"):
        make_driver(tmp_path, node).mount(request_for(pod_volume_dir(tmp_path)))
    assert set(node.volumes) == {"slab-1", "slab-2"}
    assert node.mounts == []


def test_a_failed_mount_of_the_dirs_own_slab_never_deletes_it(tmp_path, node):
    path = pod_volume_dir(tmp_path)
    node.add(seeded("slab-mine", State.USED, 1, mount_dir=path, uid=UID))
    node.failing_mounts.add(dm_path(VG, "slab-mine"))
    with pytest.raises(CommandFailed, match="bad superblock"):
        make_driver(tmp_path, node).mount(request_for(path))
    assert node.programs() == ["lvs", "mount"]
    assert set(node.volumes) == {"slab-mine"}


def test_mount_after_a_reboot_resumes_the_dirs_own_slab(tmp_path, node):
    path = pod_volume_dir(tmp_path)
    node.add(seeded("slab-mine", State.USED, 1, mount_dir=path, uid=UID))
    node.add(seeded("slab-warm", State.FREE, 2, released_at=200))
    make_driver(tmp_path, node).mount(request_for(path))
    assert node.programs() == ["lvs", "mount"]
    assert node.calls[1][-2:] == [dm_path(VG, "slab-mine"), path]


def test_mount_of_an_already_mounted_dir_changes_nothing(tmp_path, node):
    path = pod_volume_dir(tmp_path)
    node.add(seeded("slab-mine", State.USED, 1, mount_dir=path, uid=UID))
    node.mount_slab("slab-mine", path)
    message = make_driver(tmp_path, node).mount(request_for(path))
    assert node.programs() == ["lvs"]
    assert message == f"slab slab-mine is already mounted on {path}"


def test_mount_refuses_a_dir_with_something_else_mounted_on_it(tmp_path, node):
    path = pod_volume_dir(tmp_path)
    node.mounts.append(MountEntry(path, (0, 99), "tmpfs", "tmpfs"))
    with pytest.raises(DriverError, match="not a slab of this driver"):
        make_driver(tmp_path, node).mount(request_for(path))
    assert node.programs() == ["lvs", "vgs"]


def test_failed_mkfs_discards_the_new_slab(tmp_path, node):
    node.failing.add("mkfs.ext4")
    path = pod_volume_dir(tmp_path)
    with pytest.raises(CommandFailed, match="simulated failure"):
        make_driver(tmp_path, node).mount(request_for(path))
    assert node.programs() == ["lvs", "vgs", "lvcreate", "mkfs.ext4", "lvchange", "lvremove"]
    lvcreate = node.call("lvcreate")
    name = lvcreate[lvcreate.index("--name") + 1]
    retag = node.call("lvchange")
    assert retag[retag.index("ax.state=doomed") - 1] == "--addtag"
    assert node.call("lvremove") == ["lvremove", "--yes", f"{VG}/{name}"]
    assert node.volumes == {}


def test_missing_volume_group_is_not_made_on_something_that_is_not_a_block_device(tmp_path, node):
    node.has_vg = False
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 4096)
    path = pod_volume_dir(tmp_path)
    with pytest.raises(DeviceRefused, match="not a block device"):
        make_driver(tmp_path, node, device=str(disk)).mount(request_for(path))
    assert node.programs() == ["lvs", "vgs"]


def test_a_request_above_max_size_mb_evicts_nothing_and_makes_no_volume_group(tmp_path, node):
    node.add(seeded("warm", State.FREE, 1, released_at=5))
    path = pod_volume_dir(tmp_path)
    with pytest.raises(BadRequest, match="above this node's max_size_mb 2048"):
        make_driver(tmp_path, node, max_size_mb=2048).mount(request_for(path, size_mb=4096))
    assert node.programs() == ["lvs"] and "warm" in node.volumes  # read the pool, changed nothing
    node.has_vg = False
    with pytest.raises(BadRequest, match="max_size_mb 2048"):
        make_driver(tmp_path, node, max_size_mb=2048).mount(request_for(path, size_mb=4096))
    assert "vgcreate" not in node.programs() and "pvcreate" not in node.programs()


def test_a_garbage_slab_that_cannot_be_removed_does_not_fail_a_warm_mount(tmp_path, node):
    node.add(seeded("slab-warm", State.FREE, 1, released_at=5))
    node.add(seeded("slab-doomed", State.DOOMED, 2, mount_dir="/gone"))
    node.busy.add("slab-doomed")
    path = pod_volume_dir(tmp_path)
    driver = make_driver(tmp_path, node)
    driver.mount(request_for(path))
    assert driver.record.fields["decision"] == "reused warm slab"
    assert driver.record.fields["unremovable"] == ["slab-doomed"] and driver.record.fields.get("reclaimed") is None
    assert "ax.state=doomed" in node.volumes["slab-doomed"]["tags"]  # left for a later call
    node.busy.clear()
    other = pod_volume_dir(tmp_path, "other")
    make_driver(tmp_path, node).mount(request_for(other))  # the next call reclaims it
    assert "slab-doomed" not in node.volumes


def test_a_cold_mount_that_needed_a_busy_slabs_room_fails_naming_it(tmp_path, node):
    node.vg_size = 1024 * MIB  # the doomed slab holds all of it
    node.add(seeded("slab-doomed", State.DOOMED, 2, mount_dir="/gone"))
    node.busy.add("slab-doomed")
    with pytest.raises(PoolExhausted, match="slab-doomed could not be removed"):
        make_driver(tmp_path, node).mount(request_for(pod_volume_dir(tmp_path)))
    assert "lvcreate" not in node.programs()


# ---- unmount -------------------------------------------------------------------------------


def test_unmount_above_threshold_dooms_then_unmounts_then_removes(tmp_path, node):
    path = pod_volume_dir(tmp_path)
    node.add(seeded("slab-1", State.USED, 1, mount_dir=path, uid=UID))
    node.mount_slab("slab-1", path)
    node.usage = 0.9
    driver = make_driver(tmp_path, node, verb="unmount")
    message = driver.unmount(path)

    assert node.calls[1:] == [
        ["lvchange", "--deltag", "ax.state=used", "--addtag", "ax.state=doomed", f"{VG}/slab-1"],
        ["umount", path],
        ["lvremove", "--yes", f"{VG}/slab-1"],
    ]
    assert node.programs()[0] == "lvs"
    assert node.locked == [True, True, True, True]
    assert node.volumes == {} and node.mounts == []
    assert message == f"unmounted {path}; deleted slab slab-1"
    assert (driver.record.fields["usage"], driver.record.fields["decision"]) == (0.9, "deleted slab")


def test_an_unmount_whose_slab_is_busy_elsewhere_succeeds_and_leaves_it_doomed(tmp_path, node):
    path = pod_volume_dir(tmp_path)
    node.add(seeded("slab-1", State.USED, 1, mount_dir=path, uid=UID))
    node.mount_slab("slab-1", path)
    node.usage = 0.9
    node.busy.add("slab-1")  # still mounted in a container runtime's mount namespace
    driver = make_driver(tmp_path, node, verb="unmount")
    message = driver.unmount(path)
    assert "could not be removed yet" in message and node.mounts == []
    assert "ax.state=doomed" in node.volumes["slab-1"]["tags"]
    assert (driver.record.fields["decision"], driver.record.fields["unremovable"]) == ("removal deferred", ["slab-1"])


def test_unmount_at_or_below_threshold_keeps_the_slab_for_the_next_pod(tmp_path, node):
    path = pod_volume_dir(tmp_path)
    node.add(seeded("slab-1", State.USED, 1, mount_dir=path, uid=UID))
    node.mount_slab("slab-1", path)
    node.usage = 0.5
    before = int(time.time())
    message = make_driver(tmp_path, node, verb="unmount").unmount(path)
    after = int(time.time())

    assert node.programs() == ["lvs", "umount", "lvchange"]
    (released,) = [t for t in node.volumes["slab-1"]["tags"] if t.startswith("ax.released=")]
    assert before <= int(released.split("=")[1]) <= after
    assert node.volumes["slab-1"]["tags"] == {
        "ax.slab", "ax.type=graph", "ax.fs=ext4", "ax.size_mb=1024", "ax.scope=node", "ax.state=free", released,
        "ax.usage=500",
    }
    assert message == f"unmounted {path}; slab slab-1 kept for the next pod"


def test_unmount_of_a_dir_with_nothing_recorded_is_a_no_op(tmp_path, node):
    path = pod_volume_dir(tmp_path)
    message = make_driver(tmp_path, node, verb="unmount").unmount(path)
    assert node.programs() == ["lvs", "vgs"]
    assert message == f"{path} is not mounted and has no slab recorded"


def test_a_kept_slab_is_reused_by_the_next_pod(tmp_path, node):
    first = pod_volume_dir(tmp_path, UID)
    make_driver(tmp_path, node).mount(request_for(first))
    make_driver(tmp_path, node, verb="unmount").unmount(first)
    second = pod_volume_dir(tmp_path, OTHER_UID)
    node.calls.clear()
    message = make_driver(tmp_path, node).mount(request_for(second, uid=OTHER_UID))

    (name,) = node.volumes
    assert node.programs() == ["lvs", "lvchange", "mount"]
    assert message == f"mounted slab {name} (reused warm slab) on {second}"
    assert node.mounts == [MountEntry(second, node.volumes[name]["device"], "ext4", dm_path(VG, name))]
