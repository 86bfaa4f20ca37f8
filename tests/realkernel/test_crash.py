"""Killed at any instant, the driver leaks nothing and kubelet's retry succeeds (behaviour 6)."""

import os
import signal
import time

import pytest

from . import node
from .node import Pod, check_pool, read_marker, slab_at, slabs, write_marker

MOUNT_STEPS = [
    "mount-after-lvcreate",
    "mount-after-decision",
    "mount-after-mkfs",
    "mount-after-format-tag",
    "mount-after-mount",
]


def crashed_call(kubelet, *argv, env=None):
    """A call that dies by SIGKILL; then kubelet's own cleanup (rmdir of an unmounted dir)."""
    proc = kubelet.start(*argv, env=env)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, out)
    return out


def crash_mount(kubelet, pod, step):
    os.makedirs(pod.dir, mode=0o750, exist_ok=True)
    crashed_call(kubelet, "mount", pod.dir, pod.options(), env={"AX_VOL_PLUGIN_FAILPOINTS": step})
    if not os.path.ismount(pod.dir):
        os.rmdir(pod.dir)


def no_process_named(name):
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as handle:
                if handle.read().strip() == name:
                    return False
        except OSError:
            pass
    return True


@pytest.mark.parametrize("step", MOUNT_STEPS)
def test_a_cold_mount_killed_at_each_step_is_completed_by_the_retry(kubelet, step):
    pod = Pod(size_mb=192)
    crash_mount(kubelet, pod, step)
    reply = kubelet.mount_retrying(pod, attempts=2)
    assert reply.ok
    assert len(slabs()) == 1, "the retry must carry on with the slab the killed call made"
    check_pool(running=[pod])
    assert kubelet.unmount(pod).ok
    check_pool()


@pytest.mark.parametrize("step", ["mount-after-decision", "mount-after-mount"])
def test_a_warm_mount_killed_after_claiming_keeps_the_cache_for_the_retry(kubelet, step):
    first = Pod(size_mb=192)
    assert kubelet.mount(first).ok
    write_marker(first, "warm")
    name = slab_at(first)
    assert kubelet.unmount(first).ok
    second = Pod(size_mb=192)
    crash_mount(kubelet, second, step)
    # Killed after its mount(2), the call is not retried at all (kubelet sees a mount point):
    # the slab stays claimed, in use by its pod, until the pod's unmount releases it.
    assert kubelet.mount_retrying(second, attempts=2).ok
    assert slab_at(second) == name and read_marker(second) == "warm"
    check_pool(running=[second])
    assert kubelet.unmount(second).ok
    assert slabs()[name].state == "free"
    check_pool()


@pytest.mark.parametrize("usage", [0.2, 0.7])
@pytest.mark.parametrize("step", ["unmount-after-measure", "unmount-after-umount"])
def test_an_unmount_killed_at_each_step_is_completed_by_the_retry(kubelet, step, usage):
    pod = Pod(size_mb=192)
    assert kubelet.mount(pod).ok
    node.fill(pod, usage)
    name = slab_at(pod)
    crashed_call(kubelet, "unmount", pod.dir, env={"AX_VOL_PLUGIN_FAILPOINTS": step})
    reply = kubelet.unmount(pod)
    assert reply.ok, reply.message
    if usage > 0.5:
        assert name not in slabs(), "an over-full slab must still be deleted after a crash"
    else:
        assert slabs()[name].state == "free"
    check_pool()


def test_killing_the_driver_mid_mkfs_kills_mkfs_and_the_retry_succeeds(kubelet):
    pod = Pod(size_mb=1024)
    os.makedirs(pod.dir, mode=0o750)
    proc = kubelet.start("mount", pod.dir, pod.options())
    deadline = time.monotonic() + 120
    while no_process_named("mkfs.ext4"):
        assert proc.poll() is None, "the mount finished before mkfs could be caught"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # the driver only: its child must not outlive it
    proc.communicate()
    for _ in range(100):
        if no_process_named("mkfs.ext4"):
            break
        time.sleep(0.05)
    assert no_process_named("mkfs.ext4"), "mkfs outlived the killed driver"
    os.rmdir(pod.dir)
    assert kubelet.mount_retrying(pod, attempts=2).ok
    assert len(slabs()) == 1
    check_pool(running=[pod])


@pytest.mark.parametrize("delay_s", [0.1, 0.4, 0.8, 1.2, 1.8, 2.6, 3.5])
def test_random_instant_kills_of_mount_and_unmount_leak_nothing(kubelet, delay_s):
    warm = Pod(size_mb=128)
    assert kubelet.mount(warm).ok and kubelet.unmount(warm).ok
    pods = [Pod(size_mb=128), Pod(size_mb=160)]  # one warm mount, one cold
    for pod in pods:
        os.makedirs(pod.dir, mode=0o750)
        proc = kubelet.start("mount", pod.dir, pod.options())
        time.sleep(delay_s)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        if not os.path.ismount(pod.dir):
            os.rmdir(pod.dir)
        assert kubelet.mount_retrying(pod, attempts=2).ok
    check_pool(running=pods)
    for pod in pods:
        proc = kubelet.start("unmount", pod.dir)
        time.sleep(delay_s / 2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        reply = kubelet.unmount(pod)
        assert reply.ok, reply.message
    check_pool()
    assert {s.state for s in slabs().values()} == {"free"}


def test_a_half_made_slab_of_a_pod_that_went_away_is_reclaimed(kubelet):
    gone = Pod(size_mb=256)
    crash_mount(kubelet, gone, "mount-after-lvcreate")
    (half_made,) = slabs()
    assert slabs()[half_made].state == "creating"
    kubelet.delete_pod(gone)  # the pod was deleted before kubelet retried
    other = Pod(size_mb=128)
    assert kubelet.mount(other).ok
    assert half_made not in slabs()
    check_pool(running=[other])


def test_a_slab_in_use_by_a_pod_that_vanished_goes_back_to_the_pool(kubelet):
    lost = Pod(size_mb=128)
    assert kubelet.mount(lost).ok
    write_marker(lost, "orphaned cache")
    name = slab_at(lost)
    # The node lost the pod with no unmount call: mount gone, pod dir cleaned up.
    node.run("umount", lost.dir)
    kubelet.delete_pod(lost)
    assert slabs()[name].state == "used"
    heir = Pod(size_mb=128)
    assert kubelet.mount(heir).ok
    assert slab_at(heir) == name and read_marker(heir) == "orphaned cache"
    check_pool(running=[heir])
