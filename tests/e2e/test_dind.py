"""Scenario 1: the DinD example through the real kubelet, cold and then warm."""

from __future__ import annotations

from tests.realkernel import node as pool

from .cluster import pod_from_example, volume_dir
from .images import JOB_IMAGE
from .scenario import delete_and_wait, first_hello_s, load_job_image, record_figure, slab_of, start, wait_for_hello


def test_dind_pod_gets_a_slab_and_the_next_pod_finds_its_image(node):
    # Cold: a blank pool, so the pod's slab is new and its dockerd has no images.
    first = start(node, pod_from_example("dind-pod.yaml", "dind-build-cold"))
    slab = slab_of(first)
    assert node.pod_docker(first.uid, "info", "--format", "{{.Driver}} {{.DockerRootDir}}").stdout.split() == [
        "overlay2", "/var/lib/docker"]
    dind_pid = node.container_pid(first.uid, "dind")
    with open(f"/proc/{dind_pid}/mountinfo") as handle:
        graph = [line.split() for line in handle if line.split()[4] == "/var/lib/docker"]
    assert graph and graph[-1][graph[-1].index("-") + 2] == pool.slabs()[slab].device, (
        f"the dind container's /var/lib/docker is not the slab: {graph}")
    assert JOB_IMAGE not in node.pod_docker(first.uid, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    load_job_image(node, first)  # the pull a cold CI pod makes
    wait_for_hello(node, first)
    cold_s = first_hello_s(node, first)
    delete_and_wait(node, first)
    released = pool.slabs()[slab]
    assert released.state == "free", f"slab {slab} not released after the pod was deleted: {released.tags}"
    assert not pool.slab_mounts()

    # Warm: the next pod of that size gets the same slab; its build runs without any pull.
    second = start(node, pod_from_example("dind-pod.yaml", "dind-build-warm"))
    assert pool.slab_mounts()[volume_dir(second.uid)] == slab
    wait_for_hello(node, second)
    warm_s = first_hello_s(node, second)
    delete_and_wait(node, second)
    pool.check_pool()
    record_figure(node, "dind_first_output_cold_s", round(cold_s, 1))
    record_figure(node, "dind_first_output_warm_s", round(warm_s, 1))
    assert warm_s < cold_s
