"""packaging/build-deb: a lintian-clean package, installed by dpkg into a throw-away root and run
from there; removal keeps the config (a conffile), purge removes it."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVER = "usr/libexec/kubernetes/kubelet-plugins/volume/exec/ax~vol_plugin/vol_plugin"
ADMIN = "usr/sbin/ax-vol-plugin"
CONFIG = "etc/ax-vol-plugin/vol_plugin.conf"


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    out = tmp_path_factory.mktemp("deb")
    result = subprocess.run([f"{REPO}/packaging/build-deb", "--out-dir", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("ax-vol-plugin_*_all.deb")
    return str(path)


def field(deb, name):
    return subprocess.run(["dpkg-deb", "-f", deb, name], capture_output=True, text=True, check=True).stdout.strip()


def test_lintian_finds_nothing(deb):
    # --fail-on warning: any error or warning fails; the package's only override is documented in build-deb.
    result = subprocess.run(["lintian", "--fail-on", "error,warning", deb], capture_output=True, text=True)
    tags = [line for line in result.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert result.returncode == 0 and tags == [], result.stdout + result.stderr


def test_dependencies_and_conffile_are_declared(deb):
    depends = [dep.strip() for dep in field(deb, "Depends").split(",")]
    assert depends == ["python3 (>= 3.9)", "lvm2", "thin-provisioning-tools", "e2fsprogs", "xfsprogs", "mount"]
    assert field(deb, "Architecture") == "all"
    listing = subprocess.run(["dpkg-deb", "--ctrl-tarfile", deb], capture_output=True, check=True).stdout
    conffiles = subprocess.run(["tar", "-xO", "./conffiles"], input=listing, capture_output=True, check=True).stdout
    assert conffiles.decode().split() == [f"/{CONFIG}"]


def dpkg(root, *args):
    return subprocess.run(
        ["dpkg", f"--root={root}", "--log=/dev/null", "--force-depends", "--force-not-root", *args],
        capture_output=True, text=True,
    )


@pytest.fixture
def root(tmp_path):
    """An empty dpkg database: the package's dependencies are the host's (--force-depends)."""
    for sub in ("var/lib/dpkg/updates", "var/lib/dpkg/info"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text("")
    return tmp_path


def test_installed_into_a_throwaway_root_the_driver_and_admin_command_run(deb, root):
    result = dpkg(root, "-i", deb)
    assert result.returncode == 0, result.stderr
    driver = root / DRIVER
    with open(driver, "rb") as handle:
        assert b"\npython='/usr/bin/python3'\n" in handle.read(4096)  # the interpreter the package depends on
    init = subprocess.run([str(driver), "init"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, cwd="/")
    assert init.returncode == 0 and init.stderr == ""
    assert json.loads(init.stdout) == {"status": "Success", "capabilities": {"attach": False, "fsGroup": False}}
    version = subprocess.run([str(root / ADMIN), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("ax-vol-plugin, version ")
    # The packaged config is all comments: the driver's defaults, and it parses.
    argv = [str(root / ADMIN), "--config", str(root / CONFIG), "doctor", "--json"]
    doctor = subprocess.run(argv, capture_output=True, text=True)
    assert doctor.returncode in (0, 1) and "/dev/xvdz" in doctor.stdout, doctor.stderr
    assert {c["name"] for c in json.loads(doctor.stdout)["checks"]} >= {"lvm2 tools", "python3", "slab device"}


def test_remove_keeps_the_edited_config_and_purge_removes_it(deb, root):
    assert dpkg(root, "-i", deb).returncode == 0
    (root / CONFIG).write_text("[vol_plugin]\ndevice = /dev/sdq\n")
    assert dpkg(root, "-i", deb).returncode == 0  # an upgrade keeps the admin's edits
    assert "device = /dev/sdq" in (root / CONFIG).read_text()
    assert dpkg(root, "-r", "ax-vol-plugin").returncode == 0
    assert not (root / DRIVER).exists() and not (root / ADMIN).exists()
    assert (root / CONFIG).read_text() == "[vol_plugin]\ndevice = /dev/sdq\n"
    assert dpkg(root, "-P", "ax-vol-plugin").returncode == 0
    assert not (root / CONFIG).exists()
