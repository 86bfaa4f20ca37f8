"""driver.py: the order of steps in mount and unmount, against a simulated node.

The simulated node keeps just enough LVM state (volumes and their tags), a mount table, and a
record of every command, and notes for each command whether the node lock was held.

LVM commands reach it the way they reach a real node: the driver's LVM runs the report, lvcreate
and lvchange in `lvm` reading commands on stdin (the node's `converse`, answered line by line as
LVM's shell answers), and the rest, and whatever the shell cannot settle, as single commands.
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
from flexdriver.pool import MIB, Decision, Kind, Slab, State, all_tags, encode_dir
from flexdriver.system import filesystems
from flexdriver.system.lvm import dm_path
from flexdriver.system.mounts import MountEntry
from flexdriver.system.runner import Completed, Conversation

VG = "vg-ax"
UID = "4f1b3a8e-5c2d-4e7f-9a0b-1c2d3e4f5a6b"
OTHER_UID = "9e8d7c6b-0000-4e7f-9a0b-1c2d3e4f5a6b"


METADATA_CHANGES = ("vgcreate", "lvcreate", "lvchange", "lvremove")


def _archive_bounded(argv: list) -> list:
    """Every change the driver or the admin command makes must keep LVM's archive bounded
    (system/lvm.py), on either path; with that checked here, the rest of a test reads the
    command as LVM acts on it."""
    if argv[0] in METADATA_CHANGES:
        assert argv[-2:] == ["--config", "backup/retain_days=0"], f"archive not bounded: {argv}"
        return argv[:-2]
    return argv


class SimulatedNode:
    """`calls` holds the driver's steps, one per command however it ran (`steps()` says how:
    "shell" or "single"), so a test reads the same sequence on either path. What the shell got that is
    no step of its own is in `shell_lines` only: the read-back of one LV that lvm.py asks right
    after a change to learn its outcome, and a pool report without rows, which lvm.py asks
    again as a single `lvs` (the step recorded). `shell_lines` holds every line the shell got."""

    def __init__(self, lock_path: str, vg_size_mb: int = 8192) -> None:
        self.lock_path = lock_path
        self.vg_size = vg_size_mb * MIB
        self.has_vg = True
        self.volumes: dict = {}  # name -> {"size": bytes, "tags": set, "device": (major, minor)}
        self.mounts: list = []
        self.calls: list = []
        self.locked: list = []  # per call: was the node lock held while it ran
        self._in_shell: list = []  # the calls (argv objects: a test may clear `calls`) the shell answered
        self.shell_lines: list = []  # argv of every line the lvm shell got, end markers included
        self.shells = 0  # lvm shells started
        self.shell_starts = True  # False: `lvm` cannot start as a shell, so every command is a single one
        self.shell_exits_after = None  # a program after which the shell exits, its command done but not ended
        self.shell_silent: set = set()  # programs the shell takes without doing them or saying why
        # program -> a line the shell also prints on stderr for it, the command done as it says
        self.shell_warns: dict = {}
        # lvchange in the shell deletes the tags asked, adds none, and says both "changed" and why
        self.shell_half_done = False
        self.failing: set = set()
        self.waited: list = []  # device nodes the driver waited for before mkfs or mount
        self.failing_mounts: set = set()  # devices whose mount fails (a broken filesystem)
        self.broken_superblocks: set = set()  # devices whose superblock check finds a problem
        self.busy: set = set()  # volumes whose device is busy (mounted in another mount namespace)
        self.usage = 0.0
        self._minors = itertools.count()
        # Thin mode (make_thin): the thin pool's figures, as fractions of its data and metadata.
        self.thin_pool: dict | None = None

    def make_thin(self, data_used: float = 0.1, metadata_used: float = 0.1, error_when_full: bool = True,
                  active: bool = True) -> None:
        self.thin_pool = {"data_used": data_used, "metadata_used": metadata_used, "error_when_full": error_when_full,
                          "active": active}

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

    def steps(self) -> list:
        """(program, how it ran) for each call."""
        shell = {id(argv) for argv in self._in_shell}
        return [(argv[0], "shell" if id(argv) in shell else "single") for argv in self.calls]

    def forget(self) -> None:
        """Start the record afresh, between the calls of one test."""
        for record in (self.calls, self.locked, self._in_shell, self.shell_lines):
            record.clear()

    def shell_commands(self) -> list:
        """The LVM commands the shell got, read-backs included, without lvm_shell's end markers."""
        return [argv for argv in self.shell_lines if argv[0].startswith(("lv", "vg", "pv"))]

    # -- the Runner interface

    def run(self, argv, *, timeout: float = 120.0, ok_codes=(0,)) -> Completed:
        argv = list(argv)
        argv = _archive_bounded(argv)
        self._note(argv, "single", self._lock_is_held())
        if argv[0] in self.failing:
            raise CommandFailed(argv, 1, f"{argv[0]}: simulated failure")
        return Completed(argv, 0, self._handler(argv)(argv) or "", "", 0.0)

    def converse(self, program: str, env, report_env: str) -> SimulatedShell:
        assert (program, report_env) == ("lvm", "LVM_REPORT_FD"), (program, report_env)
        if not self.shell_starts:
            raise CommandFailed([program], 127, "", f"{program} not found")
        self.shells += 1
        return SimulatedShell(self)

    def answer_line(self, argv) -> tuple:
        """One line as LVM's shell answers it: (stdout, stderr, report). Report rows go to the
        report channel, errors to stderr indented as LVM indents them, and there is no exit
        status; a word that is no LVM command gets "No such command", as the end marker does."""
        self.shell_lines.append(argv)
        argv = _archive_bounded(argv)
        program = argv[0]
        if not program.startswith(("lv", "vg", "pv")):
            return "", f"  No such command '{program}'.  Try 'help'.\n", ""
        handler = self._handler(argv)
        locked = self._lock_is_held()
        output, error = "", ""
        if program in self.failing:
            error = f"{program}: simulated failure"
        elif program not in self.shell_silent:
            if program == "lvchange" and self.shell_half_done:
                argv = [arg for i, arg in enumerate(argv) if "--addtag" not in argv[max(i - 1, 0):i + 1]]
                error = "Failed to add tag: simulated half-done change."
            try:
                output = handler(argv) or ""
            except CommandFailed as err:
                error = err.stderr
            error = "\n".join(filter(None, [error, self.shell_warns.get(program, "")]))
        read_back = program == "lvs" and "/" in argv[-1]
        if not read_back and (output or program != "lvs"):
            self._note(argv, "shell", locked)
        stderr = "".join(f"  {line}\n" for line in error.splitlines())
        return ("", stderr, output) if program in ("lvs", "vgs", "pvs") else (output, stderr, "")

    def _note(self, argv, via: str, locked: bool) -> None:
        self.calls.append(argv)
        self.locked.append(locked)
        if via == "shell":
            self._in_shell.append(argv)

    def _handler(self, argv):
        # A program the node does not simulate fails the test, naming it: answering it with
        # success would let a test pass on a command it never meant the driver to run.
        handler = getattr(self, "_" + argv[0].replace(".", "_"), None)
        if handler is None:
            raise AssertionError(f"SimulatedNode: no handler for {argv}")
        return handler

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
        # A thin pool takes every extent; thin slabs take none of their own.
        used = self.vg_size if self.thin_pool is not None else sum(v["size"] for v in self.volumes.values())
        # An 8 MiB metadata area, as the driver makes it, holding ~1.3 KB of text per slab; LVM
        # reports free what half the area (the most one copy may take) leaves beside the text.
        mda_free = (8 * MIB - 512) // 2 - 1024 - 1300 * len(self.volumes)
        return {"vg_name": VG, "vg_size": str(self.vg_size), "vg_free": str(self.vg_size - used), "vg_extent_size": str(4 * MIB),
                "vg_mda_free": str(mda_free), "vg_mda_size": str(8 * MIB)}

    def _lvs(self, argv):
        if not self.has_vg:
            raise CommandFailed(argv, 5, f'Volume group "{VG}" not found')
        target = argv[-1]  # the volume group, or one LV of it
        thin = self.thin_pool is not None
        rows = [
            dict(self._vg_row(), lv_name=name, lv_size=str(v["size"]), lv_tags=",".join(sorted(v["tags"])),
                 lv_active="active", lv_kernel_major=str(v["device"][0]), lv_kernel_minor=str(v["device"][1]),
                 data_percent="12.50" if thin else "", metadata_percent="", lv_metadata_size="", lv_when_full="")
            for name, v in self.volumes.items() if target in (VG, f"{VG}/{name}")
        ]
        if thin and target == VG:
            pool = self.thin_pool
            rows.append(dict(
                self._vg_row(), lv_name="thinpool", lv_size=str(self.vg_size - 128 * MIB), lv_tags="ax.thinpool",
                lv_active="active", lv_kernel_major="253", lv_kernel_minor="2",
                # An inactive pool has no figures in LVM's report.
                data_percent=f"{100 * pool['data_used']:.2f}" if pool["active"] else "",
                metadata_percent=f"{100 * pool['metadata_used']:.2f}" if pool["active"] else "",
                lv_metadata_size=str(64 * MIB), lv_when_full="error" if pool["error_when_full"] else "",
            ))
        if target != VG and not rows:
            raise CommandFailed(argv, 5, f'Failed to find logical volume "{target}"')
        if "json" in argv:
            return json.dumps({"report": [{"lv": rows}]})
        # As the shell's report is asked for: the fields named by -o, in that order, one row a line.
        fields = argv[argv.index("-o") + 1].split(",")
        separator = argv[argv.index("--separator") + 1]
        return "".join("  " + separator.join(row[field] for field in fields) + "\n" for row in rows)

    def _vgs(self, argv):
        rows = [self._vg_row()] if self.has_vg else []
        return json.dumps({"report": [{"vg": rows}]})

    def _lvcreate(self, argv):
        name = argv[argv.index("--name") + 1]
        if name in self.volumes:
            raise CommandFailed(argv, 5, f'Logical Volume "{name}" already exists in volume group "{VG}"')
        tags = {argv[i + 1] for i, arg in enumerate(argv) if arg == "--addtag"}
        if "thin-pool" in argv:
            self.make_thin(data_used=0.0, metadata_used=0.05, error_when_full=False)
            return
        if "--snapshot" in argv:
            origin = argv[-1].split("/", 1)[1]
            size = self.volumes[origin]["size"]
        else:
            size = int(argv[argv.index("--virtualsize" if "--virtualsize" in argv else "--size") + 1].rstrip("b"))
        self.volumes[name] = {"size": size, "tags": tags, "device": (253, next(self._minors))}
        return f'  Logical volume "{name}" created.\n'  # LVM's own words once it is made and active

    def _lvchange(self, argv):
        name = argv[-1].split("/", 1)[1]
        if argv[1] == "--errorwhenfull" and name == "thinpool" and self.thin_pool is not None:
            self.thin_pool["error_when_full"] = argv[2] == "y"
            return
        if argv[1] == "--activate" and name == "thinpool" and self.thin_pool is not None:
            self.thin_pool["active"] = argv[2] == "y"
            return
        if name not in self.volumes:
            raise CommandFailed(argv, 5, f'Failed to find logical volume "{argv[-1]}"')
        tags = self.volumes[name]["tags"]
        for option, value in zip(argv[1:-1:2], argv[2:-1:2]):
            if option == "--deltag":
                tags.discard(value)
            elif option == "--addtag":
                tags.add(value)
        return f"  Logical volume {argv[-1]} changed.\n"

    def _lvremove(self, argv):
        # As LVM does: each LV that can go goes; one whose device is busy stays and fails the call.
        failed = []
        for target in argv[2:]:
            name = target.split("/", 1)[1]
            if name == "thinpool" and self.thin_pool is not None:
                self.thin_pool = None
            elif name not in self.volumes:
                failed.append(f'Failed to find logical volume "{target}"')
            elif name in self.busy:
                failed.append(f"Logical volume {target} contains a filesystem in use.")
            else:
                del self.volumes[name]
                if self.thin_pool is not None:  # what a removal frees, as the next report shows it
                    self.thin_pool["data_used"] -= self.thin_pool.get("freed_per_removal", 0.0)
        if failed:
            raise CommandFailed(argv, 5, "\n".join(failed))

    def _mkfs_ext4(self, argv):
        pass

    _mkfs_xfs = _mkfs_ext4
    _tune2fs = _mkfs_ext4
    _xfs_admin = _mkfs_ext4
    _fstrim = _mkfs_ext4
    _sync = _mkfs_ext4

    def _mount(self, argv):
        source, mount_point = argv[-2], argv[-1]
        if source in self.failing_mounts:
            raise CommandFailed(argv, 32, f"mount: {mount_point}: wrong fs type, bad superblock on {source}")
        (name,) = [n for n in self.volumes if dm_path(VG, n) == source]
        self.mounts.append(MountEntry(mount_point, self.volumes[name]["device"], argv[2], source))

    def _umount(self, argv):
        (entry,) = [e for e in self.mounts if e.mount_point == argv[1]]
        self.mounts.remove(entry)


class SimulatedShell:
    """The simulated node's `lvm` reading commands on stdin: what runner.Conversation is for a real
    one. Each line is answered as it is sent (LVM's shell answers them in order, so the output
    is the same as if it came later)."""

    def __init__(self, node: SimulatedNode) -> None:
        self.node = node
        self.pending = {channel: bytearray() for channel in Conversation.CHANNELS}
        self.exited = False

    def send(self, text: str) -> None:
        if self.exited:
            raise BrokenPipeError("the simulated lvm shell has exited")
        for line in text.splitlines():
            argv = line.split()
            if self.exited or not argv:
                continue  # a shell that exited reads no more lines
            for channel, data in zip(Conversation.CHANNELS, self.node.answer_line(argv)):
                self.pending[channel] += data.encode()
            self.exited = argv[0] == self.node.shell_exits_after

    def receive(self, timeout: float, channels=Conversation.CHANNELS) -> list:
        received = [(channel, bytes(self.pending[channel])) for channel in channels if self.pending[channel]]
        for channel, _ in received:
            self.pending[channel].clear()
        if not received and self.exited:
            return [(channels[0], b"")]  # its pipes end
        if not received and timeout > 0:
            # Every line has been answered: a real shell would leave LVMShell waiting out its timeout.
            raise AssertionError("the simulated lvm shell has nothing more to say")
        return received

    def kill(self) -> None:
        self.exited = True

    def close(self, timeout: float) -> None:
        self.exited = True


@pytest.fixture
def node(tmp_path, monkeypatch):
    return simulated_node(tmp_path, monkeypatch)


def simulated_node(tmp_path, monkeypatch) -> SimulatedNode:
    """A SimulatedNode the driver reads its mounts, usage and superblocks from."""
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


MEASURED = object()


def seeded(name: str, state: State, minor: int, mount_dir=None, uid: str = "", released_at: int = 0,
           usage_permille=MEASURED) -> Slab:
    """A slab as the driver leaves it; a free one was measured (30% full) when its pod ended."""
    if usage_permille is MEASURED:
        usage_permille = 300 if state is State.FREE else None
    return Slab(name, 1024 * MIB, 1024, "ext4", Kind.GRAPH, state, mount_dir=mount_dir, pod_uid=uid,
                released_at=released_at, device=(253, 100 + minor), active=True, usage_permille=usage_permille)


def addtags(tags) -> list:
    return [part for tag in sorted(tags) for part in ("--addtag", tag)]


# ---- the LVM path: the lvm shell, as on a node ----------------------------------------------

SHELL_REPORT = ["--noheadings", "--units", "b", "--nosuffix", "--separator", "|", "-o"]


def test_mounts_and_unmounts_send_their_lvm_reads_and_changes_through_one_shell_per_call(tmp_path, node):
    path = pod_volume_dir(tmp_path)
    make_driver(tmp_path, node).mount(request_for(path))
    (name,) = node.volumes
    # An empty volume group gives the shell no rows: lvs, then vgs, tell it apart from a missing one.
    assert node.steps() == [
        ("lvs", "single"), ("vgs", "single"), ("lvcreate", "shell"), ("mkfs.ext4", "single"),
        ("lvchange", "shell"), ("mount", "single"),
    ]
    # The pool's report; lvcreate and lvchange each said they were done, so nothing is read back.
    assert [argv for argv in node.shell_commands() if argv[0] == "lvs"] == [
        ["lvs", *SHELL_REPORT, "vg_name,vg_size,vg_free,vg_extent_size,vg_mda_free,vg_mda_size,"
         "lv_name,lv_size,lv_tags,lv_active,lv_kernel_major,lv_kernel_minor", VG],
    ]
    node.forget()
    make_driver(tmp_path, node, verb="unmount").unmount(path)
    assert node.steps() == [("lvs", "shell"), ("umount", "single"), ("lvchange", "shell")]
    assert [argv[0] for argv in node.shell_commands()] == ["lvs", "lvchange"]
    node.forget()
    make_driver(tmp_path, node).mount(request_for(pod_volume_dir(tmp_path, OTHER_UID), uid=OTHER_UID))
    # Claimed, mounted, then tagged the pod's: both tag changes in the call's one shell.
    assert node.steps() == [("lvs", "shell"), ("lvchange", "shell"), ("mount", "single"), ("lvchange", "shell")]
    assert node.shells == 3  # one per call


def test_without_a_shell_every_lvm_command_runs_on_its_own_to_the_same_end(tmp_path, node):
    node.shell_starts = False
    node.add(seeded("slab-warm", State.FREE, 2, released_at=200))
    path = pod_volume_dir(tmp_path)
    make_driver(tmp_path, node).mount(request_for(path))
    make_driver(tmp_path, node, verb="unmount").unmount(path)
    assert node.steps() == [
        ("lvs", "single"), ("lvchange", "single"), ("mount", "single"), ("lvchange", "single"),
        ("lvs", "single"), ("umount", "single"), ("lvchange", "single"),
    ]
    assert node.shell_lines == [] and "ax.state=free" in node.volumes["slab-warm"]["tags"]


def test_a_shell_that_exits_after_a_change_leaves_its_outcome_to_the_single_command(tmp_path, node):
    node.shell_exits_after = "lvchange"  # the claim was made, but its end never came back
    node.add(seeded("slab-warm", State.FREE, 2, released_at=200))
    path = pod_volume_dir(tmp_path)
    make_driver(tmp_path, node).mount(request_for(path))
    # The single lvchange asks for the same tags again, which changes nothing the second time;
    # the shell is gone for the rest of the call.
    assert node.steps() == [
        ("lvs", "shell"), ("lvchange", "shell"), ("lvchange", "single"), ("mount", "single"), ("lvchange", "single"),
    ]
    assert node.calls[1] == node.calls[2]
    assert {"ax.state=used", f"ax.pod={UID}"} <= node.volumes["slab-warm"]["tags"]
    assert node.mounts[0].mount_point == path


def test_a_read_back_that_cannot_tell_whether_the_change_happened_is_settled_by_the_single_command(tmp_path, node):
    node.shell_silent.add("lvchange")  # taken, not done, and no error said: the tags read back are the old ones
    node.add(seeded("slab-warm", State.FREE, 2, released_at=200))
    make_driver(tmp_path, node).mount(request_for(pod_volume_dir(tmp_path)))
    assert node.steps()[:4] == [("lvs", "shell"), ("lvchange", "shell"), ("lvchange", "single"), ("mount", "single")]
    assert "ax.state=used" in node.volumes["slab-warm"]["tags"]


def test_an_error_the_shell_gives_for_a_change_fails_the_call_with_it(tmp_path, node):
    node.failing.add("lvchange")  # in the shell: its message on stderr, and no exit status
    node.add(seeded("slab-warm", State.FREE, 2, released_at=200))
    with pytest.raises(CommandFailed, match="lvchange: simulated failure"):
        make_driver(tmp_path, node).mount(request_for(pod_volume_dir(tmp_path)))
    assert node.steps() == [("lvs", "shell"), ("lvchange", "shell")]  # no single lvchange: the shell said why
    assert "ax.state=free" in node.volumes["slab-warm"]["tags"]


def test_a_change_lvm_said_it_made_but_warned_about_is_read_back_before_it_counts(tmp_path, node):
    node.shell_warns["lvchange"] = "WARNING: simulated warning."
    node.shell_warns["lvcreate"] = "WARNING: simulated warning."
    path = pod_volume_dir(tmp_path)
    make_driver(tmp_path, node).mount(request_for(path))
    (name,) = node.volumes
    # LVM's "created" and "changed" alone settle nothing with a warning beside them: each change
    # is read back, and, the tags being as asked, no single command runs.
    assert [argv[0] for argv in node.shell_commands()] == ["lvs", "lvcreate", "lvs", "lvchange", "lvs"]
    assert node.shell_commands()[2][-1] == node.shell_commands()[4][-1] == f"{VG}/{name}"
    assert ("lvchange", "single") not in node.steps() and "ax.state=used" in node.volumes[name]["tags"]


def test_a_change_lvm_made_only_in_part_fails_the_call_though_lvm_said_changed(tmp_path, node):
    # LVM prints "changed" when any of a command's changes was made, and fails the command if one
    # was not: the tags read back decide, and the error said is the call's.
    node.shell_half_done = True
    node.add(seeded("slab-warm", State.FREE, 2, released_at=200))
    with pytest.raises(CommandFailed, match="simulated half-done change"):
        make_driver(tmp_path, node).mount(request_for(pod_volume_dir(tmp_path)))
    assert [argv[0] for argv in node.shell_commands()][:3] == ["lvs", "lvchange", "lvs"]
    assert node.mounts == []


def test_an_lvcreate_whose_end_never_came_back_is_not_taken_for_a_new_slab(tmp_path, node):
    node.shell_exits_after = "lvcreate"
    with pytest.raises(CommandFailed, match="already exists"):
        make_driver(tmp_path, node).mount(request_for(pod_volume_dir(tmp_path)))
    # The single lvcreate fails on the name the shell's made; that slab is tagged as being
    # created by this call, to be reclaimed as any a dead call left.
    assert node.steps()[2:] == [("lvcreate", "shell"), ("lvcreate", "single")]
    (name,) = node.volumes
    assert "ax.state=creating" in node.volumes[name]["tags"] and node.mounts == []


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
    assert driver.record.fields["decision"] == Decision.CREATED


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

    # Claimed for the dir (its measured usage kept until it is mounted), mounted, then the pod's.
    assert node.programs() == ["lvs", "lvchange", "mount", "lvchange"]
    assert node.calls[1] == [
        "lvchange", "--deltag", "ax.released=200", "--deltag", "ax.state=free",
        "--addtag", f"ax.dir={encode_dir(path)}", "--addtag", f"ax.pod={UID}", "--addtag", "ax.state=claimed",
        f"{VG}/slab-warm",
    ]
    assert node.calls[2][-2:] == [dm_path(VG, "slab-warm"), path]
    assert node.calls[3] == [
        "lvchange", "--deltag", "ax.state=claimed", "--deltag", "ax.usage=300", "--addtag", "ax.state=used",
        f"{VG}/slab-warm",
    ]
    assert message == f"mounted slab slab-warm (reused warm slab) on {path}"


def test_a_warm_slab_with_a_bad_superblock_is_deleted_and_the_next_one_used(tmp_path, node):
    node.add(seeded("slab-cold", State.FREE, 1, released_at=100))
    node.add(seeded("slab-warm", State.FREE, 2, released_at=200))
    node.broken_superblocks.add(dm_path(VG, "slab-warm"))
    path = pod_volume_dir(tmp_path)
    driver = make_driver(tmp_path, node)
    message = driver.mount(request_for(path))

    assert node.programs() == ["lvs", "lvchange", "lvchange", "lvremove", "lvs", "lvchange", "mount", "lvchange"]
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
    assert driver.record.fields["decision"] is Decision.REUSED
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
    # The decision (the doomed tag) under the node lock; the slow umount and lvremove outside it.
    assert node.locked == [True, True, False, False]
    assert node.volumes == {} and node.mounts == []
    assert message == f"unmounted {path}; deleted slab slab-1"
    assert (driver.record.fields["usage"], driver.record.fields["decision"]) == (0.9, Decision.DELETED)


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
    assert (driver.record.fields["decision"], driver.record.fields["unremovable"]) == (Decision.DEFERRED, ["slab-1"])


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
    assert node.programs() == ["lvs", "lvchange", "mount", "lvchange"]
    assert message == f"mounted slab {name} (reused warm slab) on {second}"
    assert node.mounts == [MountEntry(second, node.volumes[name]["device"], "ext4", dm_path(VG, name))]


# ---- slabs nobody measured, slabs claimed but never mounted, slow steps outside the lock ------


def test_a_warm_slab_nobody_measured_is_measured_once_mounted_and_replaced_if_too_full(tmp_path, node):
    node.add(seeded("slab-unmeasured", State.FREE, 1, released_at=200, usage_permille=None))
    node.usage = 0.9  # a reboot left it 90% full, unmeasured
    path = pod_volume_dir(tmp_path)
    driver = make_driver(tmp_path, node)
    message = driver.mount(request_for(path))

    assert "slab-unmeasured" not in node.volumes  # mounted, measured, unmounted and deleted
    assert node.programs()[:5] == ["lvs", "lvchange", "mount", "umount", "lvchange"]
    assert "created new slab" in message
    assert driver.record.fields["discarded_warm"] == [
        "slab-unmeasured: nobody had measured it and it is 90% full, over the usage threshold"
    ]


def test_a_warm_slab_nobody_measured_under_the_threshold_is_handed_on(tmp_path, node):
    node.add(seeded("slab-unmeasured", State.FREE, 1, released_at=200, usage_permille=None))
    node.usage = 0.2
    path = pod_volume_dir(tmp_path)
    driver = make_driver(tmp_path, node)
    assert "reused warm slab" in driver.mount(request_for(path))
    assert driver.record.fields["measured_before_use"] is True
    assert "ax.state=used" in node.volumes["slab-unmeasured"]["tags"]


def test_a_claimed_slab_never_mounted_is_checked_again_and_replaced_when_it_fails(tmp_path, node):
    # A try claimed the warm slab for this dir and died before mounting it; the slab is bad.
    path = pod_volume_dir(tmp_path)
    claimed = seeded("slab-claimed", State.CLAIMED, 1, mount_dir=path, uid=UID, usage_permille=100)
    node.add(claimed)
    node.broken_superblocks.add(dm_path(VG, "slab-claimed"))
    driver = make_driver(tmp_path, node)
    message = driver.mount(request_for(path))
    assert "slab-claimed" not in node.volumes and "created new slab" in message
    assert driver.record.fields["discarded_warm"] == ["slab-claimed: simulated bad superblock"]


def test_a_claimed_slab_never_mounted_is_mounted_without_claiming_it_again(tmp_path, node):
    path = pod_volume_dir(tmp_path)
    node.add(seeded("slab-claimed", State.CLAIMED, 1, mount_dir=path, uid=UID, usage_permille=100))
    message = make_driver(tmp_path, node).mount(request_for(path))
    assert node.programs() == ["lvs", "mount", "lvchange"]
    assert "ax.state=used" in node.volumes["slab-claimed"]["tags"] and message.endswith(f"(reused warm slab) on {path}")


def test_a_claimed_slab_found_mounted_is_finished_by_the_retry(tmp_path, node):
    # The try that mounted it died before tagging it the pod's.
    path = pod_volume_dir(tmp_path)
    node.add(seeded("slab-claimed", State.CLAIMED, 1, mount_dir=path, uid=UID, usage_permille=100))
    node.mount_slab("slab-claimed", path)
    make_driver(tmp_path, node).mount(request_for(path))
    assert node.programs() == ["lvs", "lvchange"]
    assert "ax.state=used" in node.volumes["slab-claimed"]["tags"]


def test_unmount_of_a_dir_that_is_not_mounted_keeps_its_slab_unmeasured(tmp_path, node):
    path = pod_volume_dir(tmp_path)
    node.add(seeded("slab-1", State.USED, 1, mount_dir=path, uid=UID))
    driver = make_driver(tmp_path, node, verb="unmount")
    message = driver.unmount(path)
    tags = node.volumes["slab-1"]["tags"]
    assert "ax.state=free" in tags and not any(t.startswith("ax.usage=") for t in tags)
    assert driver.record.fields["decision"] is Decision.KEPT_UNMEASURED and "measures it first" in message


def test_unmount_of_a_claimed_slab_never_mounted_keeps_its_measured_usage(tmp_path, node):
    path = pod_volume_dir(tmp_path)
    node.add(seeded("slab-1", State.CLAIMED, 1, mount_dir=path, uid=UID, usage_permille=100))
    make_driver(tmp_path, node, verb="unmount").unmount(path)
    assert {"ax.state=free", "ax.usage=100"} <= node.volumes["slab-1"]["tags"]


def test_unmount_keeps_the_node_lock_only_for_the_decision(tmp_path, node):
    path = pod_volume_dir(tmp_path)
    node.add(seeded("slab-1", State.USED, 1, mount_dir=path, uid=UID))
    node.mount_slab("slab-1", path)
    node.usage = 0.1
    make_driver(tmp_path, node, verb="unmount").unmount(path)
    assert node.programs() == ["lvs", "umount", "lvchange"]
    assert node.locked == [True, False, False]
