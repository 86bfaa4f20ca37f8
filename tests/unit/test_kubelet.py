"""kubelet.py: argv in, exactly one JSON object out, whatever happens inside."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings

import pytest

from flexdriver import INIT_RESPONSE, kubelet
from flexdriver import config as config_module

UNSUPPORTED = [
    "attach", "detach", "waitforattach", "isattached", "mountdevice", "unmountdevice",
    "getvolumename", "expandvolume", "expandfs",
]
MOUNT_DIR = "/var/lib/kubelet/pods/4f1b3a8e/volumes/ax~vol_plugin/docker"


def call_main(tmp_path, argv):
    """kubelet.main(argv) with fds 1 and 2 on files, as kubelet runs it; fds restored afterwards.

    Returns (exit code, every byte kubelet would read: stdout then stderr).
    """
    with open(tmp_path / "kubelet-stdout", "w+b") as out, open(tmp_path / "kubelet-stderr", "w+b") as err:
        saved_out, saved_err = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            code = kubelet.main(argv)
        finally:
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
        out.seek(0)
        err.seek(0)
        return code, out.read() + err.read()


def one_json_object(seen: bytes) -> dict:
    reply = json.loads(seen.decode())  # fails on anything but exactly one JSON value
    assert isinstance(reply, dict)
    return reply


def log_lines(log_file) -> list:
    if not log_file.exists():
        return []
    return [json.loads(line) for line in log_file.read_text().splitlines()]


# ---- run(): the answer, without the fd plumbing -----------------------------------------


def test_run_init_answers_capabilities():
    response, record, config = kubelet.run(["init"])
    assert response == {"status": "Success", "capabilities": {"attach": False, "fsGroup": False}}
    assert response == json.loads(INIT_RESPONSE)
    assert record.fields == {"verb": "init"}
    assert config is None


@pytest.mark.parametrize("verb", UNSUPPORTED + ["frobnicate"])
def test_run_other_verbs_are_not_supported(verb):
    response, record, _ = kubelet.run([verb, "/some/dir", "{}"])
    assert response == {"status": "Not supported", "message": f"{verb} is not supported by ax/vol_plugin"}
    assert "reason" not in record.fields


def test_run_without_a_verb_fails_with_usage():
    response, record, _ = kubelet.run([])
    assert response["status"] == "Failure"
    assert "no verb given" in response["message"] and kubelet.USAGE in response["message"]
    assert record.fields == {"verb": "", "reason": "bad_request"}


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["mount"], "mount takes 2 argument(s), got 0"),
        (["mount", MOUNT_DIR], "mount takes 2 argument(s), got 1"),
        (["mount", MOUNT_DIR, "{}", "extra"], "mount takes 2 argument(s), got 3"),
        (["unmount"], "unmount takes 1 argument(s), got 0"),
        (["unmount", MOUNT_DIR, "{}"], "unmount takes 1 argument(s), got 2"),
    ],
)
def test_run_wrong_argument_counts_fail(argv, expected):
    response, record, config = kubelet.run(argv)
    assert response["status"] == "Failure"
    assert response["message"].startswith(expected)
    assert record.fields["reason"] == "bad_request"
    assert config is None


def test_run_loads_the_config_and_refuses_bad_options(config_file, tmp_path):
    response, record, config = kubelet.run(["mount", MOUNT_DIR, "not json"])
    assert response["status"] == "Failure"
    assert "not valid JSON" in response["message"]
    assert record.fields["reason"] == "bad_request"
    assert config.log_file == f"{tmp_path}/driver.log"


def test_run_turns_a_config_error_into_a_failure(config_file):
    config_file.write_text("[vol_plugin]\nusage_threshold = lots\n")
    response, record, config = kubelet.run(["unmount", MOUNT_DIR])
    assert response["status"] == "Failure"
    assert "usage_threshold" in response["message"]
    assert record.fields["reason"] == "config"
    assert config is None


def test_run_turns_any_exception_into_an_internal_failure(monkeypatch):
    def broken(argv, record, config_box):
        raise KeyError("oops")

    monkeypatch.setattr(kubelet, "handle", broken)
    response, record, _ = kubelet.run(["mount", "a", "b"])
    assert response == {
        "status": "Failure",
        "message": "internal error in ax/vol_plugin (KeyError: 'oops'); see the driver log",
    }
    assert record.fields["reason"] == "internal"
    assert "KeyError: 'oops'" in record.fields["traceback"]


# ---- main(): exactly one JSON object on fd 1 and nothing on fd 2 -------------------------


def test_main_init(tmp_path, journal_writes):
    code, seen = call_main(tmp_path, ["init"])
    assert (code, one_json_object(seen)) == (0, {"status": "Success", "capabilities": {"attach": False, "fsGroup": False}})
    assert journal_writes == []


def test_main_without_arguments(tmp_path):
    code, seen = call_main(tmp_path, [])
    reply = one_json_object(seen)
    assert (code, reply["status"]) == (1, "Failure")
    assert "usage" in reply["message"]


@pytest.mark.parametrize("verb", UNSUPPORTED + ["frobnicate"])
def test_main_other_verbs_are_not_supported(tmp_path, journal_writes, verb):
    code, seen = call_main(tmp_path, [verb, "/some/dir", "{}"])
    assert code == 0
    assert one_json_object(seen)["status"] == "Not supported"
    assert journal_writes == []  # nothing to log for a verb that did nothing


@pytest.mark.parametrize("argv", [["mount"], ["mount", MOUNT_DIR], ["unmount"], ["unmount", "a", "b"], ["mount", "a", "b", "c"]])
def test_main_wrong_argument_counts(tmp_path, argv):
    code, seen = call_main(tmp_path, argv)
    reply = one_json_object(seen)
    assert (code, reply["status"]) == (1, "Failure")
    assert "argument(s)" in reply["message"]


def test_main_logs_a_failed_mount_to_the_configured_log(tmp_path, log_file):
    code, seen = call_main(tmp_path, ["mount", MOUNT_DIR, "[]"])
    assert (code, one_json_object(seen)["status"]) == (1, "Failure")
    (line,) = log_lines(log_file)
    assert (line["verb"], line["outcome"], line["reason"]) == ("mount", "Failure", "bad_request")
    assert "must be a JSON object" in line["message"]
    assert line["pid"] == os.getpid()


def test_main_answers_kubelet_even_when_logging_the_call_breaks(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("log writer bug")

    monkeypatch.setattr(kubelet.journal, "append", broken)
    code, seen = call_main(tmp_path, ["mount", MOUNT_DIR, "[]"])
    assert (code, one_json_object(seen)["status"]) == (1, "Failure")


def test_main_logs_an_argument_error_to_the_configured_log(tmp_path, log_file, journal_writes):
    code, _ = call_main(tmp_path, ["mount", MOUNT_DIR])
    assert code == 1
    assert [path for path, _ in journal_writes] == [str(log_file)]


# ---- stray output never reaches kubelet ----------------------------------------------------


@contextlib.contextmanager
def fd_backed_stdio():
    """sys.stdout/sys.stderr writing to fds 1 and 2, as in the real driver.

    Set inside the test body: pytest puts its own capture objects back between setup and call.
    """
    saved = sys.stdout, sys.stderr
    with open(1, "w", closefd=False) as out, open(2, "w", closefd=False) as err:
        sys.stdout, sys.stderr = out, err
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved


def _show_warning_on_stderr(message, category, filename, lineno, file=None, line=None):
    # What Python's default showwarning does; pytest otherwise records warnings itself.
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def noisy_handle(raise_at_end: bool):
    def handle(argv, record, config_box):
        config_box.append(config_module.load())  # as the real handle does before any driver work
        print("stray print on stdout")
        sys.stderr.write("stray write on stderr\n")
        warnings.warn("stray warning", UserWarning, stacklevel=1)
        os.write(1, b"stray raw write on fd 1\n")  # e.g. a child that inherited the fd
        if raise_at_end:
            raise RuntimeError("driver bug")
        return kubelet.respond(kubelet.SUCCESS, "mounted")

    return handle


STRAYS = ["stray print on stdout", "stray write on stderr", "stray warning", "stray raw write on fd 1"]


@pytest.mark.parametrize("raise_at_end", [True, False], ids=["then-raises", "then-succeeds"])
def test_stray_output_is_swallowed_and_logged(tmp_path, log_file, monkeypatch, raise_at_end):
    monkeypatch.setattr(kubelet, "handle", noisy_handle(raise_at_end))
    with fd_backed_stdio(), warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _show_warning_on_stderr
        code, seen = call_main(tmp_path, ["mount", MOUNT_DIR, "{}"])

    reply = one_json_object(seen)
    (line,) = log_lines(log_file)
    assert (line["verb"], line["outcome"]) == ("mount", reply["status"])
    for stray in STRAYS:
        assert stray in line["stray_output"]
        assert stray not in json.dumps(reply)
    if raise_at_end:
        assert code == 1
        assert reply["status"] == "Failure"
        assert "RuntimeError: driver bug" in reply["message"]
        assert line["reason"] == "internal"
        assert "RuntimeError: driver bug" in line["traceback"]
    else:
        assert (code, reply) == (0, {"status": "Success", "message": "mounted"})
        assert "reason" not in line


def test_stray_output_is_capped_in_the_log(tmp_path, log_file, monkeypatch):
    def chatty(argv, record, config_box):
        config_box.append(config_module.load())
        print("x" * 10000 + "END")
        return kubelet.respond(kubelet.SUCCESS)

    monkeypatch.setattr(kubelet, "handle", chatty)
    with fd_backed_stdio():
        code, seen = call_main(tmp_path, ["unmount", MOUNT_DIR])
    assert (code, one_json_object(seen)) == (0, {"status": "Success"})
    (line,) = log_lines(log_file)
    assert len(line["stray_output"]) == 4000
    assert line["stray_output"].endswith("END\n")
