"""Real Docker-in-Docker: the next CI pod's dockerd finds the last pod's images (issue: prove the point)."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from .dind import IMAGE, InnerDocker, build_image_tarball, run_ci_job
from .node import Pod, check_pool, slab_at, slabs


@pytest.fixture(scope="module")
def image_tarball(tmp_path_factory):
    return build_image_tarball(str(tmp_path_factory.mktemp("image") / "toolchain.tar"))


@pytest.mark.parametrize("fs_type, backing", [("ext4", "extfs"), ("xfs", "xfs")])
def test_the_next_pods_dockerd_already_has_the_image(kubelet, image_tarball, fs_type, backing):
    first = Pod(size_mb=1024, fs_type=fs_type)
    assert kubelet.mount(first).ok
    daemon = InnerDocker(first.dir, "pod1")
    daemon.start()
    try:
        assert daemon.info("Driver") == "overlay2"
        assert daemon.info("DriverStatus") and backing in daemon.docker("info").stdout
        assert IMAGE not in daemon.images()
        daemon.docker("import", image_tarball, IMAGE)
        assert daemon.run("echo", "built by pod 1").strip() == "built by pod 1"
    finally:
        daemon.stop()
    slab = slab_at(first)
    assert kubelet.unmount(first).ok

    second = Pod(size_mb=1024, fs_type=fs_type)
    assert kubelet.mount(second).ok
    assert slab_at(second) == slab
    daemon = InnerDocker(second.dir, "pod2")
    daemon.start()
    try:
        assert IMAGE in daemon.images(), "the warm slab must still hold the image"
        assert daemon.run("ls", "/opt/toolchain").split() == ["blob"]
    finally:
        daemon.stop()
    assert kubelet.unmount(second).ok
    check_pool()


def ci_job(kubelet, pod, tarball, name, fill_to=None):
    result = run_ci_job(kubelet, pod, tarball, name, fill_to)
    return result.slab, result.cache_hit


def test_ci_pods_in_a_row_and_at_once_reuse_the_cache_until_one_overfills_it(kubelet, image_tarball):
    size = 512
    # In a row: the first is cold, the next ones hit the cache on the same slab.
    results = [ci_job(kubelet, Pod(size_mb=size), image_tarball, f"row{i}") for i in range(3)]
    assert [hit for _, hit in results] == [False, True, True]
    assert len({slab for slab, _ in results}) == 1

    # A pod that leaves its slab more than half full loses it at unmount...
    overfilled, hit = ci_job(kubelet, Pod(size_mb=size), image_tarball, "big", fill_to=0.8)
    assert hit and overfilled == results[0][0]
    assert slabs() == {}
    # ...so the next pod starts cold on a new slab, and the one after it is warm again.
    again = [ci_job(kubelet, Pod(size_mb=size), image_tarball, f"again{i}") for i in range(2)]
    assert [hit for _, hit in again] == [False, True]
    warm_slab = again[0][0]
    assert warm_slab != overfilled and again[1][0] == warm_slab

    # At once: one pod gets the warm slab, the others start cold on new slabs.
    pods = [Pod(size_mb=size) for _ in range(3)]
    with ThreadPoolExecutor(len(pods)) as pool:
        at_once = list(pool.map(lambda item: ci_job(kubelet, item[1], image_tarball, f"par{item[0]}"), enumerate(pods)))
    assert sorted(hit for _, hit in at_once) == [False, False, True]
    assert next(slab for slab, hit in at_once if hit) == warm_slab
    assert len({slab for slab, _ in at_once}) == 3
    check_pool()
