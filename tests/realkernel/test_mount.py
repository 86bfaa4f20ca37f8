"""Mount and unmount on real LVM, driven the way kubelet drives the driver (issue behaviours 2, 4, 5, 7)."""

import os
import time

from . import node
from .node import Pod, check_pool, read_marker, slab_at, slabs, write_marker


def test_first_mount_creates_volume_group_and_an_ext4_slab(kubelet):
    assert not node.volume_group_exists()
    pod = Pod(size_mb=256)
    reply = kubelet.mount(pod)
    assert reply.ok, reply.message
    name = slab_at(pod)
    assert name is not None
    point, source, fs = next(m for m in node.mounts() if m[0] == pod.dir)
    assert fs == "ext4"
    slab = slabs()[name]
    assert slab.state == "used" and slab.dir == pod.dir
    assert slab.tags["ax.size_mb"] == "256" and slab.size_bytes == 256 << 20
    assert slab.tags["ax.pod"] == pod.uid
    check_pool(running=[pod])


def test_released_slab_is_handed_to_the_next_pod_with_its_cache(kubelet):
    first = Pod(size_mb=256)
    assert kubelet.mount(first).ok
    write_marker(first, "layers of pod 1")
    name = slab_at(first)
    assert kubelet.unmount(first).ok
    assert not os.path.exists(first.dir)
    assert slabs()[name].state == "free"
    check_pool()

    second = Pod(size_mb=256)
    assert kubelet.mount(second).ok
    assert slab_at(second) == name
    assert read_marker(second) == "layers of pod 1"
    assert len(slabs()) == 1
    check_pool(running=[second])


def test_xfs_slab_has_ftype_for_overlay2(kubelet):
    pod = Pod(size_mb=320, fs_type="xfs")
    assert kubelet.mount(pod).ok, kubelet.calls[-1].message
    assert next(m for m in node.mounts() if m[0] == pod.dir)[2] == "xfs"
    info = node.run("xfs_info", pod.dir).stdout
    assert "ftype=1" in info
    assert kubelet.unmount(pod).ok
    check_pool()


def test_empty_fstype_means_ext4(kubelet):
    pod = Pod(size_mb=128, fs_type="ext4-default")  # kubelet sends "" when the spec sets none
    assert kubelet.mount(pod).ok
    assert next(m for m in node.mounts() if m[0] == pod.dir)[2] == "ext4"
    assert slabs()[slab_at(pod)].tags["ax.fs"] == "ext4"


def test_mount_of_a_dir_already_mounted_is_success_and_changes_nothing(kubelet):
    pod = Pod(size_mb=128)
    assert kubelet.mount(pod).ok
    write_marker(pod, "still here")
    before = (slabs(), node.mounts())
    # Kubelet itself checks first and does not call the driver on a mount point; a caller that
    # does not (or a mount its check misses) gets the same answer from the driver's own check.
    reply = kubelet.call("mount", pod.dir, pod.options())
    assert reply.ok and "already mounted" in reply.message
    assert (slabs(), node.mounts()) == before
    assert read_marker(pod) == "still here"
    check_pool(running=[pod])


def test_the_warmest_free_slab_is_handed_out_first(kubelet):
    older, newer = Pod(size_mb=128), Pod(size_mb=128)
    assert kubelet.mount(older).ok and kubelet.mount(newer).ok
    older_slab, newer_slab = slab_at(older), slab_at(newer)
    assert kubelet.unmount(older).ok
    time.sleep(1.1)  # release times are whole seconds: make the next one later
    assert kubelet.unmount(newer).ok
    third = Pod(size_mb=128)
    assert kubelet.mount(third).ok
    assert slab_at(third) == newer_slab
    fourth = Pod(size_mb=128)
    assert kubelet.mount(fourth).ok
    assert slab_at(fourth) == older_slab
    check_pool(running=[third, fourth])


def test_only_the_same_size_and_filesystem_are_reused(kubelet):
    first = Pod(size_mb=128)
    assert kubelet.mount(first).ok and kubelet.unmount(first).ok
    (kept,) = slabs()
    bigger = Pod(size_mb=192)
    assert kubelet.mount(bigger).ok and slab_at(bigger) != kept
    other_fs = Pod(size_mb=320, fs_type="xfs")
    assert kubelet.mount(other_fs).ok and slab_at(other_fs) != kept
    assert slabs()[kept].state == "free"
    check_pool(running=[bigger, other_fs])


def test_unmount_of_a_dir_that_is_not_mounted_succeeds(kubelet):
    pod = Pod(size_mb=128)
    os.makedirs(pod.dir, mode=0o750)
    reply = kubelet.unmount(pod)  # removes the dir: that is what kubelet does next
    assert reply.ok
    assert not node.volume_group_exists()


def test_unmount_after_the_mount_vanished_returns_the_slab_to_the_pool(kubelet):
    pod = Pod(size_mb=128)
    assert kubelet.mount(pod).ok
    name = slab_at(pod)
    node.run("umount", pod.dir)  # a reboot, or an admin, unmounted it behind the driver's back
    assert kubelet.unmount(pod).ok
    assert slabs()[name].state == "free"
    check_pool()


def test_anonymous_slabs_live_only_as_long_as_their_pod(kubelet):
    pod = Pod(size_mb=128, volume_type="ax-anonymous")
    assert kubelet.mount(pod).ok
    name = slab_at(pod)
    assert slabs()[name].tags["ax.type"] == "anonymous"
    write_marker(pod, "scratch")
    assert kubelet.unmount(pod).ok
    assert name not in slabs()
    graph = Pod(size_mb=128)
    assert kubelet.mount(graph).ok and read_marker(graph) is None
    check_pool(running=[graph])


def test_a_new_slab_on_the_extents_of_a_deleted_one_is_wiped_without_a_prompt(kubelet):
    old = Pod(size_mb=320, fs_type="xfs")
    assert kubelet.mount(old).ok
    write_marker(old, "old data")
    node.fill(old, 0.7)
    assert kubelet.unmount(old).ok
    assert slabs() == {}  # deleted: its xfs signature is still on those extents
    new = Pod(size_mb=320)
    reply = kubelet.mount(new)
    assert reply.ok, reply.message
    assert next(m for m in node.mounts() if m[0] == new.dir)[2] == "ext4"
    assert read_marker(new) is None
    check_pool(running=[new])
