"""system/lvm.py: exact LVM command lines and report parsing, with a fake runner."""

from __future__ import annotations

import json

import pytest

from flexdriver.errors import CommandFailed, CommandTimedOut
from flexdriver.system.lvm import LVM, LogicalVolume, VolumeGroupReport, dm_path

from ..fakes import FakeRunner

REPORT = ["--reportformat", "json", "--units", "b", "--nosuffix"]
LVS = ["lvs", *REPORT, "-o",
       "vg_name,vg_size,vg_free,vg_extent_size,vg_mda_free,vg_mda_size,"
       "lv_name,lv_size,lv_tags,lv_active,lv_kernel_major,lv_kernel_minor", "vg-ax"]
VGS_FIELDS = ["vgs", *REPORT, "-o", "vg_name,vg_size,vg_free,vg_extent_size,vg_mda_free,vg_mda_size", "vg-ax"]
VGS_NAMES = ["vgs", *REPORT, "-o", "vg_name"]
# On every command that changes metadata: LVM's archive keeps the node's retain_min newest files
# instead of every file younger than 30 days.
BOUNDED = ["--config", "backup/retain_days=0"]

LVS_JSON = json.dumps({"report": [{"lv": [
    {"vg_name": "vg-ax", "vg_size": "8585740288", "vg_free": "7511998464", "vg_extent_size": "4194304",
     "vg_mda_free": "1040896", "vg_mda_size": "1044480", "lv_name": "slab-abc", "lv_size": "1073741824",
     "lv_tags": "ax.fs=ext4,ax.size_mb=1024,ax.slab,ax.state=free,ax.type=graph,ax.released=5",
     "lv_active": "active", "lv_kernel_major": "253", "lv_kernel_minor": "0"},
    {"vg_name": "vg-ax", "vg_size": "8585740288", "vg_free": "7511998464", "vg_extent_size": "4194304",
     "vg_mda_free": "1040896", "vg_mda_size": "1044480", "lv_name": "other", "lv_size": "4194304", "lv_tags": "",
     "lv_active": "", "lv_kernel_major": "-1", "lv_kernel_minor": "-1"},
]}]})
EMPTY_LVS_JSON = json.dumps({"report": [{"lv": []}]})
VGS_JSON = json.dumps({"report": [{"vg": [
    {"vg_name": "vg-ax", "vg_size": "8585740288", "vg_free": "8585740288", "vg_extent_size": "4194304"},
]}]})


def names_json(*names: str) -> str:
    return json.dumps({"report": [{"vg": [{"vg_name": n} for n in names]}]})


@pytest.fixture
def runner():
    return FakeRunner()


@pytest.fixture
def lvm(runner):
    return LVM(runner, "vg-ax")


def test_report_parses_the_volume_group_and_its_volumes(runner, lvm):
    runner.reply(["lvs"], stdout=LVS_JSON)
    assert lvm.report() == VolumeGroupReport(
        name="vg-ax",
        size_bytes=8585740288,
        free_bytes=7511998464,
        extent_bytes=4194304,
        volumes=(
            LogicalVolume(
                name="slab-abc",
                size_bytes=1073741824,
                tags=frozenset({"ax.fs=ext4", "ax.size_mb=1024", "ax.slab", "ax.state=free", "ax.type=graph", "ax.released=5"}),
                active=True,
                device=(253, 0),
            ),
            LogicalVolume(name="other", size_bytes=4194304, tags=frozenset(), active=False, device=None),
        ),
        metadata_free_bytes=1040896,
        metadata_size_bytes=1044480,
    )
    assert runner.calls == [LVS]
    assert runner.timeouts == [120.0]


def test_report_of_an_empty_volume_group_falls_back_to_vgs(runner, lvm):
    runner.reply(["lvs"], stdout=EMPTY_LVS_JSON)
    runner.reply(VGS_FIELDS, stdout=VGS_JSON)
    assert lvm.report() == VolumeGroupReport("vg-ax", 8585740288, 8585740288, 4194304, ())
    assert runner.calls == [LVS, VGS_FIELDS]


def test_report_is_none_when_the_volume_group_does_not_exist(runner, lvm):
    runner.fail(["lvs"], stderr='Volume group "vg-ax" not found')
    runner.reply(VGS_NAMES, stdout=names_json("vg-other", "vg-ax-2"))
    assert lvm.report() is None
    assert runner.calls == [LVS, VGS_NAMES]


def test_report_reraises_an_lvs_failure_when_the_volume_group_exists(runner, lvm):
    runner.fail(["lvs"], returncode=5, stderr="metadata is locked")
    runner.reply(VGS_NAMES, stdout=names_json("vg-ax"))
    with pytest.raises(CommandFailed, match="metadata is locked"):
        lvm.report()


def test_unreadable_report_is_a_command_failure(runner, lvm):
    runner.reply(["lvs"], stdout="  WARNING: not JSON at all")
    with pytest.raises(CommandFailed, match="unreadable LVM JSON report"):
        lvm.report()


def test_volume_group_names(runner, lvm):
    runner.reply(VGS_NAMES, stdout=names_json("a", "vg-ax"))
    assert lvm.volume_group_names() == ["a", "vg-ax"]
    assert runner.calls == [VGS_NAMES]


def test_create_volume_group(runner, lvm):
    runner.reply(["vgcreate"])
    lvm.create_volume_group("/dev/xvdz")
    assert runner.calls == [["vgcreate", "--yes", "--metadatasize", "8m", "vg-ax", "/dev/xvdz", *BOUNDED]]


def test_create_adds_every_tag_in_sorted_order(runner, lvm):
    runner.reply(["lvcreate"])
    lvm.create("slab-1", 1073741824, ["ax.state=creating", "ax.slab", "ax.fs=xfs"])
    assert runner.calls == [[
        "lvcreate", "--yes", "--wipesignatures", "y", "--zero", "y", "--activate", "y",
        "--size", "1073741824b", "--name", "slab-1",
        "--addtag", "ax.fs=xfs", "--addtag", "ax.slab", "--addtag", "ax.state=creating",
        "vg-ax", *BOUNDED,
    ]]
    assert runner.timeouts == [120.0]


def test_retag_swaps_tags_in_one_lvchange(runner, lvm):
    runner.reply(["lvchange"])
    lvm.retag(
        "slab-1",
        add={"ax.state=used", "ax.dir=L2E=", "ax.pod=p"},
        delete={"ax.state=creating", "ax.creator=b:1:2", "ax.dir=L2E="},
    )
    assert runner.calls == [[
        "lvchange",
        "--deltag", "ax.creator=b:1:2", "--deltag", "ax.state=creating",
        "--addtag", "ax.pod=p", "--addtag", "ax.state=used",
        "vg-ax/slab-1", *BOUNDED,
    ]]


def test_retag_without_change_runs_nothing(runner, lvm):
    lvm.retag("slab-1", add={"ax.state=used"}, delete={"ax.state=used"})
    lvm.retag("slab-1", add=[], delete=[])
    assert runner.calls == []


def test_activate(runner, lvm):
    runner.reply(["lvchange", "--activate", "y"])
    lvm.activate("slab-1")
    assert runner.calls == [["lvchange", "--activate", "y", "vg-ax/slab-1", *BOUNDED]]


def test_remove_takes_all_names_in_one_call(runner, lvm):
    runner.reply(["lvremove"])
    lvm.remove(["slab-1", "slab-2"])
    assert runner.calls == [["lvremove", "--yes", "vg-ax/slab-1", "vg-ax/slab-2", *BOUNDED]]


def test_every_change_bounds_the_archive_and_no_read_carries_it(runner, lvm):
    """LVM archives before each metadata change: each one the driver and the admin command make
    goes through here, reads write nothing and need no bound."""
    runner.reply(["lvs"], stdout=LVS_JSON)
    runner.reply(VGS_NAMES, stdout=names_json("vg-ax"))
    for change in ("vgcreate", "lvcreate", "lvchange", "lvremove"):
        runner.reply([change])
    lvm.create_volume_group("/dev/xvdz")
    lvm.create("slab-1", 1 << 30, {"ax.slab"})
    lvm.retag("slab-1", add={"ax.state=used"}, delete={"ax.state=free"})
    lvm.activate("slab-1")
    lvm.remove(["slab-1"])
    lvm.report()
    lvm.volume_group_names()
    changes = [argv for argv in runner.calls if argv[0] not in ("lvs", "vgs")]
    assert [argv[0] for argv in changes] == ["vgcreate", "lvcreate", "lvchange", "lvchange", "lvremove"]
    assert all(argv[-2:] == BOUNDED for argv in changes)
    assert not any("--config" in argv for argv in runner.calls if argv[0] in ("lvs", "vgs"))


def test_the_bound_is_an_argument_the_lvm_shell_passes_unchanged():
    from flexdriver.system.lvm import BOUNDED_ARCHIVE
    from flexdriver.system.lvm_shell import LVMShell

    assert BOUNDED_ARCHIVE == BOUNDED and LVMShell.accepts(BOUNDED_ARCHIVE)


def test_a_failed_batch_retried_alone_still_bounds_the_archive(runner, lvm):
    runner.reply(["lvremove"])
    runner.fail(["lvremove", "--yes", "vg-ax/slab-1", "vg-ax/slab-2"], stderr="contains a filesystem in use.")
    runner.fail(["lvremove", "--yes", "vg-ax/slab-2"], stderr="contains a filesystem in use.")
    lvm.remove(["slab-1", "slab-2"])
    assert runner.calls[1:] == [["lvremove", "--yes", "vg-ax/slab-1", *BOUNDED], ["lvremove", "--yes", "vg-ax/slab-2", *BOUNDED]]


def test_remove_of_nothing_runs_nothing(runner, lvm):
    assert lvm.remove([]) == ()
    assert runner.calls == []


def test_remove_returns_nothing_left_when_the_batch_works(runner, lvm):
    runner.reply(["lvremove"])
    assert lvm.remove(["slab-1", "slab-2"]) == ()


def test_after_a_failed_batch_each_is_tried_alone_and_the_busy_ones_are_returned(runner, lvm):
    runner.fail(["lvremove", "--yes", "vg-ax/slab-1", "vg-ax/slab-2", "vg-ax/slab-3"],
                stderr="Logical volume vg-ax/slab-2 contains a filesystem in use.")
    runner.fail(["lvremove", "--yes", "vg-ax/slab-1"], stderr='Failed to find logical volume "vg-ax/slab-1"')
    runner.fail(["lvremove", "--yes", "vg-ax/slab-2"], stderr="Logical volume vg-ax/slab-2 contains a filesystem in use.")
    runner.fail(["lvremove", "--yes", "vg-ax/slab-3"], stderr='Failed to find logical volume "vg-ax/slab-3"')
    assert lvm.remove(["slab-1", "slab-2", "slab-3"]) == ("slab-2",)
    assert len(runner.calls) == 4


def test_a_batch_that_timed_out_is_not_retried(runner, lvm):
    runner._replies.append((["lvremove"], CommandTimedOut(["lvremove"], -9, "", "killed after 120 s")))
    with pytest.raises(CommandTimedOut):
        lvm.remove(["slab-1", "slab-2"])
    assert len(runner.calls) == 1


@pytest.mark.parametrize(
    "vg,lv,expected",
    [
        ("vg-ax", "slab-1", "/dev/mapper/vg--ax-slab--1"),
        ("vg", "lv", "/dev/mapper/vg-lv"),
        ("a-b-c", "slab-0a1b2c3d4e5f", "/dev/mapper/a--b--c-slab--0a1b2c3d4e5f"),
    ],
)
def test_dm_path(vg, lv, expected):
    assert dm_path(vg, lv) == expected


# ---- through the lvm shell ----------------------------------------------------------------------

SHELL_LVS = ["lvs", "--noheadings", "--units", "b", "--nosuffix", "--separator", "|", "-o",
             "vg_name,vg_size,vg_free,vg_extent_size,vg_mda_free,vg_mda_size,lv_name,lv_size,lv_tags,lv_active,lv_kernel_major,lv_kernel_minor",
             "vg-ax"]
SHELL_ROWS = (
    "  vg-ax|8585740288|7511998464|4194304|1040896|1044480|slab-abc|1073741824|"
    "ax.fs=ext4,ax.size_mb=1024,ax.slab,ax.state=free,ax.type=graph,ax.released=5|active|253|0\n"
    "  vg-ax|8585740288|7511998464|4194304|1040896|1044480|other|4194304|||-1|-1\n"
)


class FakeShell:
    """Stands in for lvm_shell.LVMShell: records argv, answers from canned (report, stderr)."""

    def __init__(self, answers=None, unavailable=()) -> None:
        self.calls = []
        self.answers = dict(answers or {})
        self.unavailable = set(unavailable)

    def run(self, argv):
        from flexdriver.system.lvm_shell import ShellResult, ShellUnavailable

        self.calls.append(list(argv))
        if argv[0] in self.unavailable:
            raise ShellUnavailable(argv[0])
        report, stderr = self.answers.get(argv[0], ("", ""))
        return ShellResult(list(argv), "", report, stderr, 0.0)


def test_report_through_the_shell_runs_no_single_command(runner):
    shell = FakeShell({"lvs": (SHELL_ROWS, "")})
    report = LVM(runner, "vg-ax", shell=shell).report()
    assert shell.calls == [SHELL_LVS] and runner.calls == []
    assert report.free_bytes == 7511998464 and report.extent_bytes == 4194304
    assert report.volumes[0] == LogicalVolume(
        "slab-abc", 1073741824,
        frozenset({"ax.fs=ext4", "ax.size_mb=1024", "ax.slab", "ax.state=free", "ax.type=graph", "ax.released=5"}),
        True, (253, 0),
    )
    assert report.volumes[1].device is None and not report.volumes[1].active and report.volumes[1].tags == frozenset()


@pytest.mark.parametrize("rows", ["", "  vg-ax|1|2\n"])
def test_report_the_shell_cannot_settle_is_left_to_lvs(runner, rows):
    """No rows (empty or missing VG, or an error) or rows of another shape: lvs decides."""
    shell = FakeShell({"lvs": (rows, "  Volume group \"vg-ax\" not found")})
    runner.fail(["lvs"])
    runner.reply(["vgs"], stdout=names_json("other"))
    assert LVM(runner, "vg-ax", shell=shell).report() is None
    assert runner.calls == [LVS, VGS_NAMES]


def test_retag_through_the_shell_reads_the_tags_back(runner):
    shell = FakeShell({"lvs": ("  ax.slab,ax.pod=p,ax.state=used\n", "")})
    LVM(runner, "vg-ax", shell=shell).retag("slab-1", add={"ax.state=used", "ax.pod=p"}, delete={"ax.state=free"})
    assert shell.calls == [
        ["lvchange", "--deltag", "ax.state=free", "--addtag", "ax.pod=p", "--addtag", "ax.state=used", "vg-ax/slab-1",
         *BOUNDED],
        ["lvs", "--noheadings", "--units", "b", "--nosuffix", "--separator", "|", "-o", "lv_tags", "vg-ax/slab-1"],
    ]
    assert runner.calls == []


def test_retag_that_failed_in_the_shell_is_a_command_failure(runner):
    shell = FakeShell({"lvchange": ("", "  Failed to find logical volume \"vg-ax/slab-1\""),
                       "lvs": ("  ax.slab,ax.state=free\n", "")})
    with pytest.raises(CommandFailed, match="Failed to find"):
        LVM(runner, "vg-ax", shell=shell).retag("slab-1", add={"ax.state=used"}, delete={"ax.state=free"})
    assert runner.calls == []


def test_retag_whose_outcome_the_shell_cannot_tell_runs_the_single_command(runner):
    """The shell died after the change was sent: lvchange itself settles it (it is idempotent)."""
    shell = FakeShell(unavailable={"lvs"})
    runner.reply(["lvchange"])
    LVM(runner, "vg-ax", shell=shell).retag("slab-1", add={"ax.state=used"}, delete={"ax.state=free"})
    assert runner.calls == [["lvchange", "--deltag", "ax.state=free", "--addtag", "ax.state=used", "vg-ax/slab-1",
                             *BOUNDED]]


def test_without_the_shell_every_command_is_a_single_one(runner):
    shell = FakeShell(unavailable={"lvs", "lvchange"})
    runner.reply(["lvs"], stdout=LVS_JSON)
    runner.reply(["lvchange"])
    lvm = LVM(runner, "vg-ax", shell=shell)
    assert lvm.report().volumes[0].name == "slab-abc"
    lvm.retag("slab-1", add={"ax.state=used"}, delete=())
    assert runner.calls == [LVS, ["lvchange", "--addtag", "ax.state=used", "vg-ax/slab-1", *BOUNDED]]


def test_every_runner_gets_the_shell_and_one_that_cannot_start_it_runs_single_commands(runner):
    """No runner is special-cased: the shell is asked of whatever runner LVM is given, and one
    that cannot start `lvm` (as FakeRunner cannot) leaves each command to run on its own."""
    from flexdriver.system.lvm_shell import LVMShell
    from flexdriver.system.runner import Runner

    assert isinstance(LVM(Runner(), "vg-ax").shell, LVMShell)
    lvm = LVM(runner, "vg-ax")
    assert isinstance(lvm.shell, LVMShell)
    runner.reply(["lvs"], stdout=LVS_JSON)
    runner.reply(["lvchange"])
    assert lvm.report().volumes[0].name == "slab-abc"
    lvm.retag("slab-1", add={"ax.state=used"}, delete=())
    assert runner.conversations == ["lvm"], "asked once; not again in the same call once it failed"
    assert runner.calls == [LVS, ["lvchange", "--addtag", "ax.state=used", "vg-ax/slab-1", *BOUNDED]]


CREATE = ["lvcreate", "--yes", "--wipesignatures", "y", "--zero", "y", "--activate", "y",
          "--size", "1073741824b", "--name", "slab-1", "--addtag", "ax.slab", "--addtag", "ax.state=creating", "vg-ax",
          *BOUNDED]
CREATED_CHECK = ["lvs", "--noheadings", "--units", "b", "--nosuffix", "--separator", "|", "-o", "lv_active,lv_tags",
                 "vg-ax/slab-1"]


def test_create_through_the_shell_reads_the_new_slab_back(runner):
    shell = FakeShell({"lvs": ("  active|ax.slab,ax.state=creating\n", "")})
    LVM(runner, "vg-ax", shell=shell).create("slab-1", 1 << 30, {"ax.state=creating", "ax.slab"})
    assert shell.calls == [CREATE, CREATED_CHECK] and runner.calls == []


@pytest.mark.parametrize("row", ["", "  |ax.slab,ax.state=creating\n", "  active|ax.slab\n"])
def test_create_that_failed_in_the_shell_is_a_command_failure(runner, row):
    """Not there, there but not active, or without its tags: never taken for a new slab."""
    shell = FakeShell({"lvcreate": ("", "  Volume group \"vg-ax\" has insufficient free space"), "lvs": (row, "")})
    with pytest.raises(CommandFailed, match="insufficient free space"):
        LVM(runner, "vg-ax", shell=shell).create("slab-1", 1 << 30, {"ax.state=creating", "ax.slab"})
    assert runner.calls == []


@pytest.mark.parametrize("unavailable", ["lvcreate", "lvs"])
def test_create_the_shell_cannot_settle_runs_the_single_command(runner, unavailable):
    shell = FakeShell(unavailable={unavailable})
    runner.reply(["lvcreate"])
    LVM(runner, "vg-ax", shell=shell).create("slab-1", 1 << 30, {"ax.state=creating", "ax.slab"})
    assert runner.calls == [CREATE]


# ---- a thin device the kernel's pool holds and LVM does not ------------------------------------

ORPHAN_STDERR = (
    '  device-mapper: message ioctl on  (253:4) failed: File exists\n'
    '  Failed to process message "create_snap 4 1".\n'
    "  Thin pool vg--ax-thinpool-tpool (253:4) already contain thin device with device_id 4.\n"
    "  Manual intervention may be required to remove device dev_id=4 in thin pool metadata.\n"
    "  Failed to suspend vg-ax/thinpool with queued messages."
)


def thin_listing(*thin_ids: str, transaction_id: str = "4") -> str:
    rows = [{"lv_name": "thinpool", "thin_id": "", "pool_lv": "", "lv_attr": "twi-aotz--", "transaction_id": transaction_id}]
    rows += [{"lv_name": f"slab-{i}", "thin_id": i, "pool_lv": "thinpool", "lv_attr": "Vwi-a-tz--"} for i in thin_ids]
    return json.dumps({"report": [{"lv": rows}]})


# `dmsetup status` of a thin-pool target: its fourth field is the pool's transaction id.
POOL_STATUS = "0 2097152 thin-pool {transaction_id} 113/1024 0/16384 - rw discard_passdown queue_if_no_space - 256\n"


class Sequenced(FakeRunner):
    """A FakeRunner whose lvcreate fails as the orphan makes it fail, `failures` times."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def run(self, argv, **kwargs):
        if argv[0] == "lvcreate" and self.failures:
            self.failures -= 1
            self.calls.append(list(argv))
            raise CommandFailed(list(argv), 5, ORPHAN_STDERR)
        return super().run(argv, **kwargs)


def test_a_snapshot_refused_for_an_orphan_thin_device_deletes_it_and_is_made():
    runner = Sequenced(failures=1)
    runner.reply(["lvs"], thin_listing("1", "2", "3"))
    runner.reply(["dmsetup", "status", "vg--ax-thinpool-tpool"], POOL_STATUS.format(transaction_id=3))
    runner.reply(["dmsetup", "message"])
    runner.reply(["lvcreate"])
    LVM(runner, "vg-ax", shell=FakeShell(unavailable={"lvcreate", "lvs"})).snapshot("slab-1", "slab-new", ["ax.slab"])
    assert [argv[:2] for argv in runner.calls] == [
        ["lvcreate", "--yes"], ["lvs", *REPORT[:1]], ["dmsetup", "status"], ["dmsetup", "message"], ["lvcreate", "--yes"],
    ]
    assert runner.calls[3] == ["dmsetup", "message", "vg--ax-thinpool-tpool", "0", "delete 4"]


def test_a_create_message_lvm_queued_and_the_pool_did_moves_the_pools_transaction_id_on():
    # Killed after the pool made the LV's device and before the pool's transaction id followed:
    # LVM's metadata has the LV (id 4) and is one transaction ahead of the kernel's pool.
    runner = Sequenced(failures=1)
    runner.reply(["lvs"], thin_listing("1", "4", transaction_id="4"))
    runner.reply(["dmsetup", "status", "vg--ax-thinpool-tpool"], POOL_STATUS.format(transaction_id=3))
    runner.reply(["dmsetup", "message"])
    runner.reply(["lvcreate"])
    LVM(runner, "vg-ax", shell=FakeShell(unavailable={"lvcreate", "lvs"})).snapshot("slab-1", "slab-new", ["ax.slab"])
    assert runner.calls[3] == ["dmsetup", "message", "vg--ax-thinpool-tpool", "0", "set_transaction_id 3 4"]
    assert [argv[0] for argv in runner.calls].count("lvcreate") == 2


@pytest.mark.parametrize("kernel", ["4", "2", "-"])
def test_a_device_id_lvm_knows_is_never_deleted_nor_the_pool_moved_on_unless_one_behind(kernel):
    runner = Sequenced(failures=1)
    runner.reply(["lvs"], thin_listing("1", "4", transaction_id="4"))
    runner.reply(["dmsetup", "status", "vg--ax-thinpool-tpool"], POOL_STATUS.format(transaction_id=kernel))
    with pytest.raises(CommandFailed, match="queued messages"):
        LVM(runner, "vg-ax", shell=FakeShell(unavailable={"lvcreate", "lvs"})).snapshot("slab-1", "slab-new", ["ax.slab"])
    assert [argv[0] for argv in runner.calls] == ["lvcreate", "lvs", "dmsetup"]


def test_an_orphan_is_deleted_once_and_a_second_refusal_is_the_calls_failure():
    runner = Sequenced(failures=2)
    runner.reply(["lvs"], thin_listing("1"))
    runner.reply(["dmsetup", "status", "vg--ax-thinpool-tpool"], "", returncode=1)  # no thin volume active
    runner.reply(["dmsetup", "status", "vg--ax-thinpool"], POOL_STATUS.format(transaction_id=3))
    runner.reply(["dmsetup", "message"])
    with pytest.raises(CommandFailed, match="queued messages"):
        LVM(runner, "vg-ax", shell=FakeShell(unavailable={"lvcreate", "lvs"})).create(
            "slab-new", 1 << 30, ["ax.slab"], thin_pool="thinpool")
    assert runner.calls[-2] == ["dmsetup", "message", "vg--ax-thinpool", "0", "delete 4"]
    assert [argv[0] for argv in runner.calls].count("lvcreate") == 2


def test_a_thick_lvcreate_never_looks_for_orphans():
    runner = Sequenced(failures=1)
    with pytest.raises(CommandFailed):
        LVM(runner, "vg-ax", shell=FakeShell(unavailable={"lvcreate"})).create("slab-new", 1 << 30, ["ax.slab"])
    assert [argv[0] for argv in runner.calls] == ["lvcreate"]
