"""Scenarios 1 and 6: the DinD example through the real kubelet, cold and then warm; the cold pod
is deleted while its dockerd is still writing, and the warm pod must find the cache all the same."""

from __future__ import annotations

import os
import subprocess

from tests.realkernel import node as pool

from .cluster import pod_from_example, volume_dir, wait_for
from .images import JOB_IMAGE
from .scenario import delete_and_wait, first_hello_s, load_job_image, record_figure, slab_of, start, wait_for_hello

# The writer appends the job image's 64 MiB blob this many times (about 2 GiB): still writing
# when kubelet stops the pod, and well under half of the 10 GiB slab, so the usage rule keeps it.
WRITER_ROUNDS = 30


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


def _written_mb(uid: str) -> float:
    out = subprocess.run(["du", "-sm", volume_dir(uid)], capture_output=True, text=True)
    return float(out.stdout.split()[0]) if out.returncode == 0 and out.stdout else 0.0


def test_dind_pod_deleted_mid_write_leaves_its_slab_free_and_the_next_pod_finds_its_image(node):
    # Cold: a blank pool, so the pod's slab is new and its dockerd has no images.
    first = start(node, pod_from_example("dind-pod.yaml", "dind-build-cold"))
    slab = slab_of(first)
    assert node.pod_docker(first.uid, "info", "--format", "{{.Driver}} {{.DockerRootDir}}").stdout.split() == [
        "overlay2", "/var/lib/docker"]
    dind_pid = node.container_pid(first.uid, "dind")
    with open(f"/proc/{dind_pid}/mountinfo") as handle:
        graph = [line.split() for line in handle if line.split()[4] == "/var/lib/docker"]
    device = pool.slabs()[slab].device
    assert graph and graph[-1][graph[-1].index("-") + 2] == device, (
        f"the dind container's /var/lib/docker is not the slab: {graph}")
    assert JOB_IMAGE not in node.pod_docker(first.uid, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    load_job_image(node, first)  # the pull a cold CI pod makes
    wait_for_hello(node, first)
    cold_s = first_hello_s(node, first)

    # A build still writing layers when the pod is deleted: a container appending to its own
    # filesystem (on the slab, through overlay2); kubelet gives the pod its grace period.
    before_mb = _written_mb(first.uid)
    node.pod_docker(first.uid, "run", "-d", "--network", "none", JOB_IMAGE, "sh", "-c",
                    f"for i in $(seq {WRITER_ROUNDS}); do cat /opt/toolchain/blob >> /written; done")
    wait_for("the writer to have written", lambda: _written_mb(first.uid) > before_mb + 16, 300, every_s=1)
    delete_and_wait(node, first)
    assert not holders(device), f"slab {slab} still mounted in: {holders(device)}"
    released = pool.slabs()[slab]
    assert released.state == "free", f"slab {slab} not released after the pod was deleted: {released.tags}"
    assert not pool.slab_mounts()

    # Warm: the next pod of that size gets the same slab; its build runs without any pull.
    second = start(node, pod_from_example("dind-pod.yaml", "dind-build-warm"))
    assert pool.slab_mounts()[volume_dir(second.uid)] == slab
    assert JOB_IMAGE in node.pod_docker(second.uid, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    wait_for_hello(node, second)
    warm_s = first_hello_s(node, second)
    delete_and_wait(node, second)
    pool.check_pool()
    record_figure(node, "dind_first_output_cold_s", round(cold_s, 1))
    record_figure(node, "dind_first_output_warm_s", round(warm_s, 1))
    assert warm_s < cold_s
