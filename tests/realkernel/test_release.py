"""What becomes of a slab when its pod is done: measured before it is handed on, a claim that died
is checked again, and the slow steps of an unmount hold up no other pod (#14 items 5, 7, 10)."""

import contextlib
import os
import signal
import time

import pytest

from . import node
from .node import Pod, check_pool, fill, slab_at, slabs

ADMIN = "/usr/local/sbin/ax-vol-plugin"  # where the suite's install puts the admin command
# The driver looks for its tools in /usr/sbin first (runner.SEARCH_PATH); /usr is a throw-away
# overlay in the VM, so a script there stands in for the real tool until it is removed.
SLOW_UMOUNT = "/usr/sbin/umount"
STARTED = "/run/ax-test-umount-started"
GO_ON = "/run/ax-test-umount-go-on"
# An umount that takes as long as the test wants: as one writing back gigabytes a pod left dirty.
SLOW_UMOUNT_SCRIPT = f"""#!/bin/sh
: > {STARTED}
i=0
while [ ! -e {GO_ON} ] && [ $i -lt 1200 ]; do /bin/sleep 0.1; i=$((i + 1)); done
exec /usr/bin/umount "$@"
"""
SIZES = {"ext4": 64, "xfs": 320}  # mkfs.xfs refuses filesystems under 300 MiB


def unmounted_behind_the_drivers_back(pod):
    """What a reboot leaves: the pod's dir no longer mounted, its slab still tagged for it."""
    node.run("umount", pod.dir)
    assert not os.path.ismount(pod.dir)


def full_then_unmeasured(kubelet, pod):
    assert kubelet.mount(pod).ok
    fill(pod, 0.7)
    name = slab_at(pod)
    unmounted_behind_the_drivers_back(pod)
    return name


def assert_measured_and_replaced(kubelet, name, fs_type):
    nxt = Pod(size_mb=SIZES[fs_type], fs_type=fs_type)
    reply = kubelet.mount(nxt)
    assert reply.ok, reply.message
    assert name not in slabs(), "a 70% full slab nobody measured was handed to the next pod"
    line = node.log_lines()[-1]
    assert line["decision"] == "created new slab"
    (discarded,) = line["discarded_warm"]
    assert discarded.startswith(f"{name}: nobody had measured it and it is ") and "over the usage threshold" in discarded
    check_pool(running=[nxt])


@pytest.mark.parametrize("fs_type", ["ext4", "xfs"])
def test_a_slab_whose_dir_was_not_mounted_at_unmount_is_measured_before_the_next_pod_gets_it(kubelet, fs_type):
    pod = Pod(size_mb=SIZES[fs_type], fs_type=fs_type)
    name = full_then_unmeasured(kubelet, pod)
    reply = kubelet.unmount(pod)
    assert reply.ok and "measures it first" in reply.message
    assert slabs()[name].state == "free" and "ax.usage" not in slabs()[name].tags
    assert_measured_and_replaced(kubelet, name, fs_type)


def test_an_orphan_reused_directly_is_measured_first(kubelet):
    pod = Pod(size_mb=SIZES["ext4"])
    name = full_then_unmeasured(kubelet, pod)
    kubelet.delete_pod(pod)  # deleted while the node was down: no unmount ever comes
    assert slabs()[name].state == "used"
    assert_measured_and_replaced(kubelet, name, "ext4")


def test_an_orphan_freed_by_gc_is_measured_first(kubelet):
    pod = Pod(size_mb=SIZES["ext4"])
    name = full_then_unmeasured(kubelet, pod)
    kubelet.delete_pod(pod)
    node.run(ADMIN, "gc", "--yes")
    assert slabs()[name].state == "free"
    assert_measured_and_replaced(kubelet, name, "ext4")


def test_a_measured_slab_under_the_threshold_is_handed_on_without_measuring_again(kubelet):
    pod = Pod(size_mb=SIZES["ext4"])
    assert kubelet.mount(pod).ok
    fill(pod, 0.2)
    name = slab_at(pod)
    assert kubelet.unmount(pod).ok
    nxt = Pod(size_mb=SIZES["ext4"])
    assert kubelet.mount(nxt).ok and slab_at(nxt) == name
    assert "measured_before_use" not in node.log_lines()[-1]
    check_pool(running=[nxt])


def test_a_warm_slab_claimed_by_a_call_that_died_is_checked_and_replaced_by_the_retry(kubelet):
    first = Pod(size_mb=SIZES["ext4"])
    assert kubelet.mount(first).ok
    name = slab_at(first)
    assert kubelet.unmount(first).ok
    # The warm slab's superblock is gone (a bad sector, a stray dd); a call claims it and is
    # killed before it checks it.
    with open(slabs()[name].device, "r+b") as device:
        device.seek(1024)
        device.write(b"\0" * 1024)
    pod = Pod(size_mb=SIZES["ext4"])
    os.makedirs(pod.dir, mode=0o750, exist_ok=True)
    killed = kubelet.start("mount", pod.dir, pod.options(), env={"AX_VOL_PLUGIN_FAILPOINTS": "mount-after-claim"})
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert slabs()[name].state == "claimed"
    reply = kubelet.mount(pod)  # kubelet's retry: not stuck on the broken slab
    assert reply.ok, reply.message
    assert name not in slabs() and slab_at(pod) != name
    assert node.log_lines()[-1]["discarded_warm"][0].startswith(f"{name}: ")
    check_pool(running=[pod])


@contextlib.contextmanager
def slow_umount():
    for path in (STARTED, GO_ON):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    with open(SLOW_UMOUNT, "x") as script:
        script.write(SLOW_UMOUNT_SCRIPT)
    os.chmod(SLOW_UMOUNT, 0o755)
    try:
        yield
    finally:
        open(GO_ON, "w").close()
        os.unlink(SLOW_UMOUNT)


def test_a_mount_is_not_held_up_by_another_pods_slow_unmount(kubelet):
    leaving, warm = Pod(size_mb=SIZES["ext4"]), Pod(size_mb=SIZES["ext4"] + 4)
    assert kubelet.mount(leaving).ok and kubelet.mount(warm).ok
    assert kubelet.unmount(warm).ok  # a warm slab for the next pod
    arriving = [Pod(size_mb=SIZES["ext4"] + 4), Pod(size_mb=SIZES["ext4"] + 8)]  # one warm, one cold
    with slow_umount():
        unmount = kubelet.start("unmount", leaving.dir)
        deadline = time.monotonic() + 120
        while not os.path.exists(STARTED):
            assert unmount.poll() is None and time.monotonic() < deadline, "the unmount never reached umount"
            time.sleep(0.1)
        for pod in arriving:
            reply = kubelet.mount(pod)
            assert reply.ok, reply.message
            print(f"{pod.size_mb} MiB mount during the slow unmount: {reply.seconds:.2f} s")
        assert unmount.poll() is None, "the mounts waited for the slow unmount to finish"
        open(GO_ON, "w").close()
        out, _ = unmount.communicate(timeout=300)
    reply = node.parse_reply(out.decode(errors="replace"), unmount.returncode, 0.0)
    assert reply.ok, reply.message
    os.rmdir(leaving.dir)
    assert [line["decision"] for line in node.log_lines()[-3:]] == ["reused warm slab", "created new slab", "kept slab"]
    check_pool(running=arriving)
