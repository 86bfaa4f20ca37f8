"""Scenario 5: the node reboots (a second boot of the VM on the same disks). A pod that must run
again gets its own slab back, data intact; a pod deleted while the node was down is released."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.realkernel import node as pool

from .cluster import pod_from_example, volume_dir
from .scenario import delete_and_wait, slab_of, start

STATE = "reboot-state.json"  # in the results dir, which both boots share


@pytest.mark.reboot_before
def test_before_the_reboot_two_pods_run_and_one_is_deleted_while_the_node_is_down(node):
    with ThreadPoolExecutor(2) as workers:
        keep, gone = workers.map(lambda name: start(node, pod_from_example("dind-pod.yaml", name)),
                                 ("dind-survivor", "dind-deleted-in-reboot"))
    state = {}
    for role, pod in (("keep", keep), ("gone", gone)):
        with open(os.path.join(volume_dir(pod.uid), "marker"), "w") as handle:
            handle.write(pod.uid)
            handle.flush()
            os.fsync(handle.fileno())
        state[role] = {"name": pod.name, "uid": pod.uid, "slab": slab_of(pod)}
    with open(os.path.join(node.results, STATE), "w") as handle:
        json.dump(state, handle)
    # The node goes down: kubelet stops, and while it is down the pod is deleted (its manifest
    # is gone when kubelet comes back); then the power goes, pods and all.
    node.kubelet.stop()
    node.delete(gone.name)


@pytest.mark.after_reboot
def test_after_the_reboot_the_pod_gets_its_own_slab_back_and_the_deleted_pods_is_released(node):
    with open(os.path.join(node.results, STATE)) as handle:
        state = json.load(handle)
    keep, gone = state["keep"], state["gone"]
    running = node.wait_running(keep["name"], ("dind",))
    assert running["metadata"]["uid"] == keep["uid"], "a static pod keeps its uid across the reboot"
    pod = start(node, None, existing=keep["name"])
    assert slab_of(pod) == keep["slab"], "the pod did not get its own slab back"
    with open(os.path.join(volume_dir(pod.uid), "marker")) as handle:
        assert handle.read() == keep["uid"]
    node.wait_gone(gone["name"], gone["uid"])
    view = pool.slabs()
    left = view.get(gone["slab"])
    assert left is None or left.state == "free", f"the deleted pod's slab was not released: {left}"
    delete_and_wait(node, pod)
    assert pool.slabs()[keep["slab"]].state == "free"
    pool.check_pool()
