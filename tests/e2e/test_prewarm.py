"""Pre-warming through the real kubelet, on a thin node: the pod of examples/prewarm-job.yaml
loads the job image from a `docker save` tarball in its node dir and ends; kubelet stops its
native dind sidecar and unmounts the slab, which goes back to the pool warm. Then three DinD pods
of examples/dind-pod.yaml start at once and each build's container runs from the image already
there (nothing is loaded into them, and no registry is reachable): each on a snapshot of its own.
The node is switched back to thick provisioning afterwards, for the scenarios after this one."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

from tests.realkernel import node as pool

from .cluster import pod_from_example, run, wait_for
from .conftest import CONFIG_PATH, SCRATCH
from .scenario import delete_and_wait, slab_of, start, wait_for_hello

ADMIN = "/usr/local/sbin/ax-vol-plugin"
TARBALLS = "/var/lib/ci-prewarm"  # the example's hostPath
RUNNERS = 3


def switch(provisioning: str) -> None:
    """What an admin does on a drained node (README, "Switching a node")."""
    assert not pool.slab_mounts(), "the node must be drained first"
    run(ADMIN, "prepare", f"--{provisioning}", "--yes")
    with open(CONFIG_PATH, "w") as handle:
        handle.write(f"[vol_plugin]\ndevice = {SCRATCH}\nprovisioning = {provisioning}\n")


def phase(node, name: str) -> str:
    return node.pods().get(name, {}).get("status", {}).get("phase", "")


def test_a_prewarm_pod_on_a_thin_node_leaves_a_slab_every_runner_of_a_burst_starts_from(node):
    switch("thin")
    try:
        os.makedirs(TARBALLS, exist_ok=True)
        shutil.copy(json.loads(os.environ["AX_E2E_IMAGES"])["job"], os.path.join(TARBALLS, "job.tar"))
        prewarm = pod_from_example("prewarm-job.yaml", "prewarm")
        (loader,) = prewarm["spec"]["containers"]
        for item in loader["env"]:
            if item["name"] == "PREWARM_IMAGES":
                item["value"] = ""  # nothing to pull: no registry answers here
        name = node.create(prewarm)
        uid = node.uid(name)
        wait_for("the prewarm pod to succeed", lambda: phase(node, name) == "Succeeded", 900, every_s=2,
                 detail=lambda: node.describe(name) + node.container_log(uid, name, "loader")[-2000:])
        assert "prewarm: loading /prewarm/job.tar" in node.container_log(uid, name, "loader")
        # Kubelet unmounts a finished pod's volumes without waiting for the pod to be deleted.
        wait_for("the prewarm slab to go back to the pool", lambda: not pool.slab_mounts(), 600, every_s=2,
                 detail=node.kubelet.log)
        (warm,) = pool.slabs().values()
        assert warm.state == "free"
        node.delete(name)

        with ThreadPoolExecutor(RUNNERS) as workers:
            runners = list(workers.map(lambda i: start(node, pod_from_example("dind-pod.yaml", f"runner-{i}")),
                                       range(RUNNERS)))
        for runner in runners:
            wait_for_hello(node, runner)  # `docker run alpine:3.20`: only the pre-warmed image can answer
        slabs = [slab_of(runner) for runner in runners]
        assert len(set(slabs)) == RUNNERS and warm.name not in slabs
        view = pool.slabs()
        assert all(view[slab].tags.get("ax.origin") == warm.name for slab in slabs)
        pool.check_pool()
        with ThreadPoolExecutor(RUNNERS) as workers:
            list(workers.map(lambda r: delete_and_wait(node, r), runners))
        assert not pool.slab_mounts()
    finally:
        for name in node.manifests():
            node.delete(name)
        wait_for("every pod gone", lambda: not node.pods() and not pool.slab_mounts(), 900, every_s=2,
                 detail=node.kubelet.log)
        switch("thick")
