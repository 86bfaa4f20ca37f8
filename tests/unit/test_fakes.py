"""fakes.py: the test doubles themselves, so that a test cannot pass on a command it never prepared."""

from __future__ import annotations

import pytest

from flexdriver.errors import DriverError
from flexdriver.pool import MIB, State
from flexdriver.system.lvm_shell import LVMShell

from .fakes import FakeRunner, Unprepared
from .test_driver import SimulatedNode, seeded


def test_an_unprepared_command_fails_the_test_naming_its_argv():
    runner = FakeRunner()
    with pytest.raises(Unprepared, match=r"\['umount', '/mnt/x'\]"):
        runner.run(["umount", "/mnt/x"])
    assert runner.calls == [["umount", "/mnt/x"]]  # recorded all the same, for the failure's context


def test_a_prepared_prefix_answers_only_the_commands_it_starts():
    runner = FakeRunner()
    runner.reply(["lvchange", "--activate", "y"], stdout="done")
    assert runner.run(["lvchange", "--activate", "y", "vg/lv"]).stdout == "done"
    with pytest.raises(Unprepared):
        runner.run(["lvchange", "--addtag", "t", "vg/lv"])


def test_the_failure_is_not_one_the_code_under_test_could_take_for_a_failed_command():
    # Code that falls back on CommandFailed (or any DriverError) must not swallow a missing reply.
    assert not issubclass(Unprepared, DriverError)
    assert issubclass(Unprepared, AssertionError)


def test_the_simulated_node_fails_on_a_program_it_does_not_simulate(tmp_path):
    node = SimulatedNode(lock_path=str(tmp_path / "lock"))
    with pytest.raises(AssertionError, match=r"no handler for \['blkid', '-p', '/dev/xvdz'\]"):
        node.run(["blkid", "-p", "/dev/xvdz"])


def test_the_simulated_nodes_lvm_shell_answers_lvm_shell_py_as_lvm_does(tmp_path):
    """Through the real LVMShell: rows on the report channel, errors on stderr, and each command
    ended by the "No such command" its end marker gets."""
    node = SimulatedNode(lock_path=str(tmp_path / "lock"))
    node.add(seeded("slab-1", State.FREE, 1, released_at=7))
    shell = LVMShell(node, timeout_s=5.0)
    report = shell.run(["lvs", "--noheadings", "--separator", "|", "-o", "lv_name,lv_size", "vg-ax/slab-1"])
    assert (report.report, report.stdout, report.stderr) == (f"  slab-1|{1024 * MIB}\n", "", "")
    failed = shell.run(["lvchange", "--addtag", "ax.x", "vg-ax/gone", "--config", "backup/retain_days=0"])
    assert (failed.report, failed.stderr) == ("", 'Failed to find logical volume "vg-ax/gone"')
    assert node.programs() == ["lvchange"], "the read of one LV is no step; the failed change is"
    with pytest.raises(AssertionError, match=r"no handler for \['lvextend'"):
        shell.run(["lvextend", "--size", "+1g", "vg-ax/slab-1"])
