"""The CSI node plugin on a real kernel, driven as kubelet drives an ephemeral inline volume
(tests/realkernel/csi.py), beside the FlexVolume driver on the same node and pool."""

from __future__ import annotations

import os
import threading

import grpc
import pytest

from . import csi, node
from .csi import CSIPod
from .node import Pod, check_pool, read_marker, slab_at, slabs, write_marker


@pytest.fixture
def plugin(kubelet):  # kubelet: a blank pool and the FlexVolume driver installed
    running = csi.Plugin()
    running.start()
    yield running
    if running.proc.poll() is None:
        running.stop()


@pytest.fixture
def csi_kubelet(plugin):
    side = csi.CSIKubelet()
    side.register()
    return side


def test_a_csi_pod_gets_a_slab_and_the_next_one_finds_its_cache(csi_kubelet):
    first = CSIPod()
    answer = csi_kubelet.publish(first)
    assert answer.ok, answer.message
    name = slab_at(first)
    assert name and slabs()[name].dir == first.dir and slabs()[name].state == "used"
    write_marker(first, "images of the first pod")
    assert csi_kubelet.unpublish(first).ok
    assert not os.path.exists(first.volume_dir) and slabs()[name].state == "free"

    second = CSIPod()
    assert csi_kubelet.publish(second).ok
    assert (slab_at(second), read_marker(second)) == (name, "images of the first pod")
    assert csi_kubelet.publish(second).ok  # again, as kubelet after a restart or a lost answer: the same slab
    assert slab_at(second) == name
    check_pool()
    assert csi_kubelet.unpublish(second).ok
    assert csi_kubelet.unpublish(second).ok  # and an unpublish retried after its success
    lines = [line for line in node.log_lines() if line.get("frontend") == "csi" and line["verb"] != "register"]
    assert [line["verb"] for line in lines] == ["publish", "unpublish", "publish", "publish", "unpublish", "unpublish"]
    assert {line["outcome"] for line in lines} == {"Success"}
    check_pool()


def test_a_flexvolume_pod_and_a_csi_pod_share_the_pool(kubelet, csi_kubelet):
    flex = Pod(size_mb=256)
    assert kubelet.mount(flex).ok
    name = slab_at(flex)
    write_marker(flex, "from a FlexVolume pod")
    assert kubelet.unmount(flex).ok

    by_csi = CSIPod()
    assert csi_kubelet.publish(by_csi).ok
    assert (slab_at(by_csi), read_marker(by_csi)) == (name, "from a FlexVolume pod")
    write_marker(by_csi, "from a CSI pod")
    assert csi_kubelet.unpublish(by_csi).ok

    flex_again = Pod(size_mb=256)
    assert kubelet.mount(flex_again).ok
    assert (slab_at(flex_again), read_marker(flex_again)) == (name, "from a CSI pod")
    assert kubelet.unmount(flex_again).ok
    check_pool()


def test_concurrent_csi_pods_each_get_a_slab_of_their_own(csi_kubelet):
    pods = [CSIPod() for _ in range(3)]
    answers = {}
    threads = [threading.Thread(target=lambda p=p: answers.__setitem__(p.uid, csi_kubelet.publish(p))) for p in pods]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert all(answer.ok for answer in answers.values()), [a.message for a in answers.values()]
    assert len({slab_at(pod) for pod in pods}) == 3
    check_pool(running=pods)
    for pod in pods:
        assert csi_kubelet.unpublish(pod).ok
    check_pool()


def test_bad_volume_attributes_are_refused_and_create_nothing(csi_kubelet):
    for attributes, words in (
        ((("size_mb", "ten"),), "size_mb must be a positive whole number"),
        ((("sizeMb", "256"),), "unknown volumeAttributes 'sizeMb'"),
        ((("fsType", "btrfs"),), "unsupported fsType 'btrfs'"),
        ((("cache_scope", "no spaces"),), "cache_scope"),
    ):
        pod = CSIPod(attributes=attributes)
        answer = csi_kubelet.publish(pod)
        assert answer.code is grpc.StatusCode.INVALID_ARGUMENT and words in answer.message, answer
        assert not os.path.exists(pod.dir)
    assert slabs() == {}


def test_a_restarted_plugin_unpublishes_what_it_published_before(plugin, csi_kubelet):
    pod = CSIPod()
    assert csi_kubelet.publish(pod).ok
    name = slab_at(pod)
    plugin.kill()  # SIGKILL: no clean shutdown, its sockets left behind
    assert slab_at(pod) == name, "the volume is the kernel's: it stays mounted without the plugin"
    plugin.start()
    csi_kubelet.register()
    assert csi_kubelet.unpublish(pod).ok
    assert slabs()[name].state == "free"
    check_pool()


def test_a_volume_kubelet_forgot_while_the_plugin_was_down_is_released_when_it_returns(plugin, csi_kubelet):
    kept, forgotten = CSIPod(), CSIPod()
    assert csi_kubelet.publish(kept).ok and csi_kubelet.publish(forgotten).ok
    write_marker(forgotten, "cache")
    name = slab_at(forgotten)
    assert plugin.stop() == 0
    assert not os.path.exists(csi.REGISTRATION_SOCKET), "a clean stop removes the registration socket"
    os.unlink(os.path.join(forgotten.volume_dir, "vol_data.json"))  # kubelet no longer has it
    plugin.start()
    assert slab_at(forgotten) is None and slabs()[name].state == "free"
    assert slab_at(kept) is not None, "a volume kubelet still has is left to kubelet"
    released = [line for line in node.log_lines() if line.get("sweep")]
    assert [(line["outcome"], line["decision"]) for line in released] == [("Success", "kept slab")]
    csi_kubelet.register()
    reuse = CSIPod()  # the released slab is the only free one: it goes back into use, cache intact
    assert csi_kubelet.publish(reuse).ok
    assert (slab_at(reuse), read_marker(reuse)) == (name, "cache")
    for pod in (kept, reuse):
        assert csi_kubelet.unpublish(pod).ok
    check_pool()
