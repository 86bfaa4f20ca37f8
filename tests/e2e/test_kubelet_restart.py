"""Scenarios 3 and 4: kubelet restarted under a running pod, and pods deleted while it was down."""

from __future__ import annotations

import os

from tests.realkernel import node as pool

from .cluster import pod_from_example, volume_dir
from .scenario import delete_and_wait, driver_calls, slab_of, start


def test_a_restarted_kubelet_reconstructs_the_running_pods_volume_and_keeps_its_data(node):
    pod = start(node, pod_from_example("dind-pod.yaml", "dind-restart"))
    slab = slab_of(pod)
    marker = os.path.join(volume_dir(pod.uid), "marker-before-restart")
    with open(marker, "w") as handle:
        handle.write(pod.uid)
    calls_before = len(driver_calls())
    node.kubelet.stop()
    node.start_kubelet()
    # Kubelet rebuilds its view of the pod's volumes from the pod dir and the mount table; the
    # pod is still Running, on the same slab, with its data, and no unmount was called for it.
    node.wait_running(pod.name, ("dind",))
    assert node.uid(pod.name) == pod.uid
    node.wait_synced()
    assert slab_of(pod) == slab
    with open(marker) as handle:
        assert handle.read() == pod.uid
    unmounts = [c for c in driver_calls()[calls_before:] if c.get("verb") == "unmount"]
    assert not unmounts, f"kubelet's restart unmounted the running pod's slab: {unmounts}"
    assert node.pod_docker(pod.uid, "version", check=False).returncode == 0, "the pod's dockerd did not survive"
    delete_and_wait(node, pod)
    assert pool.slabs()[slab].state == "free"
    pool.check_pool()


def test_pods_deleted_while_kubelet_was_down_are_released_when_it_returns(node):
    pods = [start(node, pod_from_example("dind-pod.yaml", f"dind-orphan-{i}")) for i in range(2)]
    slabs = {slab_of(p) for p in pods}
    assert len(slabs) == 2
    node.kubelet.stop()
    for pod in pods:
        node.delete(pod.name)
    node.start_kubelet()
    for pod in pods:
        node.wait_gone(pod.name, pod.uid)
    view = pool.slabs()
    for slab in slabs:
        assert slab not in view or view[slab].state == "free", f"{slab} not released: {view[slab].tags}"
    assert not pool.slab_mounts()
    pool.check_pool()
