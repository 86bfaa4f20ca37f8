"""Scenarios 2 (two pods at once), 8, 3 and 4, in that order, on the same three running pods:
the installer run under them (an upgrade), kubelet restarted under them, and kubelet stopped while
two of them are deleted. Starting the pods once for all four keeps the suite inside make test's
budget; each test still checks its own scenario, and says which step of it failed."""

from __future__ import annotations

import contextlib
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.realkernel import node as pool

from .cluster import PLUGIN_DIR, REPO, pod_from_example, volume_dir, wait_for
from .scenario import delete_and_wait, driver_calls, mark, slab_of, start, unchanged

KEEPER = "dind-keeper"  # runs through every test of this file
PAIR = ("dind-pair-0", "dind-pair-1")  # deleted while kubelet is down


@pytest.fixture(scope="module")
def pods(node):
    with ThreadPoolExecutor(3) as workers:
        running = list(workers.map(lambda name: start(node, pod_from_example("dind-pod.yaml", name)), (KEEPER, *PAIR)))
    by_name = {pod.name: pod for pod in running}
    for pod in running:
        mark(pod, volume_dir(pod.uid))
    return by_name


def _unchanged(node, pod, slab: str) -> None:
    unchanged(node, pod, slab, volume_dir(pod.uid))


@contextlib.contextmanager
def undisturbed(node, pods: dict, what: str):
    """Around `what`: every pod runs on as before, and kubelet called neither unmount nor mount
    for any of them (kubelet mounts only once: it does not call the driver on a mount point)."""
    slabs = {name: slab_of(pod) for name, pod in pods.items()}
    calls_before = len(driver_calls())
    yield
    for name, pod in pods.items():
        _unchanged(node, pod, slabs[name])
    uids = {pod.uid for pod in pods.values()}
    calls = [c for c in driver_calls()[calls_before:] if c.get("verb") in ("mount", "unmount") and c.get("pod") in uids]
    assert not calls, f"{what} made kubelet call the driver for running pods: {calls}"


def test_pods_started_at_once_each_get_a_slab_of_their_own(node, pods):
    slabs = [slab_of(pod) for pod in pods.values()]
    assert len(set(slabs)) == len(slabs), f"pods share slabs: {slabs}"
    pool.check_pool()


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


def test_the_installer_run_under_running_pods_leaves_them_running_and_kubelet_probes_the_new_driver(node, pods):
    with undisturbed(node, pods, "the upgrade"):
        _upgrade()


def _upgrade() -> None:
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


def test_a_restarted_kubelet_reconstructs_the_running_pods_volumes_and_keeps_their_data(node, pods):
    # Kubelet rebuilds its view of the pods' volumes from the pod dirs and the mount table; the
    # pods are still Running, on the same slabs, with their data, and the driver was not called.
    with undisturbed(node, pods, "kubelet's restart"):
        node.kubelet.stop()
        node.start_kubelet()
        node.wait_synced()


def test_pods_deleted_while_kubelet_was_down_are_released_when_it_returns(node, pods):
    keeper = pods[KEEPER]
    keeper_slab = slab_of(keeper)
    pair = [pods[name] for name in PAIR]
    pair_slabs = {slab_of(pod) for pod in pair}
    node.kubelet.stop()
    for pod in pair:
        node.delete(pod.name)
    node.start_kubelet()
    for pod in pair:
        node.wait_gone(pod.name, pod.uid)
    view = pool.slabs()
    for slab in pair_slabs:
        assert slab not in view or view[slab].state == "free", f"{slab} not released: {view[slab].tags}"
    _unchanged(node, keeper, keeper_slab)
    delete_and_wait(node, keeper)
    assert pool.slabs()[keeper_slab].state == "free"
    assert not pool.slab_mounts()
    pool.check_pool()
