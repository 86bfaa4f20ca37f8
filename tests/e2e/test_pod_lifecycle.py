"""Scenarios 6 and 8: a pod deleted while its dockerd is writing, and the installer run under
running pods (an upgrade)."""

from __future__ import annotations

import os
import subprocess

from tests.realkernel import node as pool

from .cluster import PLUGIN_DIR, REPO, pod_from_example, volume_dir, wait_for
from .images import JOB_IMAGE
from .scenario import delete_and_wait, load_job_image, slab_of, start


def holders(device: str) -> list:
    """Every process whose mount namespace still has `device` mounted (a leaked mount keeps the
    slab busy even when the host's own table no longer shows it)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/mountinfo") as handle:
                if any(line.split()[line.split().index("-") + 2] == device for line in handle):
                    found.append(pid)
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_a_pod_deleted_while_its_dockerd_writes_leaves_no_busy_slab_and_the_next_pod_is_warm(node):
    pod = start(node, pod_from_example("dind-pod.yaml", "dind-writer"))
    slab = slab_of(pod)
    load_job_image(node, pod)
    # A build still writing layers when the pod is deleted: a container appending to its own
    # filesystem (on the slab, through overlay2) as fast as it can.
    node.pod_docker(pod.uid, "run", "-d", "--network", "none", JOB_IMAGE, "sh", "-c",
                    "while :; do cat /opt/toolchain/blob >> /written; done")
    wait_for("the writer to have written", lambda: _written_mb(pod.uid) > 16, 300, every_s=2)
    delete_and_wait(node, pod)  # kubelet gives the pod its terminationGracePeriodSeconds
    device = pool.slabs()[slab].device if slab in pool.slabs() else None
    assert device is None or not holders(device), f"slab {slab} still mounted in: {holders(device)}"
    view = pool.slabs()
    assert slab not in view or view[slab].state == "free"
    pool.check_pool()
    if slab in view:  # kept (under the usage threshold): the next pod gets it, image and all
        after = start(node, pod_from_example("dind-pod.yaml", "dind-after-writer"))
        assert slab_of(after) == slab
        assert JOB_IMAGE in node.pod_docker(after.uid, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        delete_and_wait(node, after)


def _opened(watch: subprocess.Popen) -> list:
    """The file names inotifywait has reported since the last look (without blocking)."""
    try:
        return os.read(watch.stdout.fileno(), 1 << 16).decode(errors="replace").split()
    except BlockingIOError:
        return []


def _watching(pid: int) -> bool:
    """inotifywait has set its watch once it holds an inotify descriptor."""
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify" for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def _written_mb(uid: str) -> float:
    out = subprocess.run(["du", "-sm", volume_dir(uid)], capture_output=True, text=True)
    return float(out.stdout.split()[0]) if out.returncode == 0 and out.stdout else 0.0


def test_the_installer_run_under_running_pods_leaves_them_running_and_kubelet_uses_the_new_driver(node):
    pod = start(node, pod_from_example("dind-pod.yaml", "dind-upgrade"))
    slab = slab_of(pod)
    marker = os.path.join(volume_dir(pod.uid), "marker-before-upgrade")
    with open(marker, "w") as handle:
        handle.write("kept")
    # Every open of a file in the driver's dir: the installer's own, then kubelet's probe (init) of
    # the new driver, which it makes when its watch on the plugin dir fires.
    watch = subprocess.Popen(["inotifywait", "-m", "-q", "-e", "open", "--format", "%f", f"{PLUGIN_DIR}/ax~vol_plugin"],
                             stdout=subprocess.PIPE)
    try:
        wait_for("the watch", lambda: _watching(watch.pid), 30, every_s=0.2)
        out = subprocess.run([f"{REPO}/install/install.sh", "--plugin-dir", PLUGIN_DIR, "--driver", f"{REPO}/dist/vol_plugin"],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        os.set_blocking(watch.stdout.fileno(), False)
        _opened(watch)  # the installer's own opens
        wait_for("kubelet to run the new driver", lambda: "vol_plugin" in _opened(watch), 120, every_s=1)
    finally:
        watch.kill()
        watch.wait()
    assert slab_of(pod) == slab
    with open(marker) as handle:
        assert handle.read() == "kept"
    assert node.pod_docker(pod.uid, "version", check=False).returncode == 0
    delete_and_wait(node, pod)
    assert pool.slabs()[slab].state == "free"
    again = start(node, pod_from_example("dind-pod.yaml", "dind-after-upgrade"))
    assert slab_of(again) == slab
    delete_and_wait(node, again)
    pool.check_pool()
