"""system/runner.py, with real harmless commands (the test's own argv; no LVM, no mounts)."""

from __future__ import annotations

import os
import signal
import stat
import time

import pytest

from flexdriver.errors import CommandFailed, CommandTimedOut
from flexdriver.system import runner as runner_module
from flexdriver.system.runner import CHILD_ENV, Completed, Runner


def executable(path, text: str = "#!/bin/sh\necho ran $0\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_success_is_a_completed_result():
    result = Runner().run(["/bin/true"])
    assert (result.argv, result.returncode, result.stdout, result.stderr) == (["/bin/true"], 0, "", "")
    assert result.seconds >= 0


def test_stdout_and_stderr_are_captured_as_text():
    result = Runner().run(["/bin/sh", "-c", "echo out; echo err >&2"])
    assert (result.stdout, result.stderr) == ("out\n", "err\n")


def test_failure_carries_argv_exit_code_and_stderr():
    argv = ["/bin/sh", "-c", "echo first warning >&2; echo x >&2; exit 3"]
    with pytest.raises(CommandFailed) as caught:
        Runner().run(argv)
    err = caught.value
    assert (err.argv, err.returncode, err.stderr) == (argv, 3, "first warning\nx\n")
    assert str(err) == f"{' '.join(argv)} failed (exit 3): x"
    assert err.reason == "command"


def test_failure_without_stderr_says_so():
    with pytest.raises(CommandFailed, match=r"^/bin/false failed \(exit 1\): no message$"):
        Runner().run(["/bin/false"])


def test_ok_codes_accept_other_exit_codes():
    assert Runner().run(["/bin/false"], ok_codes=(0, 1)).returncode == 1


def test_timeout_kills_the_child():
    started = time.monotonic()
    with pytest.raises(CommandTimedOut) as caught:
        Runner().run(["/bin/sleep", "5"], timeout=0.2)
    assert time.monotonic() - started < 2
    assert caught.value.argv == ["/bin/sleep", "5"]
    assert caught.value.returncode == -9
    assert "no answer after" in str(caught.value)
    assert caught.value.reason == "timeout"
    assert isinstance(caught.value, CommandFailed)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_timeout_kills_the_childs_whole_process_group_so_no_grandchild_holds_the_pipes(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    # The shell starts a grandchild that inherits stdout and stderr, then waits for it.
    argv = ["/bin/sh", "-c", f"/bin/sleep 30 & echo $! > {pidfile}; wait"]
    started = time.monotonic()
    with pytest.raises(CommandTimedOut):
        Runner().run(argv, timeout=0.5)
    assert time.monotonic() - started < 4
    grandchild = int(pidfile.read_text())
    for _ in range(50):
        if not _alive(grandchild):
            break
        time.sleep(0.05)
    assert not _alive(grandchild), "the timed-out command's grandchild outlived it"


def test_history_keeps_the_last_twenty_commands_including_failures():
    runner = Runner()
    for _ in range(21):
        runner.run(["/bin/true"])
    with pytest.raises(CommandFailed):
        runner.run(["/bin/false"])
    assert len(runner.history) == 20
    assert runner.history[-1].argv == ["/bin/false"] and runner.history[-1].returncode == 1
    assert isinstance(runner.history[0], Completed)


def test_resolve_missing_program_is_exit_127(tmp_path):
    with pytest.raises(CommandFailed) as caught:
        Runner(search_path=[str(tmp_path)]).resolve("lvs")
    assert (caught.value.argv, caught.value.returncode) == (["lvs"], 127)
    assert f"lvs not found in {tmp_path}" in str(caught.value)


def test_run_of_a_missing_program_is_exit_127(tmp_path):
    with pytest.raises(CommandFailed) as caught:
        Runner(search_path=[str(tmp_path)]).run(["no-such-program", "arg"])
    assert caught.value.returncode == 127


def test_absolute_path_that_cannot_be_run_is_exit_127(tmp_path):
    with pytest.raises(CommandFailed, match="cannot run") as caught:
        Runner().run([str(tmp_path / "missing")])
    assert caught.value.returncode == 127


def test_resolve_takes_the_first_executable_in_the_search_path(tmp_path):
    (tmp_path / "first").mkdir()
    (tmp_path / "first" / "tool").write_text("not executable")
    second = executable(tmp_path / "second" / "tool")
    third = executable(tmp_path / "third" / "tool")
    runner = Runner(search_path=[str(tmp_path / d) for d in ("first", "second", "third")])
    assert runner.resolve("tool") == str(second)
    third.unlink()
    second.unlink()
    assert runner.resolve("tool") == str(second)  # resolved once per call


def test_run_uses_the_resolved_absolute_path(tmp_path):
    tool = executable(tmp_path / "bin" / "tool")
    result = Runner(search_path=[str(tmp_path / "bin")]).run(["tool", "a"])
    assert result.argv == [str(tool), "a"]
    assert result.stdout == f"ran {tool}\n"


def test_absolute_programs_are_not_searched():
    assert Runner(search_path=[]).resolve("/bin/true") == "/bin/true"


def test_default_search_path_finds_system_programs():
    path = Runner().resolve("sh")
    assert os.path.dirname(path) in runner_module.SEARCH_PATH
    assert os.access(path, os.X_OK)


def test_children_get_only_the_fixed_environment(monkeypatch):
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    monkeypatch.setenv("SECRET_FROM_KUBELET", "x")
    output = Runner().run(["/usr/bin/env"]).stdout
    assert dict(line.split("=", 1) for line in output.splitlines()) == CHILD_ENV
    assert CHILD_ENV["LC_ALL"] == "C"


def test_children_run_in_root_with_stdin_closed():
    assert Runner().run(["/bin/sh", "-c", "pwd"]).stdout == "/\n"
    assert Runner().run(["/bin/cat"], timeout=5).stdout == ""


def test_undecodable_output_is_replaced_not_an_error():
    assert Runner().run(["/bin/sh", "-c", r"printf '\377ok'"]).stdout == "\ufffdok"


def test_children_ask_to_die_with_the_driver(monkeypatch):
    calls = []
    monkeypatch.setattr(runner_module, "_prctl", lambda *args: calls.append(args) or 0)
    runner_module._die_with_parent()
    assert calls == [(1, signal.SIGKILL, 0, 0, 0)]


def test_prctl_is_found_in_libc():
    assert runner_module._prctl is not None


def test_a_child_that_survives_sigkill_does_not_hold_the_call(monkeypatch, tmp_path):
    # As an umount stuck writing back to a dead device: SIGKILL cannot end it. Here the kill is
    # made to miss instead, so the child (a sleep) lives on after the timeout.
    import subprocess
    import threading

    monkeypatch.setattr(runner_module, "KILL_GRACE_S", 0.2)
    monkeypatch.setattr(runner_module.os, "killpg", lambda pid, sig: None)
    monkeypatch.setattr(subprocess.Popen, "kill", lambda self: None)
    pid_file = tmp_path / "pid"
    argv = ["/bin/sh", "-c", f"echo $$ > {pid_file}; exec /bin/sleep 60"]
    raised = []

    def call():
        try:
            Runner().run(argv, timeout=0.5)
        except CommandTimedOut as err:
            raised.append(err)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(timeout=20)  # far above the 0.5 s + 2 x 0.2 s the call may take; the sleep lasts 60
    try:
        assert not thread.is_alive(), "the runner is still waiting on a child it could not kill"
        assert len(raised) == 1
    finally:
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


# ---- a conversation: a program kept running to read commands on stdin --------------------------

ANSWERER = """#!/bin/sh
while read -r line; do
  echo "out $line"; echo "err $line" >&2; echo "report $line" >"/dev/fd/$ANSWER_FD"  # dash redirects only one-digit fds
done
"""


def collect(conversation, wanted: dict) -> dict:
    """What each channel said, read until every one has said at least what `wanted` names."""
    got = {channel: b"" for channel in wanted}
    deadline = time.monotonic() + 10
    while any(len(got[c]) < len(wanted[c]) for c in wanted) and time.monotonic() < deadline:
        for channel, data in conversation.receive(1.0):
            got[channel] += data
    return got


def test_a_conversation_keeps_the_three_outputs_apart_and_ends_when_its_input_does(tmp_path):
    program = executable(tmp_path / "answerer", ANSWERER)
    conversation = Runner().converse(str(program), {"PATH": "/bin:/usr/bin"}, "ANSWER_FD")
    conversation.send("one\n")
    assert collect(conversation, {"stdout": b"out one\n", "stderr": b"err one\n", "report": b"report one\n"}) == {
        "stdout": b"out one\n", "stderr": b"err one\n", "report": b"report one\n",
    }
    assert conversation.receive(0) == []  # nothing more, and no wait for it
    started = time.monotonic()
    conversation.close(timeout=5)  # its loop ends with its input: no kill needed
    assert time.monotonic() - started < 5


def test_a_conversation_whose_program_ended_reads_as_ended(tmp_path):
    program = executable(tmp_path / "quits", "#!/bin/sh\nexit 0\n")
    conversation = Runner().converse(str(program), {}, "ANSWER_FD")
    deadline = time.monotonic() + 10
    received = []
    while not received and time.monotonic() < deadline:
        received = conversation.receive(1.0, ("stdout",))
    assert received == [("stdout", b"")]
    conversation.kill()


def test_a_conversation_with_a_program_not_found_is_a_command_failure(tmp_path):
    with pytest.raises(CommandFailed) as caught:
        Runner(search_path=[str(tmp_path)]).converse("lvm", {}, "LVM_REPORT_FD")
    assert caught.value.returncode == 127


def test_a_threaded_runners_children_run_no_python_before_exec_and_still_die_with_it(tmp_path):
    """Runner(threaded=True), as the CSI plugin has it: setpriv gives the child PR_SET_PDEATHSIG.
    A process using it is SIGKILLed while its child sleeps: the child must not outlive it."""
    import subprocess
    import sys

    assert Runner(threaded=True)._spawn(["/bin/true"]) == ([Runner().resolve("setpriv"), "--pdeathsig", "KILL", "--",
                                                            "/bin/true"], None)
    pid_file = tmp_path / "child.pid"
    script = (
        "import sys, threading; sys.path.insert(0, sys.argv[1]);"
        "from flexdriver.system.runner import Runner;"
        "command = ['/bin/sh', '-c', 'echo $$ > ' + sys.argv[2] + '; exec sleep 60'];"
        "t = threading.Thread(target=Runner(threaded=True).run, args=(command,));"
        "t.start(); t.join()"
    )
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    parent = subprocess.Popen([sys.executable, "-c", script, repo, str(pid_file)])
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(pid_file.read_text())
    parent.kill()
    parent.wait(10)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{child}") and "Z" not in open(f"/proc/{child}/stat").read().split()[2]:
        assert time.monotonic() < deadline, "the child outlived the process that ran it"
        time.sleep(0.05)
