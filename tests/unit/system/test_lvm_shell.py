"""system/lvm_shell.py: the conversation with `lvm` reading commands on stdin, against a stand-in
`lvm` program that behaves as LVM's shell does (reports on LVM_REPORT_FD, "No such command"
on stderr for an unknown command, no exit status per command)."""

from __future__ import annotations

import os
import textwrap
import time

import pytest

from flexdriver.errors import CommandTimedOut
from flexdriver.system.lvm_shell import LVMShell, ShellUnavailable
from flexdriver.system.runner import Runner

FAKE_LVM = textwrap.dedent("""\
    #!/usr/bin/env python3
    import os, sys, time
    report = os.fdopen(int(os.environ["LVM_REPORT_FD"]), "w")
    with open(os.environ.get("FAKE_LVM_LOG", "/dev/null"), "a") as log:
        log.write(f"start HOME={os.environ.get('HOME')} pid={os.getpid()}\\n")
    for line in sys.stdin:
        argv = line.split()
        if not argv:
            continue
        if argv[0] == "lvs":
            report.write("  vg|1|2\\n"); report.flush()
        elif argv[0] == "lvchange" and argv[-1].endswith("/missing"):
            sys.stderr.write(f'  Failed to find logical volume "{argv[-1]}"\\n'); sys.stderr.flush()
        elif argv[0] == "lvchange":
            print(f"  Logical volume {argv[-1]} changed.", flush=True)
        elif argv[0] == "hang":
            time.sleep(60)
        elif argv[0] == "die":
            sys.exit(3)
        else:
            sys.stderr.write(f"  No such command '{argv[0]}'.  Try 'help'.\\n"); sys.stderr.flush()
""")


@pytest.fixture
def shell(tmp_path, monkeypatch):
    program = tmp_path / "lvm"
    program.write_text(FAKE_LVM)
    program.chmod(0o755)
    log = tmp_path / "log"
    monkeypatch.setattr("flexdriver.system.lvm_shell.CHILD_ENV", {"PATH": os.environ["PATH"], "FAKE_LVM_LOG": str(log)})
    made = LVMShell(Runner(search_path=[str(tmp_path)]), timeout_s=5.0)
    made.log = log
    yield made
    made.close()


def test_commands_share_one_process_and_each_gets_its_own_output(shell):
    first = shell.run(["lvs", "-o", "lv_name", "vg"])
    second = shell.run(["lvchange", "--addtag", "a=b", "vg/lv"])
    third = shell.run(["lvchange", "--addtag", "a=b", "vg/missing"])
    assert (first.report, first.stdout, first.stderr) == ("  vg|1|2\n", "", "")
    assert (second.report, second.stdout, second.stderr) == ("", "  Logical volume vg/lv changed.\n", "")
    assert third.stderr == 'Failed to find logical volume "vg/missing"'
    starts = shell.log.read_text().splitlines()
    assert len(starts) == 1 and "HOME=/nonexistent" in starts[0]


def test_an_argument_the_shell_would_split_or_unquote_is_refused_before_anything_runs(shell):
    for argv in (["lvchange", "--addtag", "a b", "vg/lv"], ["lvs", "'x'"], ["lvs", "#"]):
        with pytest.raises(ShellUnavailable):
            shell.run(argv)
    assert not shell.log.exists()


def test_a_shell_that_dies_is_not_used_again(shell):
    with pytest.raises(ShellUnavailable):
        shell.run(["die"])
    with pytest.raises(ShellUnavailable):
        shell.run(["lvs", "vg"])


def test_a_hung_command_times_out_and_kills_the_shell(shell):
    shell.run(["lvs", "vg"])  # started, within the generous timeout
    shell.timeout_s = 0.5
    with pytest.raises(CommandTimedOut):
        shell.run(["hang"])
    pid = int(shell.log.read_text().split("pid=")[1])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_no_lvm_program_means_no_shell(tmp_path):
    shell = LVMShell(Runner(search_path=[str(tmp_path)]), timeout_s=5.0)
    with pytest.raises(ShellUnavailable):
        shell.run(["lvs", "vg"])


def test_a_shell_started_ahead_is_the_one_commands_then_use(shell):
    shell.start()
    shell.start()  # idempotent
    deadline = time.monotonic() + 10
    while not shell.log.exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # it comes up on its own, before any command
    assert shell.log.read_text().count("start ") == 1
    assert shell.run(["lvs", "vg"]).report == "  vg|1|2\n"
    assert shell.log.read_text().count("start ") == 1


def test_starting_ahead_without_lvm_is_left_to_the_single_commands(tmp_path):
    lonely = LVMShell(Runner(search_path=[str(tmp_path)]), timeout_s=5.0)
    lonely.start()  # no lvm here: nothing raised now
    with pytest.raises(ShellUnavailable):
        lonely.run(["lvs", "vg"])
