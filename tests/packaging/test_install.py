"""install/install.sh and install/uninstall.sh on this host, into temporary dirs: atomic as kubelet's
watch sees it (inotify), idempotent, the plugin dir found the way kubelet's own flags say, the
config written, and each prerequisite refused with its own message before anything changes.

What needs LVM and mounts (upgrade under a mounted slab, purge, a foreign signature on the
device, --host-root through nsenter) is in tests/realkernel/test_install.py.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTALL = f"{REPO}/install/install.sh"
UNINSTALL = f"{REPO}/install/uninstall.sh"
DEFAULT_PLUGIN_DIR = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec"


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """Two builds of the driver that differ (their interpreters) and the admin command."""
    out = tmp_path_factory.mktemp("dist")
    interpreters = {"old": "python3", "new": "/usr/bin/python3"}
    for name, interpreter in interpreters.items():
        subprocess.run(
            [f"{REPO}/packaging/build", "--python", interpreter, "--out", str(out / f"vol_plugin.{name}"),
             "--admin-out", str(out / "ax-vol-plugin")],
            check=True, capture_output=True,
        )
    return out


@pytest.fixture
def node(tmp_path, builds):
    """Paths of a node laid out under tmp_path, and install/uninstall runners aimed at them."""

    root = tmp_path / "node"
    root.mkdir()

    class Node:
        plugin_dir = root / "plugins"
        driver = plugin_dir / "ax~vol_plugin" / "vol_plugin"
        admin = root / "sbin" / "ax-vol-plugin"
        config = root / "etc" / "vol_plugin.conf"
        old = builds / "vol_plugin.old"
        new = builds / "vol_plugin.new"
        admin_build = builds / "ax-vol-plugin"

        def install(self, *args, driver=None, env=None, plugin_dir=True):
            argv = [INSTALL, "--driver", str(driver or self.old), "--admin", str(builds / "ax-vol-plugin"),
                    "--admin-path", str(self.admin), "--config", str(self.config)]
            if plugin_dir:
                argv += ["--plugin-dir", str(self.plugin_dir)]
            return subprocess.run(argv + list(args), capture_output=True, text=True, env=env)

        def uninstall(self, *args, env=None, wrap=()):
            argv = [*wrap, UNINSTALL, "--plugin-dir", str(self.plugin_dir), "--admin", str(builds / "ax-vol-plugin"),
                    "--admin-path", str(self.admin), "--config", str(self.config)]
            return subprocess.run(argv + list(args), capture_output=True, text=True, env=env)

        def files(self):
            return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    return Node()


# This host has no device-mapper and no slab disk: the host-side tests that are not about the
# prerequisites skip them (and see them reported as warnings).
SKIP = "--skip-prerequisites"
NOBODY = 65534


def test_install_puts_driver_admin_and_config_in_place_and_nothing_else(node):
    result = node.install(SKIP, "--device", "/dev/sdq", "--vg", "vg-ci", "--set", "usage_threshold=0.7")
    assert result.returncode == 0, result.stderr
    assert node.files() == ["etc/vol_plugin.conf", "plugins/ax~vol_plugin/vol_plugin", "sbin/ax-vol-plugin"]
    assert node.driver.read_bytes() == node.old.read_bytes() and os.access(node.driver, os.X_OK)
    assert os.access(node.admin, os.X_OK)
    text = node.config.read_text()
    assert "[vol_plugin]\ndevice = /dev/sdq\nvolume_group = vg-ci\nusage_threshold = 0.7\n" in text
    # The installed admin command reads that config.
    doctor = subprocess.run([str(node.admin), "--config", str(node.config), "doctor", "--json"], capture_output=True, text=True)
    assert '"/dev/sdq does not exist"' in doctor.stdout
    assert "warning: prerequisite slab device: /dev/sdq does not exist" in result.stderr


def test_running_it_again_upgrades_in_place_and_keeps_the_config(node):
    assert node.install(SKIP, "--device", "/dev/sdq").returncode == 0
    again = node.install(SKIP, driver=node.new)
    assert again.returncode == 0, again.stderr
    assert node.driver.read_bytes() == node.new.read_bytes()
    assert "device = /dev/sdq" in node.config.read_text()
    assert node.files() == ["etc/vol_plugin.conf", "plugins/ax~vol_plugin/vol_plugin", "sbin/ax-vol-plugin"]


def watch(directory):
    """inotifywait on `directory`, recursively, for every event that changes something (kubelet's
    fsnotify watch re-probes on these; reads are left out)."""
    changes = "create,modify,attrib,close_write,moved_to,moved_from,delete"
    proc = subprocess.Popen(
        ["inotifywait", "-m", "-r", "-e", changes, "--format", "%e %w%f", str(directory)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    for line in proc.stderr:
        if "Watches established" in line:
            return proc
    raise AssertionError("inotifywait did not start")


def test_kubelet_never_sees_a_partial_driver(node):
    """Every inotify event on the driver's own name is a rename into place; meanwhile a reader
    polling it like kubelet's probe only ever finds nothing, the old build or the new one."""
    node.plugin_dir.mkdir()
    watcher = watch(node.plugin_dir)
    versions = {node.old.read_bytes(), node.new.read_bytes()}
    seen, stop = [], threading.Event()

    def probe():
        while not stop.is_set():
            try:
                seen.append(node.driver.read_bytes())
                time.sleep(0.001)
            except FileNotFoundError:
                pass

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for driver in (node.old, node.new, node.old, node.new):
            result = node.install(SKIP, driver=driver)
            assert result.returncode == 0, result.stderr
    finally:
        stop.set()
        prober.join()
        time.sleep(0.5)  # let inotifywait flush the last events
        watcher.terminate()
    events = [line.split(" ", 1) for line in watcher.communicate()[0].splitlines()]
    on_driver = [kinds for kinds, path in events if path == str(node.driver)]
    assert on_driver == ["MOVED_TO"] * 4, on_driver
    staging = [path for kinds, path in events if "CLOSE_WRITE" in kinds]
    assert staging and all(os.path.basename(path).startswith(".") for path in staging), staging
    assert seen and set(seen) <= versions


def test_a_stray_staging_file_is_never_left_behind(node):
    broken = node.plugin_dir.parent.parent / "broken"
    broken.write_text("#!/bin/sh\necho 'Traceback: nope'\nexit 1\n")
    broken.chmod(0o755)
    result = node.install(SKIP, driver=broken)
    assert result.returncode != 0 and "failed init" in result.stderr
    assert node.files() == [] and not (node.plugin_dir / "ax~vol_plugin").exists()


# Each prerequisite on its own: refused with its own message, nothing on the node changes.


def test_no_usable_python3(node, tmp_path):
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "python3").write_text("#!/bin/sh\nexit 127\n")
    (fake / "python3").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/sbin:/usr/bin:/sbin:/bin"}
    result = node.install(env=env)
    assert result.returncode != 0
    assert "prerequisite python3: not found on the node -> install python3 (3.9 or newer)" in result.stderr
    assert node.files() == []


def test_python3_older_than_3_9(node, tmp_path):
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "python3").write_text("#!/bin/sh\necho 3.8\n")
    (fake / "python3").chmod(0o755)
    result = node.install(env={"PATH": f"{fake}:/usr/sbin:/usr/bin:/sbin:/bin"})
    assert result.returncode != 0 and "the node's python3 is 3.8, the driver needs 3.9 or newer" in result.stderr
    assert node.files() == []


def test_a_missing_device_is_refused_with_the_checks_message(node):
    result = node.install("--device", "/dev/disk/by-id/nothing-here")
    assert result.returncode != 0
    assert "install.sh: prerequisite slab device: /dev/disk/by-id/nothing-here does not exist" in result.stderr
    assert "nothing installed (--skip-prerequisites to install anyway)" in result.stderr
    assert node.files() == [] and not node.plugin_dir.joinpath("ax~vol_plugin").exists()


def test_a_device_that_is_not_a_block_device_is_refused(node, tmp_path):
    (tmp_path / "disk.img").write_bytes(b"\0" * 4096)
    result = node.install("--device", str(tmp_path / "disk.img"))
    assert result.returncode != 0 and f"{tmp_path}/disk.img is not a block device" in result.stderr
    assert node.files() == []


def test_an_invalid_config_value_changes_nothing_even_when_skipping_checks(node):
    assert node.install(SKIP, "--device", "/dev/sdq").returncode == 0
    before = {name: (node.plugin_dir.parent / name).read_bytes() for name in node.files()}
    result = node.install(SKIP, "--set", "usage_treshold=0.7", driver=node.new)
    assert result.returncode != 0 and "unknown key 'usage_treshold'" in result.stderr
    assert {name: (node.plugin_dir.parent / name).read_bytes() for name in node.files()} == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--plugin-dir", "relative"], "--plugin-dir must be an absolute path"),
        (["--driver", "/nonexistent"], "driver /nonexistent not found"),
        (["--admin", "/nonexistent"], "admin command /nonexistent not found"),
        (["--set", "novalue"], "--set wants KEY=VALUE"),
        (["--bogus"], "unknown argument: --bogus"),
    ],
)
def test_bad_arguments_are_explained(node, args, message):
    result = node.install(*args)
    assert result.returncode != 0 and message in result.stderr
    assert node.files() == []


# The plugin dir, found the way kubelet itself decides it.


@pytest.fixture
def kubelet(tmp_path):
    """Start a process named `kubelet` with the given arguments (its comm is the script's name)."""
    procs = []

    def start(*args):
        script = tmp_path / "bin" / "kubelet"
        script.parent.mkdir(exist_ok=True)
        script.write_text("#!/bin/sh\nsleep 60\n")
        script.chmod(0o755)
        proc = subprocess.Popen([str(script), *args])
        procs.append(proc)
        for _ in range(100):
            with open(f"/proc/{proc.pid}/cmdline", "rb") as handle:
                if str(script).encode() in handle.read():
                    return proc
            time.sleep(0.01)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def installed_where(node):
    result = node.install(SKIP, plugin_dir=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("form", ["equals", "separate"])
def test_plugin_dir_from_kubelets_flag(node, kubelet, form):
    flag = [f"--volume-plugin-dir={node.plugin_dir}"] if form == "equals" else ["--volume-plugin-dir", str(node.plugin_dir)]
    proc = kubelet("--v=2", *flag, "--config", "/nonexistent.yaml")
    out = installed_where(node)
    assert f"plugin dir {node.plugin_dir} (from kubelet (pid {proc.pid}) --volume-plugin-dir)" in out
    assert node.driver.exists()


@pytest.mark.parametrize("style", ["yaml", "json"])
def test_plugin_dir_from_kubelets_config_file(node, kubelet, tmp_path, style):
    config = tmp_path / "kubelet-config"
    if style == "yaml":
        config.write_text(f"kind: KubeletConfiguration\nvolumePluginDir: {node.plugin_dir}/  # flex drivers\n")
    else:
        config.write_text(f'{{\n  "kind": "KubeletConfiguration",\n  "volumePluginDir": "{node.plugin_dir}",\n  "x": 1\n}}\n')
    kubelet(f"--config={config}", "--kubeconfig=/etc/kubernetes/kubelet.conf")
    out = installed_where(node)
    assert f"plugin dir {node.plugin_dir} (from volumePluginDir in kubelet's --config {config}" in out
    assert node.driver.exists()


def test_kubelets_flag_wins_over_its_config_file(node, kubelet, tmp_path):
    config = tmp_path / "kubelet.yaml"
    config.write_text(f"volumePluginDir: {tmp_path}/elsewhere\n")
    kubelet("--config", str(config), "--volume-plugin-dir", str(node.plugin_dir))
    installed_where(node)
    assert node.driver.exists() and not (tmp_path / "elsewhere").exists()


def test_without_a_kubelet_saying_otherwise_the_default_is_used(node, kubelet):
    kubelet("--v=2")
    result = subprocess.run([UNINSTALL, "--admin", str(node.admin_build), "--admin-path", str(node.admin),
                             "--config", str(node.config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"plugin dir {DEFAULT_PLUGIN_DIR} (kubelet's default" in result.stdout


# Uninstall (slabs and purge: tests/realkernel/test_install.py).


def test_uninstall_removes_driver_and_admin_and_keeps_the_config(node):
    assert node.install(SKIP, "--device", "/dev/sdq").returncode == 0
    (node.plugin_dir / "ax~vol_plugin" / ".vol_plugin.left-by-a-killed-install").write_text("x")
    result = node.uninstall()
    assert result.returncode == 0, result.stderr
    assert node.files() == ["etc/vol_plugin.conf"]
    assert not (node.plugin_dir / "ax~vol_plugin").exists() and node.plugin_dir.exists()
    assert "slabs, their data and" in result.stdout
    again = node.uninstall()  # nothing left to remove is not an error
    assert again.returncode == 0 and "no driver in" in again.stdout


def test_uninstall_leaves_files_it_does_not_own(node):
    assert node.install(SKIP).returncode == 0
    (node.plugin_dir / "ax~vol_plugin" / "notes.txt").write_text("mine")
    result = node.uninstall()
    assert result.returncode == 0 and "it holds files not ours" in result.stdout
    assert os.listdir(node.plugin_dir / "ax~vol_plugin") == ["notes.txt"]


# --purge reads the config with the driver's own parser (the admin command). This host has no
# device-mapper: LVM's commands are stand-ins that record what they were asked and say the
# volume group and the device exist, so that the purge goes as far as it would on a node.


@pytest.fixture
def lvm_stand_ins(tmp_path):
    """PATH for uninstall.sh with vgs, pvs, vgremove and pvremove recording their argv."""
    bin_dir = tmp_path / "lvm-bin"
    bin_dir.mkdir()
    calls = tmp_path / "lvm-calls"
    for name in ("vgs", "pvs", "vgremove", "pvremove"):
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\n')
        tool.chmod(0o755)

    class Stand_ins:
        env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
        # A purge that reads the wrong values falls back on the default log file and run dir:
        # it runs where those are fresh, empty dirs, so that a failing test never removes this
        # host's own.
        wrap = ("unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount -t tmpfs ax-test /var/log && mount -t tmpfs ax-test /run && exec "$@"', "sh")

        def removed(self):
            lines = calls.read_text().splitlines() if calls.exists() else []
            return [line for line in lines if line.startswith(("vgremove", "pvremove"))]

    return Stand_ins()


def test_purge_removes_what_the_driver_reads_in_the_config(node, tmp_path, lvm_stand_ins):
    # Each of these lines the driver reads otherwise than a line-matching reader would: keys
    # are not case-sensitive, a value may go on over an indented line, and `:` may stand for `=`.
    assert node.install(SKIP, "--device", "/dev/sdq").returncode == 0
    node.config.write_text(
        "[vol_plugin]\n"
        "Volume_Group = vg-ci   # the CI pool\n"
        "DEVICE: /dev/sdq\n"
        f"Log_File = {tmp_path}/ci.log\n"
        f"RUN_DIR = {tmp_path}/run\n"
        "usage_threshold =\n  0.7\n"
    )
    (tmp_path / "ci.log").write_text("{}\n")
    (tmp_path / "run").mkdir()
    result = node.uninstall("--purge", env=lvm_stand_ins.env, wrap=lvm_stand_ins.wrap)
    assert result.returncode == 0, result.stderr
    assert lvm_stand_ins.removed() == ["vgremove --force --yes vg-ci", "pvremove --yes /dev/sdq"]
    assert not (tmp_path / "ci.log").exists() and not (tmp_path / "run").exists() and not node.config.exists()
    assert f"removed {node.config}, {tmp_path}/ci.log, {tmp_path}/run" in result.stdout


def test_purge_refuses_a_config_the_driver_refuses_and_removes_nothing(node, tmp_path, lvm_stand_ins):
    # A second section the driver does not know: every mount fails on it, and which of its
    # volume groups is the pool is not for uninstall.sh to guess.
    assert node.install(SKIP, "--device", "/dev/sdq").returncode == 0
    node.config.write_text("[vol_plugin]\nvolume_group = vg-ci\n[vol_plugin.old]\nvolume_group = vg-other\n")
    result = node.uninstall("--purge", env=lvm_stand_ins.env, wrap=lvm_stand_ins.wrap)
    assert result.returncode != 0
    assert "cannot read the config" in result.stderr and "unknown section [vol_plugin.old]" in result.stderr
    assert lvm_stand_ins.removed() == []
    assert node.files() == ["etc/vol_plugin.conf", "plugins/ax~vol_plugin/vol_plugin", "sbin/ax-vol-plugin"]


def test_uninstall_never_runs_an_admin_command_others_can_change(node, tmp_path, lvm_stand_ins):
    assert node.install(SKIP).returncode == 0
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    admin = theirs / "ax-vol-plugin"
    admin.write_bytes(node.admin_build.read_bytes())
    admin.chmod(0o755)
    result = subprocess.run([*lvm_stand_ins.wrap, UNINSTALL, "--plugin-dir", str(node.plugin_dir), "--admin", str(admin),
                             "--admin-path", str(node.admin), "--config", str(node.config), "--purge"],
                            capture_output=True, text=True, env=lvm_stand_ins.env)
    assert result.returncode != 0
    assert f"refusing to run the admin command {admin}: {theirs} is owned by uid {NOBODY}" in result.stderr
    assert lvm_stand_ins.removed() == [] and node.driver.exists()


# ---- who may choose the plugin dir ----------------------------------------------------------------

def test_a_process_another_user_named_kubelet_does_not_choose_the_plugin_dir(node, tmp_path):
    # The attack: an unprivileged process renames itself kubelet and names a dir it owns, where
    # root would stage the driver and run it for its checks.
    evil = tmp_path / "evil"
    evil.mkdir()
    os.chown(evil, NOBODY, NOBODY)
    code = "import ctypes, time; ctypes.CDLL(None).prctl(15, b'kubelet', 0, 0, 0); time.sleep(60)"
    proc = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                             "/usr/bin/python3", "-c", code, f"--volume-plugin-dir={evil}"], cwd="/")
    try:
        for _ in range(200):
            with open(f"/proc/{proc.pid}/comm") as handle:
                if handle.read().strip() == "kubelet":
                    break
            time.sleep(0.02)
        result = subprocess.run([UNINSTALL, "--admin", str(node.admin_build), "--admin-path", str(node.admin),
                                 "--config", str(node.config)], capture_output=True, text=True)
    finally:
        proc.kill()
        proc.wait()
    assert result.returncode == 0, result.stderr
    assert f"ignoring process {proc.pid} named kubelet" in result.stderr
    assert str(evil) not in result.stdout and f"plugin dir {DEFAULT_PLUGIN_DIR} (kubelet's default" in result.stdout
    assert list(evil.iterdir()) == []


@pytest.mark.parametrize("how", ["owned by another user", "group-writable", "under a dir another user owns", "a link"])
def test_a_plugin_dir_others_can_change_is_refused_and_nothing_is_installed(node, tmp_path, how):
    base = tmp_path / "base"
    base.mkdir(mode=0o755)
    plugin_dir = base / "plugins"
    if how == "owned by another user":
        plugin_dir.mkdir()
        os.chown(plugin_dir, NOBODY, NOBODY)
    elif how == "group-writable":
        plugin_dir.mkdir()
        plugin_dir.chmod(0o775)
    elif how == "under a dir another user owns":
        os.chown(base, NOBODY, NOBODY)  # plugins/ does not exist yet: install would make it there
    else:
        (tmp_path / "elsewhere").mkdir()
        plugin_dir.symlink_to(tmp_path / "elsewhere")
    node.plugin_dir = plugin_dir
    result = node.install(SKIP)
    assert result.returncode != 0
    assert f"refusing plugin dir {plugin_dir}:" in result.stderr, result.stderr
    assert node.files() == []
    assert not (tmp_path / "elsewhere" / "ax~vol_plugin").exists() and not (plugin_dir / "ax~vol_plugin").exists()
