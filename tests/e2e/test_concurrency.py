"""Scenario 2: eight CI-runner pods at once on one node, each on a slab of its own (the two DinD
pods at once are in test_kubelet.py, whose pods the later scenarios reuse)."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor

from tests.realkernel import node as pool

from .cluster import KUBELET_ROOT, pod_from_example, wait_for
from .scenario import RunningPod, delete_and_wait, slab_of, start

# The CI job's workspace (ci-runner-job.yaml builds /workspace and runs ./run-tests in the result):
# an image from scratch with a static shell, so a cold pod's build needs nothing pulled.
DOCKERFILE = "FROM scratch\nCOPY busybox /bin/busybox\nCOPY busybox /bin/sh\nCOPY run-tests /run-tests\n"
RUN_TESTS = "#!/bin/sh\necho tests passed\n"


def workspace(uid: str) -> str:
    return f"{KUBELET_ROOT}/pods/{uid}/volumes/kubernetes.io~empty-dir/workspace"


def fill_workspace(uid: str) -> None:
    """What a runner's checkout step leaves in the workspace, before the build starts."""
    where = wait_for(f"the workspace of pod {uid}", lambda: os.path.isdir(workspace(uid)) and workspace(uid), 600)
    shutil.copy("/bin/busybox", os.path.join(where, "busybox"))
    with open(os.path.join(where, "run-tests"), "w") as handle:
        handle.write(RUN_TESTS)
    os.chmod(os.path.join(where, "run-tests"), 0o755)
    with open(os.path.join(where, "Dockerfile"), "w") as handle:
        handle.write(DOCKERFILE)


def check_exclusive(pods) -> set:
    slabs = [slab_of(p) for p in pods]
    assert len(set(slabs)) == len(pods), f"pods share slabs: {slabs}"
    pool.check_pool()
    return set(slabs)


def released(slabs: set) -> None:
    view = pool.slabs()
    for slab in slabs:
        assert slab not in view or view[slab].state == "free", f"{slab} not released: {view[slab].tags}"
    assert not pool.slab_mounts()
    pool.check_pool()


def test_eight_ci_runner_pods_at_once_each_build_on_a_slab_of_their_own(node):
    def job(i: int) -> RunningPod:
        name = node.create(pod_from_example("ci-runner-job.yaml", f"ci-build-{i}"))
        fill_workspace(node.uid(name))
        return start(node, None, existing=name, daemon=False)

    with ThreadPoolExecutor(8) as workers:
        pods = list(workers.map(job, range(8)))
    slabs = check_exclusive(pods)
    # One deadline for all eight: the slowest pod sets the time, and a timeout names every pod
    # still running with the tail of its two containers' output.
    wait_for("every runner to finish", lambda: all(_finished(node, pod) for pod in pods), 1200, every_s=5,
             detail=lambda: _unfinished(node, pods))
    for pod in pods:
        status = _finished(node, pod)
        assert status["exitCode"] == 0, f"{pod.name}'s build failed: {node.container_log(pod.uid, pod.name, 'runner')[-2000:]}"
        assert "tests passed" in node.container_log(pod.uid, pod.name, "runner")
    with ThreadPoolExecutor(8) as workers:
        list(workers.map(lambda p: delete_and_wait(node, p), pods))
    released(slabs)


def _unfinished(node, pods) -> str:
    return "\n".join(
        f"{pod.name}: runner: {node.container_log(pod.uid, pod.name, 'runner')[-600:]!r}; "
        f"dind: {node.container_log(pod.uid, pod.name, 'dind')[-600:]!r}"
        for pod in pods if not _finished(node, pod))


def _finished(node, pod: RunningPod):
    status = node.container_status(pod.name, "runner")
    return status and status.get("state", {}).get("terminated")
