"""A slab whose device stays busy after kubelet's umount, because its filesystem is still mounted
in another mount namespace (a container runtime's, a privileged pod's): it must not fail any other
pod's call, and it goes once it is no longer busy."""

from __future__ import annotations

import os
import subprocess
import time

from . import node
from .node import Pod, check_pool, slab_at, slabs

HOLD_AT = "/run/ax-test-holder"


def hold_in_another_mount_namespace(pod: Pod) -> subprocess.Popen:
    """A process in a mount namespace of its own, made while the pod's slab is mounted, with the
    slab bind-mounted at a path of its own there, as containerd bind-mounts a pod's volume into a
    container's root: it keeps the device open after the pod's umount. (Its copy at the pod's own
    dir would not: the kernel detaches mounts in every namespace when their mount point is
    removed, as kubelet removes the pod's volume dir.)"""
    ours = os.readlink("/proc/self/ns/mnt")
    os.makedirs(HOLD_AT, exist_ok=True)
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               f'mount --bind "$0" {HOLD_AT} && exec sleep 900', pod.dir])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            theirs = os.readlink(f"/proc/{holder.pid}/ns/mnt")
            with open(f"/proc/{holder.pid}/comm") as handle:
                running = handle.read().strip() == "sleep"
        except OSError:
            theirs, running = ours, False
        if theirs != ours and running:
            return holder
        time.sleep(0.1)
    holder.kill()
    raise AssertionError("the holder's mount namespace did not come up")


def test_a_slab_busy_in_another_mount_namespace_fails_no_call_and_goes_once_free(kubelet):
    anonymous = Pod(size_mb=64, volume_type="ax-anonymous")  # deleted at unmount: removal is required
    assert kubelet.mount(anonymous).ok
    name = slab_at(anonymous)
    holder = hold_in_another_mount_namespace(anonymous)
    try:
        reply = kubelet.unmount(anonymous)  # the pod's own part is done: its dir is unmounted
        assert reply.ok and "could not be removed yet" in reply.message, reply
        assert slabs()[name].state == "doomed"
        assert node.log_lines()[-1]["unremovable"] == [name]

        # Every other pod on the node goes on: a cold mount, its unmount, a warm mount (whose
        # plan carries the busy slab as garbage to remove).
        cold = Pod(size_mb=96)
        assert kubelet.mount(cold).ok and kubelet.unmount(cold).ok
        warm = Pod(size_mb=96)
        reply = kubelet.mount(warm)
        assert reply.ok, reply
        assert node.log_lines()[-1]["decision"] == "reused warm slab"
        assert node.log_lines()[-1]["unremovable"] == [name]
        assert name in slabs()
    finally:
        holder.kill()
        holder.wait()

    # Not busy any more: the next call takes it away, and the pool is as it should be.
    later = Pod(size_mb=128)
    assert kubelet.mount(later).ok
    assert name not in slabs()
    assert name in node.log_lines()[-1]["reclaimed"]
    check_pool(running=[warm, later])
