"""Concurrent calls for different pods all succeed, and never share a slab (behaviour 6)."""

from concurrent.futures import ThreadPoolExecutor

from .node import Pod, check_pool, slab_at, slabs

PODS = 6


def all_at_once(fn, pods):
    with ThreadPoolExecutor(max_workers=len(pods)) as pool:
        return list(pool.map(fn, pods))


def test_concurrent_cold_mounts_then_unmounts_then_warm_mounts(kubelet):
    first = [Pod(size_mb=128) for _ in range(PODS)]
    replies = all_at_once(kubelet.mount, first)
    assert all(r.ok for r in replies), [r.message for r in replies if not r.ok]
    names = {slab_at(p) for p in first}
    assert len(names) == PODS
    check_pool(running=first)

    replies = all_at_once(kubelet.unmount, first)
    assert all(r.ok for r in replies), [r.message for r in replies if not r.ok]
    assert {s.state for s in slabs().values()} == {"free"}

    second = [Pod(size_mb=128) for _ in range(PODS)]
    replies = all_at_once(kubelet.mount, second)
    assert all(r.ok for r in replies), [r.message for r in replies if not r.ok]
    assert {slab_at(p) for p in second} == names, "warm slabs must be reused, each by one pod"
    check_pool(running=second)


def test_concurrent_mounts_and_unmounts_mixed(kubelet):
    leaving = [Pod(size_mb=128) for _ in range(3)]
    assert all(r.ok for r in all_at_once(kubelet.mount, leaving))
    arriving = [Pod(size_mb=128) for _ in range(3)] + [Pod(size_mb=192) for _ in range(2)]

    def step(item):
        kind, pod = item
        return kubelet.unmount(pod) if kind == "out" else kubelet.mount(pod)

    work = [("out", p) for p in leaving] + [("in", p) for p in arriving]
    replies = all_at_once(step, work)
    assert all(r.ok for r in replies), [r.message for r in replies if not r.ok]
    check_pool(running=arriving)
