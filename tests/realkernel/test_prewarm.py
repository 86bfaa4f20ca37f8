"""examples/prewarm-job.yaml on the real kernel, in both provisioning modes: its loader script, as
the example writes it, fills a slab through the pod's own dockerd from `docker save` tarballs;
the slab goes back to the pool warm, and the runners of examples/ci-runner-job.yaml that come
next find their image without loading it: every pod of a burst on a thin node, one on a thick node.

Kubelet's part (mount, sidecar, unmount) is tests/realkernel/node.py's emulation; the loader runs
with the example's own command, arguments and environment, but for where the daemon and the
tarballs are in this VM and an empty pull list (no registry is reachable here)."""

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from tests.e2e.images import job_image

from .conftest import CONFIG_PATH, node_config
from .dind import IMAGE, InnerDocker, run_ci_job
from .node import Pod, check_pool, slab_at, slabs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPO, "examples", "prewarm-job.yaml")
SLAB_MB = 512  # the example's 10 GiB does not fit the suite's disk; size is the one value replaced
IMAGE_MB = 48
BURST = 3


def example_pod():
    """The pre-warm Job's pod spec, its flexVolume, and its loader container."""
    with open(EXAMPLE) as handle:
        spec = yaml.safe_load(handle)["spec"]["template"]["spec"]
    (volume,) = [v["flexVolume"] for v in spec["volumes"] if "flexVolume" in v]
    (loader,) = spec["containers"]
    return volume, loader


def runner_pod(volume) -> Pod:
    """A pod asking for what the example's volume asks for (at the suite's size)."""
    options = dict(volume["options"])
    options.pop("size_mb")
    volume_type = options.pop("ax_vol_type")
    return Pod(size_mb=SLAB_MB, fs_type=volume["fsType"], volume_type=volume_type, extra=tuple(options.items()))


def run_prewarm_pod(kubelet, tarballs: str) -> str:
    """The pre-warm pod's life: kubelet mounts its slab, the dind sidecar starts, the loader runs
    to its end, kubelet stops the sidecar and unmounts. Returns the loader's output."""
    volume, loader = example_pod()
    pod = runner_pod(volume)
    reply = kubelet.mount(pod)
    assert reply.ok, reply.message
    daemon = InnerDocker(pod.dir, "prewarm")
    daemon.start()
    try:
        env = {item["name"]: item["value"] for item in loader["env"]}
        env.update(
            DOCKER_HOST=f"unix://{daemon.socket}", PREWARM_TARBALLS=tarballs, PREWARM_IMAGES="",
            PATH="/usr/sbin:/usr/bin:/sbin:/bin",
        )
        done = subprocess.run([*loader["command"], *loader["args"]], env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr
        assert IMAGE in daemon.images()
    finally:
        daemon.stop()
    slab = slab_at(pod)
    reply = kubelet.unmount(pod)
    assert reply.ok and "kept for the next pod" in reply.message, reply.message
    kubelet.delete_pod(pod)
    assert slabs()[slab].state == "free"
    return done.stdout


@pytest.fixture(scope="module")
def tarballs(tmp_path_factory):
    """What an admin puts on the node: `docker save` tarballs (one here, of the runners' image)."""
    directory = tmp_path_factory.mktemp("prewarm")
    job_image(str(directory / "toolchain.tar"), payload_mb=IMAGE_MB, name=IMAGE)
    (directory / "notes.txt").write_text("not a tarball: the loader skips it\n")
    return str(directory)


@pytest.mark.parametrize("provisioning", ["thin", "thick"])
def test_a_prewarmed_node_serves_the_first_runners_warm(kubelet, tarballs, provisioning):
    with open(CONFIG_PATH, "w") as handle:
        handle.write(node_config(provisioning=provisioning))
    output = run_prewarm_pod(kubelet, tarballs)
    assert f"prewarm: loading {tarballs}/toolchain.tar" in output
    assert IMAGE in output and "notes.txt" not in output

    volume, _ = example_pod()
    # Given to the runners to load should the image be missing: a miss still ends the job, and the
    # assertion below says so.
    fallback = os.path.join(tarballs, "toolchain.tar")
    if provisioning == "thin":
        # Every runner of the burst starts from the pre-warmed slab, each on a snapshot of its own.
        pods = [runner_pod(volume) for _ in range(BURST)]
        with ThreadPoolExecutor(BURST) as pool:
            jobs = list(pool.map(lambda pair: run_ci_job(kubelet, pair[1], fallback, f"runner-{pair[0]}"), enumerate(pods)))
        assert [job.cache_hit for job in jobs] == [True] * BURST
        assert len({job.slab for job in jobs}) == BURST
    else:
        # Thick: the pre-warmed slab itself goes to the first runner.
        job = run_ci_job(kubelet, runner_pod(volume), fallback, "runner")
        assert job.cache_hit
    check_pool()
