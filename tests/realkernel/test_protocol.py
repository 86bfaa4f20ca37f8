"""What kubelet sees of the driver: verbs, one JSON object per call, the log (behaviours 1, 9)."""

import json
import os
import subprocess

import pytest

from . import node
from .node import DRIVER, DRIVER_DIR, Pod, parse_reply

UNIMPLEMENTED = [
    "attach", "detach", "waitforattach", "isattached", "mountdevice", "unmountdevice",
    "getvolumename", "expandvolume", "expandfs", "frobnicate",
]


def test_init_answers_success_without_attach_and_runs_no_other_program(kubelet, tmp_path):
    trace = tmp_path / "trace"
    out = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=execve", "-o", str(trace), DRIVER, "init"],
        capture_output=True, text=True, env=node.KUBELET_ENV, cwd="/",
    )
    reply = json.loads(out.stdout)
    assert reply["status"] == "Success"
    assert reply["capabilities"]["attach"] is False
    assert out.stderr == ""
    programs = [line.split('"')[1] for line in trace.read_text().splitlines() if "execve(" in line and "= 0" in line]
    # The driver itself, run by its shell header (env starting the shell in /): init starts no
    # interpreter and no other program.
    assert programs[0] == DRIVER and [os.path.basename(p) for p in programs[1:]] == ["sh"], programs


@pytest.mark.parametrize("verb", UNIMPLEMENTED)
def test_other_verbs_are_not_supported(kubelet, verb):
    reply = kubelet.call(verb, "/var/lib/kubelet/x", "{}")
    assert reply.status == "Not supported"


def test_driver_needs_no_home_no_cwd_and_writes_nothing_in_its_dir(kubelet, tmp_path):
    gone = tmp_path / "cwd"
    gone.mkdir()
    pod = Pod(size_mb=128)
    os.makedirs(pod.dir, mode=0o750)
    # Start from a cwd that no longer exists, with no HOME (/root is read-only in the VM too).
    script = 'cd "$1" && rmdir "$1" && shift && exec "$@"'
    out = subprocess.run(
        ["sh", "-c", script, "sh", str(gone), DRIVER, "mount", pod.dir, pod.options()],
        capture_output=True, text=True, env=node.KUBELET_ENV,
    )
    assert parse_reply(out.stdout + out.stderr, out.returncode, 0).ok
    assert kubelet.unmount(pod).ok
    assert sorted(os.listdir(DRIVER_DIR)) == ["vol_plugin"]


def test_every_call_is_logged_on_one_line(kubelet):
    pod = Pod(size_mb=128)
    assert kubelet.mount(pod).ok
    assert kubelet.unmount(pod).ok
    assert kubelet.call("mount", pod.dir, "not json").status == "Failure"
    lines = node.log_lines()
    assert [line["verb"] for line in lines] == ["mount", "unmount", "mount"]
    mount, unmount, bad = lines
    for line in (mount, unmount):
        assert line["pod"] == pod.uid and line["slab"].startswith("slab-")
        assert line["outcome"] == "Success" and line["duration_s"] > 0
    assert mount["decision"] == "created new slab"
    assert unmount["decision"] == "kept slab" and 0 <= unmount["usage"] < 0.5
    assert bad["outcome"] == "Failure" and bad["reason"] == "bad_request"


def test_a_crash_inside_the_driver_is_still_one_json_failure(kubelet):
    # /run/ax-vol-plugin must be a dir for the node lock; a file there makes the driver fail
    # somewhere it never expected to.
    with open("/run/ax-vol-plugin", "w") as handle:
        handle.write("in the way")
    try:
        pod = Pod(size_mb=128)
        reply = kubelet.mount(pod)
    finally:
        os.unlink("/run/ax-vol-plugin")
    assert reply.status == "Failure" and "internal error" in reply.message
    assert node.log_lines()[-1]["traceback"].startswith("Traceback")
    assert kubelet.mount_retrying(pod).ok
    assert kubelet.unmount(pod).ok
