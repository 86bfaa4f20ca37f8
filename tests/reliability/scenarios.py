"""The five reliability scenarios, each a series of trials ending in the same invariant check.

`level` sizes them: "short" runs inside `make test`, "full" is `make reliability`.
Sizes are small (tens of MiB) so that mkfs is quick under emulation; what is exercised (the order
of LVM, mkfs and mount steps, the tags, the lock) does not depend on the size.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List

from flexdriver import metrics, options
from flexdriver.options import MIN_SIZE_MB
from tests.realkernel import node
from tests.realkernel.conftest import CONFIG_PATH, PROVISIONING, REPO, SPARE, wipe_pool
from tests.realkernel.node import Pod

from . import faults, invariants
from .harness import Scenario, TrialFailed, expect_one_object

LEVELS = {
    # Every named crash step, one case of each kind of fault, one power cut, one storm round,
    # a sample of the known-bad calls and a few generated ones.
    "short": dict(warm_steps=1, anonymous=False, random_kills=2, tool_faults="short", metadata=False,
                  reboot_loops=2, reboot_pods=2, storm_rounds=1, storm_pods=8, known_bad_every=5,
                  fuzz_examples=8, xfs=False, metadata_slab_mb=1),
    "full": dict(warm_steps=5, anonymous=True, random_kills=16, tool_faults="full", metadata=True,
                 reboot_loops=8, reboot_pods=4, storm_rounds=4, storm_pods=20, known_bad_every=1,
                 fuzz_examples=120, xfs=True, metadata_slab_mb=1),
}
# Thin mode (tests.reliability --provisioning thin): a warm mount is a snapshot of the free slab,
# with steps of its own, and a kept slab is trimmed before its umount.
THIN = PROVISIONING == "thin"

COLD_MOUNT_STEPS = [
    "mount-after-evict", "mount-after-decision", "during-lvcreate", "mount-after-lvcreate", "during-mkfs.ext4",
    "mount-after-mkfs",
    "mount-after-format-tag", "mount-before-mount", "mount-after-mount",
]
WARM_MOUNT_STEPS = [
    "mount-after-claim", "mount-after-decision", "mount-before-mount", "mount-after-mount", "mount-after-used-tag",
]
if THIN:
    # The two snapshot steps first: the short level's one warm trial is the new one.
    WARM_MOUNT_STEPS = [
        "mount-after-snapshot", "mount-after-new-uuid", "mount-after-decision", "mount-before-mount",
        "mount-after-mount", "mount-after-used-tag",
    ]
KEEP_UNMOUNT_STEPS = ["unmount-after-measure", "unmount-before-umount", "unmount-after-umount", "unmount-after-keep-tag"]
if THIN:
    KEEP_UNMOUNT_STEPS.insert(1, "unmount-after-trim")
DELETE_UNMOUNT_STEPS = [
    "unmount-after-measure", "unmount-after-doomed-tag", "unmount-before-umount", "unmount-after-umount",
    "unmount-before-delete",
    "unmount-after-delete",
]

SHORT_TOOL_FAULTS = {
    ("lvcreate", "fails"), ("lvchange", "fails after mkfs (format tag)"), ("mkfs.ext4", "fails"),
    ("lvremove", "fails deleting an over-full slab"), ("lvm", "hangs (the shell and every LVM command)"),
}

ADMIN = "/usr/local/sbin/ax-vol-plugin"  # where the suite's install puts the admin command
_sizes = itertools.count(68, 4)


def fresh_size() -> int:
    """A size no earlier pod asked for: its mount cannot reuse a warm slab, so it is cold."""
    return next(_sizes)


# ---- 1. crash at every step ---------------------------------------------------------------


def crash_at_every_step(s: Scenario, level: dict) -> None:
    bystander = Pod(size_mb=64)
    s.mount(bystander, "bystander's data")

    # Each cold trial kills one mount at one step and, once kubelet's retry has mounted the slab,
    # kills its unmount at one step: every named step of both verbs in nine trials.
    unmount_steps = [(step, 0.1, "kept") for step in KEEP_UNMOUNT_STEPS] + [
        (step, 0.8, "deleted") for step in DELETE_UNMOUNT_STEPS
    ]
    pairs = [("ext4", step, unmount) for step, unmount in zip(COLD_MOUNT_STEPS, itertools.cycle(unmount_steps))]
    if level["xfs"]:
        pairs += [
            ("xfs", step.replace("ext4", "xfs"), unmount)
            for _, step, unmount in pairs if step in ("mount-after-lvcreate", "during-mkfs.ext4", "mount-after-mkfs")
        ]
    for fs_type, mount_step, (unmount_step, usage, outcome) in pairs:

        def cold(mount_step=mount_step, unmount_step=unmount_step, usage=usage, outcome=outcome, fs_type=fs_type):
            settings = {}
            if mount_step == "mount-after-evict":
                size_mb, settings = make_eviction_needed(s)
            elif mount_step.startswith("during-mkfs"):
                size_mb = 400 + fresh_size()  # big enough that mkfs is still running when killed
            else:
                size_mb = fresh_size() + (MIN_SIZE_MB.get(fs_type, 0))
            pod = Pod(size_mb=size_mb, fs_type=fs_type)
            slabs_before = set(node.slabs())
            with faults.config(**settings):
                s.killed_call("mount", pod, mount_step)
                s.retry_mount(pod, marker=f"written after a crash at {mount_step}")
            if mount_step == "mount-after-evict" and slabs_before <= set(node.slabs()):
                raise TrialFailed("nothing was evicted: the trial did not test eviction")
            s.checkpoint()
            if usage > 0.5:
                node.fill(pod, usage)
            name = node.slab_at(pod)
            s.killed_call("unmount", pod, unmount_step)
            s.retry_unmount(pod)
            there = node.slabs().get(name)
            if outcome == "kept" and (there is None or there.state != "free"):
                raise TrialFailed(f"slab {name} should be free in the pool, is {there and there.state}")
            if outcome == "deleted" and there is not None:
                raise TrialFailed(f"over-full slab {name} should be deleted, is {there.state}")

        s.trial(f"cold {fs_type} mount killed at {mount_step}; its unmount ({outcome}) killed at {unmount_step}", cold)

    for step in WARM_MOUNT_STEPS[: level["warm_steps"]]:

        def warm(step=step):
            size_mb = fresh_size()
            first = Pod(size_mb=size_mb)
            s.mount(first, "warm cache")
            warm_slab = node.slab_at(first)
            s.unmount(first)
            pod = Pod(size_mb=size_mb)
            s.killed_call("mount", pod, step)
            s.retry_mount(pod)
            if node.read_marker(pod) != "warm cache":
                raise TrialFailed("the retry did not get the warm slab the killed call had claimed")
            if THIN and (node.slab_at(pod) == warm_slab or node.slabs()[warm_slab].state != "free"):
                raise TrialFailed(f"the pod got the warm slab {warm_slab} itself, not a snapshot of it")
            s.write(pod, f"written after a crash at {step}")
            s.checkpoint()
            s.unmount(pod)

        s.trial(f"warm mount killed at {step}", warm)

    if level["anonymous"]:

        def anonymous():
            pod = Pod(size_mb=fresh_size(), volume_type="ax-anonymous")
            s.mount(pod, "scratch")
            name = node.slab_at(pod)
            s.killed_call("unmount", pod, "unmount-before-delete")
            s.retry_unmount(pod)
            if name in node.slabs():
                raise TrialFailed(f"anonymous slab {name} outlived its pod")

        s.trial("anonymous unmount killed at unmount-before-delete", anonymous)

    # Random instants, from outside: SIGKILL of the call's whole process group.
    durations = [r.seconds for r in s.kubelet.calls if r.ok] or [1.0]
    window = max(1.0, 1.5 * statistics.median(durations))
    rng = random.Random(20261201)
    for index in range(level["random_kills"]):
        warm = index % 2 == 1
        deleting = index % 4 in (2, 3)
        mount_delay = round(rng.uniform(0.0, window), 2)
        unmount_delay = round(rng.uniform(0.0, window), 2)

        def random_kill(warm=warm, deleting=deleting, mount_delay=mount_delay, unmount_delay=unmount_delay):
            size_mb = fresh_size()
            if warm:
                first = Pod(size_mb=size_mb)
                s.mount(first, "warm")
                s.unmount(first)
            pod = Pod(size_mb=size_mb)
            if s.kill_at("mount", pod, mount_delay):
                s.retry_mount(pod)
            s.write(pod, "after a random kill")
            s.checkpoint()
            if deleting:
                node.fill(pod, 0.8)
            if s.kill_at("unmount", pod, unmount_delay):
                s.retry_unmount(pod)

        s.trial(
            f"{'warm' if warm else 'cold'} mount SIGKILLed after {mount_delay} s, its unmount "
            f"({'deleting' if deleting else 'keeping'}) after {unmount_delay} s",
            random_kill,
        )
    s.figures.notes.append(f"random kills drawn uniformly from 0 to {window:.1f} s (1.5 x the median call)")
    s.unmount(bystander)


def make_eviction_needed(s: Scenario) -> tuple:
    """Leave a free slab in the pool; return a size and config settings under which a new slab
    only fits if free slabs are evicted. Thick: a size beyond the volume group's free space. Thin
    (sizes are virtual): a high-water mark the pool's data is above until the free slab goes."""
    size_mb = fresh_size() + (200 if THIN else 0)
    warm = Pod(size_mb=size_mb)
    s.mount(warm, "evict me")
    if THIN:
        node.fill(warm, 0.4)  # data of its own in the pool, under the usage threshold: kept
    s.unmount(warm)
    if THIN:
        figures = node.thin_pool_figures()
        evictable = 0.2 * size_mb * (1 << 20)  # half of what it holds
        return fresh_size(), {"thin_high_water": round((figures["data_used_bytes"] - evictable) / figures["size_bytes"], 4)}
    _, free = invariants.volume_group_sizes()
    return free // (1 << 20) + 8, {}


# ---- 2. faults from below -------------------------------------------------------------------


def faults_from_below(s: Scenario, level: dict) -> None:
    bystander = Pod(size_mb=64)
    s.mount(bystander, "bystander's data")

    def refused_then_recovered(label, tool, script, prepare, act, *, unchanged=True, config=None, expect=""):
        """`act` under the fault must fail cleanly; with `unchanged`, it must change nothing.
        Then the fault is undone and kubelet's retry must succeed."""

        def body():
            pod = prepare()
            before = invariants.snapshot()
            started = time.monotonic()
            with faults.config(**(config or {})), faults.replaced_tool(tool, script):
                reply = act(pod)
            took = time.monotonic() - started
            expect_one_object(reply)
            if reply.ok:
                raise TrialFailed(f"succeeded although {tool} {label}: {reply.message}")
            if expect and expect not in reply.message:
                raise TrialFailed(f"message does not say {expect!r}: {reply.message}")
            if unchanged and invariants.snapshot() != before:
                raise TrialFailed(f"a Failure changed the node: {invariants.describe_difference(before, invariants.snapshot())}")
            s.figures.notes.append(f"{tool} {label}: Failure in {took:.1f} s: {reply.message[:160]}")
            recover(pod)

        return body

    def recover(pod):
        if pod.dir in node.slab_mounts() or pod in s.running:
            s.retry_unmount(pod)
        else:
            s.retry_mount(pod, marker="after the fault")
            s.checkpoint()
            s.unmount(pod)

    def room():
        # Free slabs left by earlier trials would make this mount evict some, and a refused
        # call must be seen to change nothing: the admin command gives their space back first.
        done = node.run(ADMIN, "evict", "--keep", "0", "--yes", check=False)
        if done.returncode != 0:
            raise TrialFailed(f"ax-vol-plugin evict failed: {done.stdout.strip()} {done.stderr.strip()}")

    def cold():
        room()
        return Pod(size_mb=fresh_size())

    def warm():
        room()
        size = fresh_size()
        first = Pod(size_mb=size)
        s.mount(first, "warm")
        s.unmount(first)
        return Pod(size_mb=size)

    def mounted(usage=0.1):
        def prepare():
            room()
            pod = Pod(size_mb=fresh_size())
            s.mount(pod, "pod data")
            if usage > 0.5:
                node.fill(pod, usage)
            return pod
        return prepare

    def mount(pod):
        return s.kubelet.mount(pod)

    def unmount(pod):
        return s.kubelet.call("unmount", pod.dir)

    fail = faults.FAIL_SCRIPT
    cases = [
        # LVM commands fail alone and inside the lvm shell (faults.LVM_FAIL_WRAPPER).
        ("fails", "lvs", fail, cold, mount, True),
        ("fails", "lvcreate", fail, cold, mount, True),
        ("fails on a warm snapshot", "lvcreate", fail, warm, mount, True) if THIN else
        ("fails on a warm claim", "lvchange", fail, warm, mount, True),
        ("fails after mkfs (format tag)", "lvchange", fail, cold, mount, False),
        ("fails", "mkfs.ext4", fail, cold, mount, True),
        ("fails on a new slab", "mount", fail, cold, mount, True),
        ("fails while releasing", "lvchange", fail, mounted(), unmount, False),
        ("fails", "umount", fail, mounted(), unmount, True),
    ]
    if level["tool_faults"] == "short":
        cases = [c for c in cases if (c[1], c[0]) in SHORT_TOOL_FAULTS]
    for label, tool, script, prepare, act, unchanged in cases:
        s.trial(f"{tool} {label}", refused_then_recovered(label, tool, script, prepare, act, unchanged=unchanged,
                                                          expect=tool))

    def removal_deferred():
        # A slab LVM cannot remove (as when its device is busy in another mount namespace) fails
        # no call: the pod's unmount succeeds, the slab stays doomed, and the first call after
        # the fault is gone takes it away.
        pod = mounted(0.8)()
        with faults.replaced_tool("lvremove", fail):
            reply = s.kubelet.unmount(pod)
        expect_one_object(reply)
        if not reply.ok or "could not be removed yet" not in reply.message:
            raise TrialFailed(f"a slab lvremove could not remove failed or misreported the pod's unmount: {reply.message}")
        s.running.pop(pod, None)
        s.figures.notes.append(f"lvremove fails deleting an over-full slab: Success, slab left doomed: {reply.message[:160]}")
        later = cold()
        s.mount(later, "after the deferred removal")
        s.unmount(later)

    if level["tool_faults"] == "full" or ("lvremove", "fails deleting an over-full slab") in SHORT_TOOL_FAULTS:
        s.trial("lvremove fails deleting an over-full slab", removal_deferred)

    # Hangs: a small command timeout; the whole process group of the hung command must die.
    hang_cases = [
        ("hangs (the shell and every LVM command)", "lvm", cold, mount),
        ("hangs", "lvcreate", cold, mount),
        ("hangs", "mount", cold, mount),
        ("hangs", "umount", mounted(), unmount),
    ]
    if level["tool_faults"] == "short":
        hang_cases = [c for c in hang_cases if (c[1], c[0]) in SHORT_TOOL_FAULTS]
    for label, tool, prepare, act in hang_cases:
        body = refused_then_recovered(label, tool, faults.HANG_SCRIPT, prepare, act, unchanged=(tool != "mount"),
                                      config={"command_timeout_s": 4}, expect="no answer after 4 s")
        s.trial(f"{tool} {label} (command_timeout_s = 4)", body, extra_processes=(f"sleep {faults.HANG_MARKER}",))

    corrupt_warm_slabs(s, level)
    s.unmount(bystander)
    if level["metadata"] and not THIN:  # a thin pool's own full-pool case: tests/realkernel/test_thin.py
        metadata_full(s, level)
    device_vanishes(s)


def corrupt_warm_slabs(s: Scenario, level: dict) -> None:
    """A free slab whose filesystem is damaged: the next pod must get a good slab in the same call."""

    def zero_at(device: str, offset: int, length: int) -> None:
        fd = os.open(device, os.O_WRONLY)
        try:
            os.pwrite(fd, bytes(length), offset)
            os.fsync(fd)
        finally:
            os.close(fd)

    def ext4_group_descriptors(device: str) -> int:
        out = node.run("dumpe2fs", "-h", device).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        block = int(fields["Block size"])
        first = int(fields["First block"])
        return (first + 1) * block, block

    def error_flag(device):
        node.run("tune2fs", "-E", "force_fsck", device)

    def no_superblock(device):
        zero_at(device, 1024, 1024)

    def bad_group_descriptors(device):
        offset, block = ext4_group_descriptors(device)
        zero_at(device, offset, block)

    def no_xfs_superblock(device):
        zero_at(device, 0, 4096)

    damage = [
        ("ext4 marked with errors", "ext4", error_flag),
        ("ext4 superblock zeroed", "ext4", no_superblock),
        ("ext4 group descriptors zeroed (only mount notices)", "ext4", bad_group_descriptors),
        ("xfs superblock zeroed", "xfs", no_xfs_superblock),
    ]
    if level["tool_faults"] == "short":
        damage = [damage[0], damage[2]]
    for label, fs_type, corrupt in damage:

        def body(fs_type=fs_type, corrupt=corrupt):
            size = fresh_size() + MIN_SIZE_MB.get(fs_type, 0)
            first = Pod(size_mb=size, fs_type=fs_type)
            s.mount(first, "cache about to be damaged")
            name = node.slab_at(first)
            s.unmount(first)
            device = node.slabs()[name].device
            corrupt(device)
            if not damage_is_visible(device, fs_type):
                raise TrialFailed("fsck -n finds nothing wrong: the damage did not take")
            pod = Pod(size_mb=size, fs_type=fs_type)
            reply = s.mount(pod)
            if node.slab_at(pod) == name or name in node.slabs():
                raise TrialFailed(f"the damaged slab {name} was handed on or kept: {reply.message}")
            if node.read_marker(pod) is not None:
                raise TrialFailed("the new slab is not fresh")
            s.note_retries(1)
            s.write(pod, "on a fresh slab")
            s.checkpoint()
            s.unmount(pod)

        s.trial(f"warm slab damaged: {label}", body)


def damage_is_visible(device: str, fs_type: str) -> bool:
    """What an admin's read-only check says: fsck -n fails, or (for the error flag, which a
    read-only fsck cannot clear) the superblock says the filesystem has errors."""
    if fs_type == "xfs":
        return node.run("xfs_repair", "-n", device, check=False).returncode != 0
    if node.run("e2fsck", "-n", "-f", device, check=False).returncode != 0:
        return True
    header = node.run("dumpe2fs", "-h", device, check=False).stdout
    return any(line.startswith("Filesystem state:") and "error" in line for line in header.splitlines())


def metadata_full(s: Scenario, level: dict) -> None:
    """A volume group whose metadata area fills up: mounts fail cleanly, nothing is half-left."""

    def body():
        wipe_pool()
        # LVM rounds the metadata area up to the data alignment: a small alignment keeps it small.
        node.run("pvcreate", "--yes", "--metadatasize", "32k", "--dataalignment", "16k", SPARE)  # LVM's minimum
        # 1 MiB extents and 1 MiB slabs: the small spare disk holds more slabs than the area can describe.
        node.run("vgcreate", "--yes", "--physicalextentsize", "1m", node.VOLUME_GROUP, SPARE)
        mda = node.run("pvs", "--noheadings", "--units", "b", "-o", "pv_mda_size", SPARE).stdout.strip()
        faults.write_config(device=SPARE)
        pods: List[Pod] = []
        refusal = None
        for index in range(60):
            pod = Pod(size_mb=level["metadata_slab_mb"])
            reply = s.kubelet.mount(pod)
            expect_one_object(reply)
            if not reply.ok:
                refusal = reply
                break
            s.running[pod] = None
            s.write(pod, f"pod {index}")
            pods.append(pod)
        if refusal is None:
            raise TrialFailed("60 slabs fitted: the metadata area never filled")
        if "no room" in refusal.message:
            raise TrialFailed(f"the volume group ran out of extents before metadata: {refusal.message}")
        s.figures.notes.append(f"metadata area ({mda}) full after {len(pods)} slabs: {refusal.message[:200]}")
        s.checkpoint("metadata full: after the refusal")
        for pod in pods[: len(pods) // 2]:
            s.retry_unmount(pod)
        late = Pod(size_mb=level["metadata_slab_mb"])
        s.retry_mount(late, marker="after space in the metadata came back")
        s.checkpoint("metadata full: after releasing half")
        for pod in pods[len(pods) // 2:] + [late]:
            s.retry_unmount(pod)

    try:
        s.trial("volume group with a full metadata area", body)
    finally:
        faults.write_config()
        wipe_pool()
        s.running.clear()  # wiped with the pool: none of its pods runs on in the next trial


def device_vanishes(s: Scenario) -> None:
    """The slab disk drops off (every I/O fails): calls fail cleanly; when it is back, retries work."""
    fragile = faults.FragileDevice(SPARE)

    def body():
        wipe_pool()
        fragile.create()
        faults.write_config(device=fragile.path)
        running = Pod(size_mb=8)
        s.mount(running, "written before the disk went away")
        released = Pod(size_mb=8)
        s.mount(released, "warm")
        s.unmount(released)
        fragile.vanish()
        newcomer = Pod(size_mb=8)
        replies = []
        for verb, pod in (("mount", newcomer), ("unmount", running)):
            started = time.monotonic()
            reply = s.kubelet.mount(pod) if verb == "mount" else s.kubelet.call("unmount", pod.dir)
            expect_one_object(reply)
            replies.append(f"{verb}: {reply.status} in {time.monotonic() - started:.1f} s: {reply.message[:160]}")
            if verb == "mount" and reply.ok:
                raise TrialFailed(f"a mount succeeded on a vanished disk: {reply.message}")
        s.figures.notes.append("disk gone: " + " | ".join(replies))
        fragile.come_back()
        if os.path.ismount(running.dir):
            s.retry_unmount(running)
        else:
            s.retry_unmount(running)  # kubelet retries the unmount that failed
        s.retry_mount(newcomer, marker="after the disk came back")
        s.checkpoint("disk back")
        s.unmount(newcomer)

    try:
        s.trial("slab disk vanishes (dm error table) and comes back", body)
    finally:
        for point in node.slab_mounts():
            node.run("umount", "-l", point, check=False)
        node.run("vgchange", "-an", node.VOLUME_GROUP, check=False)
        node.run("vgremove", "--force", "--force", "--yes", node.VOLUME_GROUP, check=False)
        node.run("pvremove", "--force", "--force", "--yes", fragile.path, check=False)
        fragile.remove()
        faults.write_config()
        wipe_pool()
        s.running.clear()


# ---- 3. reboot loops --------------------------------------------------------------------------


def power_cut() -> None:
    """What a node's reboot does to the pool, all behind the driver's back."""
    for point in sorted(node.slab_mounts(), key=len, reverse=True):
        node.run("umount", point)
    node.run("vgchange", "-an", node.VOLUME_GROUP)
    node.run("rm", "-rf", "/run/ax-vol-plugin")


def reboot_loops(s: Scenario, level: dict) -> None:
    rng = random.Random(7)
    sizes = [96, 128]
    pods = [Pod(size_mb=sizes[i % 2], fs_type="ext4") for i in range(level["reboot_pods"])]
    if level["xfs"]:
        pods[0] = Pod(size_mb=MIN_SIZE_MB["xfs"] + 20, fs_type="xfs")
    for pod in pods:
        s.mount(pod, f"boot 0 data of {pod.uid[:8]}")
    for loop in range(1, level["reboot_loops"] + 1):

        def body(loop=loop):
            # A mount in flight when the power goes (every other loop).
            inflight = None
            if loop % 2 == 0:
                inflight = Pod(size_mb=rng.choice(sizes))
                s.kill_at("mount", inflight, rng.uniform(0.1, 1.5))
                s.running.pop(inflight, None)
            leaving = rng.choice(list(s.running)) if len(s.running) > 1 else None
            power_cut()
            if loop % 3 != 0:
                node.run("vgchange", "-ay", node.VOLUME_GROUP)  # nodes that auto-activate; the others leave it to the driver
            # Kubelet comes back: mounts again what is still running, unmounts what was deleted meanwhile.
            for pod, marker in list(s.running.items()):
                if pod is leaving:
                    continue
                s.retry_mount(pod)
                s.running[pod] = marker  # what the checker must read back: the last write before the cut
            if leaving is not None:
                os.makedirs(leaving.dir, exist_ok=True)
                s.running.pop(leaving)
                s.retry_unmount(leaving)
                s.kubelet.delete_pod(leaving)
            if inflight is not None:
                s.retry_mount(inflight, marker=f"boot {loop} data")
            s.checkpoint()
            for pod in list(s.running):
                s.write(pod, f"boot {loop} data of {pod.uid[:8]}")
            newcomer = Pod(size_mb=rng.choice(sizes))
            s.mount(newcomer, f"boot {loop} data of {newcomer.uid[:8]}")

        s.trial(f"power cut {loop}" + (" (volume group left inactive)" if loop % 3 == 0 else ""), body)
    for pod in list(s.running):
        s.unmount(pod)


# ---- 4. storms --------------------------------------------------------------------------------


def storms(s: Scenario, level: dict) -> None:
    rng = random.Random(42)
    sizes = [64, 128, 192, 256]
    no_room = {"refusals": 0}
    pending: List[Pod] = []

    def mount_one(pod: Pod):
        reply = s.kubelet.mount(pod)
        expect_one_object(reply)
        return pod, reply

    def unmount_one(pod: Pod):
        reply = s.kubelet.call("unmount", pod.dir)
        expect_one_object(reply)
        if reply.ok:
            os.rmdir(pod.dir)
        return pod, reply

    def wave(work, workers):
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda item: item[0](item[1]), work))

    def settle(results, retried):
        for pod, reply in results:
            verb = "unmount" if pod in leaving_now else "mount"
            if reply.ok:
                if verb == "mount":
                    s.running[pod] = node.read_marker(pod)
                    s.write(pod, f"storm data of {pod.uid[:8]}")
                else:
                    s.running.pop(pod, None)
            elif verb == "mount" and "no room" in reply.message:
                no_room["refusals"] += 1
                retried.append(pod)
            else:
                raise TrialFailed(f"{verb} of pod {pod.uid[:8]} failed: {reply.message}")

    leaving_now: set = set()
    for round_ in range(1, level["storm_rounds"] + 1):

        def body(round_=round_):
            nonlocal pending
            arriving = [Pod(size_mb=rng.choice(sizes)) for _ in range(level["storm_pods"])] + pending
            running = list(s.running)
            leaving = rng.sample(running, len(running) // 2) if running else []
            for pod in leaving[: len(leaving) // 2]:
                node.fill(pod, 0.7)  # some go over the threshold and are deleted
            leaving_now.clear()
            leaving_now.update(leaving)
            work = [(mount_one, p) for p in arriving] + [(unmount_one, p) for p in leaving]
            rng.shuffle(work)
            retried: List[Pod] = []
            settle(wave(work, len(work)), retried)
            leaving_now.clear()
            pending = retried
            s.checkpoint()

        s.trial(f"storm round {round_}: concurrent mounts and unmounts", body)

    def drain():
        nonlocal pending
        leaving_now.update(s.running)
        retried: List[Pod] = []
        settle(wave([(unmount_one, p) for p in list(s.running)], 16), retried)
        leaving_now.clear()
        # The pods still waiting for room get it now, as kubelet's retries would: each runs and
        # ends in turn (all of them at once may be more than the volume group holds).
        for pod in pending:
            s.retry_mount(pod, marker="late")
            s.checkpoint()
            s.unmount(pod)
        pending = []
        s.checkpoint()
        leaving_now.update(s.running)
        settle(wave([(unmount_one, p) for p in list(s.running)], 16), [])
        leaving_now.clear()
        if node.slab_mounts():
            raise TrialFailed(f"slabs still mounted after every pod left: {node.slab_mounts()}")

    s.trial("storm drain: every pod leaves", drain)
    s.figures.notes.append(
        f"{no_room['refusals']} mounts refused for no room in the volume group and retried later, as kubelet does"
    )


# ---- 5. hostile input -------------------------------------------------------------------------


def hostile_input(s: Scenario, level: dict) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.realkernel.test_bad_input import bad_calls

    live = Pod(size_mb=64)
    s.mount(live, "live data")
    warm = Pod(size_mb=64)
    s.mount(warm, "warm")
    s.unmount(warm)
    outcomes: Dict[str, int] = {"Failure": 0, "Success": 0}

    def refused_unchanged(argv, pod_dir=None):
        before = invariants.snapshot()
        if pod_dir:
            os.makedirs(pod_dir, mode=0o750, exist_ok=True)
        reply = s.kubelet.call(*argv)
        expect_one_object(reply)
        outcomes[reply.status] = outcomes.get(reply.status, 0) + 1
        if reply.ok and argv[0] == "mount" and len(argv) == 3:
            # Valid after all: it must be a real slab on that dir; undo it like kubelet would.
            if node.slab_mounts().get(os.path.realpath(argv[1])) is None:
                raise TrialFailed(f"Success without a slab mounted: {argv!r} -> {reply.message}")
            undo = s.kubelet.call("unmount", argv[1])
            if not undo.ok:
                raise TrialFailed(f"unmount after a fuzzed mount failed: {undo.message}")
            return
        after = invariants.snapshot()
        if after != before:
            raise TrialFailed(f"refused call {argv!r} changed the node: {invariants.describe_difference(before, after)}")

    def known_bad():
        pod = Pod(size_mb=64)
        calls = list(bad_calls(pod))[:: level["known_bad_every"]]
        for argv in calls:
            before = invariants.snapshot()
            os.makedirs(pod.dir, mode=0o750, exist_ok=True)
            reply = s.kubelet.call(*argv)
            expect_one_object(reply)
            if reply.ok or invariants.snapshot() != before:
                raise TrialFailed(f"known-bad call {argv!r} was not refused cleanly: {reply.raw[:200]}")
        node.run("rm", "-rf", pod.pod_dir)

    every = "" if level["known_bad_every"] == 1 else f" (every {level['known_bad_every']}th)"
    s.trial(f"the known-bad calls of tests/realkernel/test_bad_input.py{every}", known_bad)
    hostile_node(s)

    keys = ["kubernetes.io/fsType", "kubernetes.io/readwrite", "kubernetes.io/pod.uid", "kubernetes.io/pod.namespace",
            "size_mb", "ax_vol_type", "cache_scope"]
    nasty = ["", " ", "64", "0", "-1", "64 ", "1e3", "0x40", "99999999999", "ext4", "xfs", "btrfs", "ro", "rw",
             "ax-anonymous", "ax-docker-graph-storage", "namespace", "node", "../../etc", "$(reboot)", "a;b", "\n",
             "\x00", "é", "a" * 300, "--help", "-o", "ext4,xfs"]
    values = st.one_of(st.sampled_from(nasty), st.text(max_size=40), st.integers(), st.none(), st.booleans(),
                       st.lists(st.integers(), max_size=2), st.floats(allow_nan=False))
    options = st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=20)), values, max_size=8)
    base = json.loads(Pod().options())
    merged = options.map(lambda extra: json.dumps({**base, **extra}))
    raw_json = st.one_of(merged, options.map(json.dumps), st.text(max_size=200),
                         st.sampled_from(["{", "[]", "null", "1", '"x"', '{"size_mb": {"a": 1}}', "{" * 5000]))
    dir_kinds = st.sampled_from(["pod", "relative", "dotdot", "missing", "file", "root", "long", "newline", "live"])
    # Mostly mount, the verb with input worth attacking; the others now and then.
    verbs = st.one_of(st.just("mount"), st.sampled_from(["unmount", "init", "attach", "getvolumename", "", "MOUNT", "--help"]))
    extra_args = st.lists(st.text(max_size=10), max_size=2)

    def a_dir(kind: str) -> tuple:
        pod = Pod(size_mb=64)
        if kind == "pod":
            return pod.dir, pod.dir
        if kind == "live":
            return live.dir, None
        return {
            "relative": ("var/lib/kubelet/x", None),
            "dotdot": (pod.dir + "/../../../../../etc", None),
            "missing": (pod.dir + "/missing", None),
            "file": ("/etc/hostname", None),
            "root": ("/", None),
            "long": ("/" + "d" * 5000, None),
            "newline": (pod.dir + "\nx", None),
        }[kind]

    @settings(max_examples=level["fuzz_examples"], deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(verbs, dir_kinds, raw_json, extra_args, st.integers(0, 3))
    def fuzz(verb, dir_kind, options_json, extra, shape):
        mount_dir, make_dir = a_dir(dir_kind)
        argv = [verb, mount_dir, options_json, *extra][: shape + 1] if shape < 3 else [verb, mount_dir, options_json, *extra]
        if verb == "mount" and argv[1:2] == [live.dir]:
            argv = argv[:1] + [live.dir + "-other"] + argv[2:]
        if argv[0] == "unmount" and len(argv) > 1 and argv[1] == live.dir:
            return  # unmounting a running pod is valid; it is not hostile input
        refused_unchanged(argv, make_dir)
        if make_dir:
            node.run("rm", "-rf", os.path.dirname(os.path.dirname(os.path.dirname(make_dir))))

    s.trial(f"{level['fuzz_examples']} generated calls (hypothesis): argv and options JSON", fuzz)
    s.figures.notes.append(f"fuzzed calls answered: {outcomes}")
    s.unmount(live)


# ---- 5b. a hostile user or pod on the node (issue #14, items 1 to 3) ----------------------------

NOBODY = 65534
INSTALL = f"{REPO}/install/install.sh"
# A process that names itself kubelet (prctl PR_SET_NAME, 15) and sleeps, with kubelet's flags.
AS_KUBELET = "import ctypes, time; ctypes.CDLL(None).prctl(15, b'kubelet', 0, 0, 0); time.sleep(300)"


def start_named_kubelet(uid: int, *flags: str) -> subprocess.Popen:
    as_user = [] if uid == 0 else ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    proc = subprocess.Popen([*as_user, "/usr/bin/python3", "-c", AS_KUBELET, *flags], cwd="/")
    for _ in range(1500):
        with open(f"/proc/{proc.pid}/comm") as handle:
            if handle.read().strip() == "kubelet":
                return proc
        time.sleep(0.02)
    proc.kill()
    raise TrialFailed("the process never took the name kubelet")


def dir_of(uid: int, path: str, mode: int = 0o755) -> str:
    node.run("rm", "-rf", path)
    os.makedirs(path, mode=mode)
    os.chmod(path, mode)
    os.chown(path, uid, uid)
    return path


def untouched(path: str) -> tuple:
    """What any file made in `path` (even one removed again) changes."""
    st = os.lstat(path)
    return sorted(os.listdir(path)), st.st_mtime_ns, st.st_ctime_ns


@contextlib.contextmanager
def config_with(*lines: str):
    """The node config with `lines` added, as it was afterwards."""
    with open(CONFIG_PATH) as handle:
        kept = handle.read()
    with open(CONFIG_PATH, "w") as handle:
        handle.write(kept + "".join(f"{line}\n" for line in lines))
    try:
        yield
    finally:
        with open(CONFIG_PATH, "w") as handle:
            handle.write(kept)


def hostile_node(s: Scenario) -> None:
    """What a user of the node, or a pod, could try against root: each trial can fail (it checks
    the attack's target, not the driver's word for it)."""
    evil_dir = "/tmp/ax-hostile-plugins"

    def install_with_a_kubelet(uid: int) -> tuple:
        dir_of(NOBODY, evil_dir)
        before = untouched(evil_dir)
        driver_before = os.stat(node.DRIVER)
        proc = start_named_kubelet(uid, f"--volume-plugin-dir={evil_dir}")
        try:
            result = node.run(INSTALL, "--driver", f"{REPO}/dist/vol_plugin", check=False)
        finally:
            proc.kill()
            proc.wait()
        if untouched(evil_dir) != before:
            raise TrialFailed(f"install.sh wrote into {evil_dir}, a dir uid {NOBODY} owns: {untouched(evil_dir)[0]}")
        return proc.pid, result, driver_before

    def untrusted_kubelet():
        pid, result, _ = install_with_a_kubelet(NOBODY)
        if result.returncode != 0 or f"ignoring process {pid} named kubelet" not in result.stderr:
            raise TrialFailed(f"install.sh did not pass over uid {NOBODY}'s kubelet: rc {result.returncode}, "
                              f"{result.stdout[-300:]} {result.stderr[-300:]}")
        if f"plugin dir {node.PLUGIN_DIR} (kubelet's default" not in result.stdout:
            raise TrialFailed(f"install.sh used another plugin dir: {result.stdout[-300:]}")

    s.trial(f"install.sh as root, no --plugin-dir, while uid {NOBODY} runs a process named kubelet "
            f"(PR_SET_NAME) with --volume-plugin-dir={evil_dir}, a dir it owns", untrusted_kubelet)

    def trusted_kubelet_untrusted_dir():
        _, result, driver_before = install_with_a_kubelet(0)
        if result.returncode == 0 or f"refusing plugin dir {evil_dir}" not in result.stderr:
            raise TrialFailed(f"install.sh took {evil_dir}: rc {result.returncode}, {result.stderr[-300:]}")
        after = os.stat(node.DRIVER)
        if (after.st_ino, after.st_mtime_ns) != (driver_before.st_ino, driver_before.st_mtime_ns):
            raise TrialFailed("a refused install.sh replaced the installed driver")

    s.trial(f"install.sh as root, no --plugin-dir, while root's kubelet names {evil_dir}, a dir uid "
            f"{NOBODY} owns", trusted_kubelet_untrusted_dir)

    victim = "/etc/ax-hostile-victim"  # a root-owned file only root may read

    def metrics_through(metrics_dir: str, link_dir: str, refused: bool):
        with open(victim, "w") as handle:
            handle.write("root's secret\n")
        os.chmod(victim, 0o600)
        victim_before = os.stat(victim)
        with open("/proc/loadavg") as handle:
            last_pid = int(handle.read().split()[4])  # the pid the kernel handed out last
        # The names the temp file of the calls to come may take: every pid they may get.
        for pid in range(last_pid + 1, last_pid + 3000):
            os.symlink(victim, os.path.join(link_dir, f".{metrics.PROM_FILE}.{pid}"))
        logged = len(node.log_lines())
        pod = Pod(size_mb=64)
        with config_with(f"metrics_dir = {metrics_dir}"):
            s.mount(pod)
            s.unmount(pod)
            expect_one_object(s.kubelet.call("mount", pod.dir + "-x", '{"size_mb": "-1"}'))
        after = os.stat(victim)
        with open(victim) as handle:
            kept = handle.read()
        os.unlink(victim)
        if kept != "root's secret\n" or after.st_mtime_ns != victim_before.st_mtime_ns:
            raise TrialFailed(f"{victim} was written through a link in {link_dir}: it reads {kept[:80]!r}")
        lines = node.log_lines()[logged:]
        errors = [line.get("metrics_error", "") for line in lines]
        written = os.path.exists(os.path.join(metrics_dir, metrics.PROM_FILE))
        if refused:
            if written:
                raise TrialFailed(f"metrics were written into {metrics_dir}")
            if len(lines) != 3 or not all("metrics dir refused" in e for e in errors):
                raise TrialFailed(f"not every call's log line says metrics were refused: {errors}")
        elif not written or any(errors):
            raise TrialFailed(f"metrics not written into the trusted {metrics_dir}: {errors}")

    def dir_of_another_user():
        textfile = dir_of(NOBODY, "/tmp/ax-hostile-textfile")
        metrics_through(textfile, textfile, refused=True)
        node.run("rm", "-rf", textfile)

    s.trial(f"metrics_dir owned by uid {NOBODY}, a link to a root-only file planted at the temp name of "
            "every coming pid; a mount, an unmount and a refused mount", dir_of_another_user)

    def under_a_dir_of_another_user():
        home = dir_of(NOBODY, "/tmp/ax-hostile-home")
        textfile = dir_of(0, f"{home}/textfile")
        metrics_through(textfile, textfile, refused=True)
        node.run("rm", "-rf", home)

    s.trial(f"metrics_dir root's but inside a dir uid {NOBODY} owns (Debian's textfile dir under the "
            "prometheus user's home), links planted as above", under_a_dir_of_another_user)

    def leftover_link_in_a_trusted_dir():
        textfile = dir_of(0, "/run/ax-hostile-textfile")
        metrics_through(textfile, textfile, refused=False)
        node.run("rm", "-rf", textfile)

    s.trial("metrics_dir only root can change, a link left at the temp name of every coming pid: "
            "metrics written, the link's target untouched", leftover_link_in_a_trusted_dir)

    def above_the_size_cap():
        cap = 128
        # Without the cap this request fits only once the warm slab is evicted. A thin pool's
        # sizes are virtual (its volume group has no free extents): there, just above the cap.
        free_mb = cap if THIN else invariants.volume_group_sizes()[1] >> 20
        greedy = Pod(size_mb=free_mb + 32)
        long_value = "k" * 5000
        free_slabs = {name for name, view in node.slabs().items() if view.state == "free"}
        if not free_slabs:
            raise TrialFailed("no warm slab to lose: the trial would prove nothing")
        with config_with(f"max_size_mb = {cap}"):
            for pod, what in ((greedy, f"max_size_mb {cap}"),
                              (Pod(size_mb=free_mb + 32, extra=(("cache_scope", long_value),)), "cache_scope")):
                before = invariants.snapshot()
                logged = len(node.log_lines())
                reply = s.kubelet.mount(pod)
                expect_one_object(reply)
                if reply.ok or what not in reply.message:
                    raise TrialFailed(f"a {pod.size_mb} MiB request above max_size_mb {cap} was not refused: {reply.raw[:300]}")
                if invariants.snapshot() != before:
                    raise TrialFailed(f"the refused request changed the node: "
                                      f"{invariants.describe_difference(before, invariants.snapshot())}")
                logged_messages = [line.get("message", "") for line in node.log_lines()[logged:]]
                for text in [reply.message, *logged_messages]:
                    if "k" * (options.SHOWN_CHARS + 1) in text:
                        raise TrialFailed(f"more than {options.SHOWN_CHARS} characters of a pod's value echoed "
                                          f"({len(text)} characters of message)")
        still_free = {name for name, view in node.slabs().items() if view.state == "free"}
        if still_free != free_slabs:
            raise TrialFailed(f"warm slabs lost: {sorted(free_slabs - still_free)}")

    s.trial("max_size_mb 128: a request above it that fits only by evicting the warm slab, then one with a "
            "5,000-character cache_scope", above_the_size_cap)


SCENARIOS = [
    ("crash", "crash at every step, and at random instants", crash_at_every_step),
    ("faults", "faults from below: failing and hanging tools, full metadata, a vanishing disk, damaged slabs", faults_from_below),
    ("reboot", "power cuts and kubelet's reconstruction, within one boot", reboot_loops),
    ("storm", "concurrent mounts and unmounts, mixed sizes, volume group near full", storms),
    ("hostile", "hostile input: known-bad calls and generated argv and options", hostile_input),
]
