"""dist/vol_plugin is one self-contained file that runs on a node's python3 (3.9 or newer) with
nothing installed."""

import ast
import glob
import json
import os
import subprocess
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INIT = {"status": "Success", "capabilities": {"attach": False, "fsGroup": False}}
# The node's interpreter, plus any 3.9 (the oldest supported) this machine has.
PYTHONS = ["/usr/bin/python3"] + sorted(glob.glob("/root/.pyenv/versions/3.9*/bin/python3.9"))


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "vol_plugin"
    subprocess.run([f"{REPO}/packaging/build", "--out", str(out)], check=True, capture_output=True)
    return str(out)


def test_every_module_is_python_3_9_syntax():
    for path in glob.glob(f"{REPO}/flexdriver/**/*.py", recursive=True):
        with open(path) as handle:
            ast.parse(handle.read(), filename=path, feature_version=(3, 9))


def test_dist_is_one_executable_zip_of_sources_and_their_byte_code(dist):
    assert os.access(dist, os.X_OK)
    with open(dist, "rb") as handle:
        assert handle.readline() == b"#!/usr/bin/env -S -C / /bin/sh\n"  # the header: packaging/driver-header.sh
        assert b"\npython='python3'\n" in handle.read(4096)
    names = zipfile.ZipFile(dist).namelist()
    assert "__main__.py" in names and "flexdriver/driver.py" in names
    # Sources and their byte-code, plus the vendored packages' metadata and licences
    # (packaging/vendor-driver.txt).
    assert all(name.endswith((".py", ".pyc", "/")) or name.split("/")[0].endswith(".dist-info") for name in names), names
    assert {name.split("/")[0] for name in names if name.endswith(".py")} == {"__main__.py", "flexdriver", "pyudev"}
    assert not any(name.startswith(("flexdriver/admin", "flexdriver/csi")) for name in names)
    assert "flexdriver/core.py" in names  # the core both front-ends call
    # Byte-code only beside its own source: an interpreter that cannot use it compiles that.
    compiled = [name for name in names if name.endswith(".pyc")]
    assert compiled and all(name[:-1] in names for name in compiled), names
    assert {name + "c" for name in names if name.endswith(".py")} <= set(compiled)


@pytest.mark.parametrize("python", PYTHONS)
def test_the_vendored_udev_binding_loads_from_the_zip(dist, python):
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import pyudev; "
        "print(pyudev.__file__, len(list(pyudev.Context().list_devices(subsystem='block'))) >= 0)"
    )
    loaded = subprocess.run(
        [python, "-I", "-S", "-c", probe, dist], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )
    assert (loaded.returncode, loaded.stderr) == (0, "")
    assert loaded.stdout.startswith(f"{dist}/pyudev/__init__.py") and loaded.stdout.strip().endswith("True")


@pytest.mark.parametrize("python", PYTHONS)
def test_dist_runs_isolated_with_no_home_and_no_packages(dist, python, tmp_path):
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # no HOME, nothing else
    init = subprocess.run([python, "-I", "-S", dist, "init"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert json.loads(init.stdout) == INIT and init.stderr == "" and init.returncode == 0
    config = tmp_path / "c.conf"
    config.write_text(f"[vol_plugin]\nlog_file = {tmp_path}/log\nrun_dir = {tmp_path}/run\n")
    bad = subprocess.run(
        [python, "-I", "-S", dist, "mount", str(tmp_path), '{"size_mb": "64; touch /tmp/x"}'],
        capture_output=True, text=True, env={**env, "AX_VOL_PLUGIN_CONFIG": str(config)}, cwd="/",
    )
    assert bad.stderr == "" and bad.returncode == 1
    assert json.loads(bad.stdout)["status"] == "Failure"
    assert json.loads((tmp_path / "log").read_text())["reason"] == "bad_request"


# install/install.sh and uninstall.sh: tests/packaging/test_install.py


def fake_interpreter(directory, name="python3"):
    """A python3 that counts its starts (a line each in `started`), keeps the arguments of the
    last one (NUL-terminated, in `argv`) and then runs the real one."""
    directory.mkdir()
    log = directory / "started"
    fake = directory / name
    fake.write_text(f'#!/bin/sh\necho >> {log}\nprintf "%s\\0" "$@" > {directory}/argv\nexec /usr/bin/python3 "$@"\n')
    fake.chmod(0o755)
    return log


def test_init_is_answered_without_starting_python_and_other_verbs_start_it_once(dist, tmp_path):
    log = fake_interpreter(tmp_path / "bin")
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    init = subprocess.run([dist, "init"], capture_output=True, text=True, env=env, cwd="/")
    assert (init.returncode, init.stderr) == (0, "") and json.loads(init.stdout) == INIT
    assert not log.exists()
    other = subprocess.run([dist, "getvolumename", "{}"], capture_output=True, text=True, env=env, cwd="/")
    assert json.loads(other.stdout + other.stderr)["status"] == "Not supported"
    assert log.read_text() == "\n"
    argv = (tmp_path / "bin" / "argv").read_text().split("\0")[:-1]
    assert argv[:3] == ["-I", "-S", "-c"] and argv[4:] == [dist, "getvolumename", "{}"]


def test_no_interpreter_in_path_is_one_json_failure(dist, tmp_path):
    for argv in (["init"], ["mount", str(tmp_path), "{}"], ["unmount", str(tmp_path)]):
        reply = subprocess.run([dist, *argv], capture_output=True, text=True, env={"PATH": str(tmp_path)}, cwd="/")
        assert reply.returncode == 1 and reply.stderr == ""
        message = json.loads(reply.stdout)
        assert message["status"] == "Failure" and "python3" in message["message"]


def test_an_archive_the_interpreter_cannot_load_is_one_json_failure(dist, tmp_path):
    damaged = tmp_path / "vol_plugin"
    data = open(dist, "rb").read()
    damaged.write_bytes(data[: len(data) - 200])  # the zip's directory cut off
    damaged.chmod(0o755)
    reply = subprocess.run([str(damaged), "unmount", str(tmp_path)], capture_output=True, text=True, cwd="/")
    assert reply.returncode == 1 and reply.stderr == ""
    message = json.loads(reply.stdout)
    assert message["status"] == "Failure" and "cannot load" in message["message"]


def test_arguments_reach_the_driver_exactly_as_kubelet_passed_them(dist, tmp_path):
    config = tmp_path / "c.conf"
    config.write_text(f"[vol_plugin]\nlog_file = {tmp_path}/log\nrun_dir = {tmp_path}/run\n")
    tricky = '{"size_mb": "1 $(touch x) `y` \\" \'", "*": "\\n"}'
    env = {"PATH": "/usr/bin:/bin", "AX_VOL_PLUGIN_CONFIG": str(config)}
    reply = subprocess.run([dist, "mount", f"{tmp_path}/a dir", tricky], capture_output=True, text=True, env=env,
                           cwd=tmp_path)
    assert json.loads(reply.stdout + reply.stderr)["status"] == "Failure"
    logged = json.loads((tmp_path / "log").read_text())
    assert logged["reason"] == "bad_request"
    assert sorted(os.listdir(tmp_path)) == ["c.conf", "log", "run"] or sorted(os.listdir(tmp_path)) == ["c.conf", "log"]


def _readme_config_block() -> str:
    """The README's Configuration example, exactly as an admin would copy it."""
    with open(os.path.join(REPO, "README.md")) as handle:
        readme = handle.read()
    section = readme[readme.index("## Configuration"):]
    return section[section.index("```ini\n") + len("```ini\n"):section.index("```", section.index("```ini\n") + 6)]


def test_a_config_that_is_not_utf8_is_one_json_failure_naming_the_file(dist, tmp_path):
    config = tmp_path / "c.conf"
    config.write_bytes(b"[vol_plugin]\ndevice = /dev/xvdz\n# caf\xe9 in latin-1\n")
    env = {"PATH": "/usr/bin:/bin", "AX_VOL_PLUGIN_CONFIG": str(config)}
    for argv in (["mount", f"{tmp_path}/dir", '{"size_mb": "64"}'], ["unmount", f"{tmp_path}/dir"]):
        reply = subprocess.run([dist, *argv], capture_output=True, env=env, cwd="/")
        answer = json.loads((reply.stdout + reply.stderr).decode())
        assert answer["status"] == "Failure" and str(config) in answer["message"] and "UTF-8" in answer["message"]
        assert reply.returncode == 1


def test_the_readme_config_block_copied_as_it_is_gives_the_values_it_shows(dist, tmp_path):
    block = _readme_config_block()
    assert "#" in block  # its values carry comments, which must not become part of them
    config = tmp_path / "c.conf"
    # Only the paths move into the test's own dir; every other line, comment included, is the README's.
    config.write_text(
        block.replace("/var/log/ax-vol-plugin.log", f"{tmp_path}/log").replace("/run/ax-vol-plugin", f"{tmp_path}/run")
    )
    env = {"PATH": "/usr/bin:/bin", "AX_VOL_PLUGIN_CONFIG": str(config)}
    reply = subprocess.run([dist, "mount", f"{tmp_path}/dir", '{"size_mb": "not a number"}'], capture_output=True,
                           text=True, env=env, cwd="/")
    answer = json.loads(reply.stdout + reply.stderr)
    # The config was taken (the call got as far as the pod's options) and logged where it says.
    assert answer["status"] == "Failure" and "size_mb" in answer["message"], answer
    assert json.loads((tmp_path / "log").read_text().splitlines()[-1])["reason"] == "bad_request"


def test_links_planted_for_the_log_and_the_metrics_never_reach_roots_files(dist, tmp_path):
    # A metrics dir under another user's control, and a link where the call log will be: the
    # driver answers kubelet, writes nothing through either, and leaves the victim as it was.
    victim = tmp_path / "shadow"
    victim.write_text("root's secret\n")
    victim.chmod(0o600)
    (tmp_path / "log").symlink_to(victim)
    textfile = tmp_path / "node-exporter"
    textfile.mkdir(mode=0o755)
    os.chown(textfile, 65534, 65534)
    for pid_guess in range(os.getpid(), os.getpid() + 200):  # the names a coming call's temp file may take
        (textfile / f".ax_vol_plugin.prom.{pid_guess}").symlink_to(victim)
    config = tmp_path / "c.conf"
    config.write_text(f"[vol_plugin]\nlog_file = {tmp_path}/log\nrun_dir = {tmp_path}/run\nmetrics_dir = {textfile}\n")
    env = {"PATH": "/usr/bin:/bin", "AX_VOL_PLUGIN_CONFIG": str(config)}
    reply = subprocess.run([dist, "mount", f"{tmp_path}/dir", '{"size_mb": "-1"}'], capture_output=True, text=True,
                           env=env, cwd="/")
    assert json.loads(reply.stdout + reply.stderr)["status"] == "Failure"
    assert victim.read_text() == "root's secret\n"
    assert not any(p.name == "ax_vol_plugin.prom" for p in textfile.iterdir())
