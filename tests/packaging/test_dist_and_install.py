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
        assert handle.readline() == b"#!/usr/bin/env -S python3 -I -S\n"
    names = zipfile.ZipFile(dist).namelist()
    assert "__main__.py" in names and "flexdriver/driver.py" in names
    # Sources and their byte-code, plus the vendored packages' metadata and licences
    # (packaging/vendor-driver.txt).
    assert all(name.endswith((".py", ".pyc", "/")) or name.split("/")[0].endswith(".dist-info") for name in names), names
    assert {name.split("/")[0] for name in names if name.endswith(".py")} == {"__main__.py", "flexdriver", "pyudev"}
    assert not any(name.startswith("flexdriver/admin") for name in names)
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
