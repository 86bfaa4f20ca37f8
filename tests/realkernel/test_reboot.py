"""After a reboot, running pods get their own slabs back with their data (behaviour 6).

The first half runs last in the first boot and leaves pods running; the VM then powers off
with everything mounted. The second half runs in a new boot on the same disks: mounts gone,
/run empty, kubelet reconstructing its pods from its own dir.
"""

import json
import os

import pytest

from . import node
from .node import Pod, check_pool, read_marker, slab_at, slabs

STATE = os.path.join(node.KUBELET_ROOT, "reboot-scenario.json")


def pod_from(record):
    return Pod(**record)


@pytest.mark.reboot_before
def test_before_reboot(kubelet):
    before_reboot(kubelet, STATE)


def before_reboot(kubelet, state_path: str, warm_first: bool = False, crash_at: str = "mount-after-lvcreate",
                  crash_size_mb: int = 224) -> None:
    """Pods running, one about to be deleted, one whose mount was killed at `crash_at`; what the
    second boot needs to know goes to `state_path` on the node's disk. `warm_first`: a warm 192
    MiB slab exists before the pods come (on a thin node, the 192 MiB pods then run on snapshots
    of it)."""
    if warm_first:
        warm = Pod(size_mb=192)
        assert kubelet.mount(warm).ok and kubelet.unmount(warm).ok
        kubelet.delete_pod(warm)
    running = [Pod(size_mb=192), Pod(size_mb=320, fs_type="xfs")]
    deleted = Pod(size_mb=192)  # deleted while the node was down
    crashed = Pod(size_mb=crash_size_mb)  # its mount was killed halfway, just before the power cut
    for pod in running + [deleted]:
        assert kubelet.mount(pod).ok
        node.write_marker(pod, f"data of {pod.uid}")
    os.makedirs(crashed.dir, mode=0o750)
    proc = kubelet.start("mount", crashed.dir, crashed.options(), env={"AX_VOL_PLUGIN_FAILPOINTS": crash_at})
    proc.communicate()
    state = {
        "running": [vars_of(p) for p in running],
        "deleted": vars_of(deleted),
        "crashed": vars_of(crashed),
        "slabs": {p.uid: slab_at(p) for p in running + [deleted]},
    }
    with open(state_path, "w") as handle:
        json.dump(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.sync()


def vars_of(pod):
    return {"uid": pod.uid, "size_mb": pod.size_mb, "fs_type": pod.fs_type}


@pytest.mark.after_reboot
def test_after_reboot_pods_get_their_own_slabs_back(kubelet):
    after_reboot(kubelet, STATE)


def after_reboot(kubelet, state_path: str) -> dict:
    """The second boot: kubelet's reconstruction of the pods `before_reboot` left. Returns what
    the first boot wrote."""
    with open(state_path) as handle:
        state = json.load(handle)
    assert node.slab_mounts() == {}, "a reboot leaves no slab mounted"
    assert not os.path.exists("/run/ax-vol-plugin")
    running = [pod_from(r) for r in state["running"]]
    deleted, crashed = pod_from(state["deleted"]), pod_from(state["crashed"])

    # Kubelet's reconstruction: mount again for pods still running, unmount for the deleted one.
    for pod in running:
        reply = kubelet.mount(pod)
        assert reply.ok, reply.message
        assert slab_at(pod) == state["slabs"][pod.uid]
        assert read_marker(pod) == f"data of {pod.uid}"
    assert kubelet.unmount(deleted).ok
    kubelet.delete_pod(deleted)
    assert slabs()[state["slabs"][deleted.uid]].state == "free"
    # The half-made slab's maker died with the old boot: the retry finishes it.
    assert kubelet.mount_retrying(crashed, attempts=2).ok
    check_pool(running=running + [crashed])

    for pod in running + [crashed]:
        assert kubelet.unmount(pod).ok
    check_pool()
    return state
