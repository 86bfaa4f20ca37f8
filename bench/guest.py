"""The benchmark's guest side: one CI node with blank disks, the installed driver driven exactly
as kubelet drives it (tests/realkernel/node.py's Kubelet), and each figure's floor measured
alternately with it. Writes bench.json into the run's results dir."""

from __future__ import annotations

import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List

from bench.stats import figure, timed
from flexdriver.volume_group import THIN_POOL_NAME
from tests.realkernel import node
from tests.realkernel.dind import DAEMON_LOG, JobResult, build_image_tarball, run_ci_job
from tests.realkernel.node import Kubelet, Pod

VG = node.VOLUME_GROUP
PYTHON_FLOOR = ["python3", "-I", "-S", "-c", "pass"]
ANONYMOUS = "ax-anonymous"
QUICK = os.environ.get("BENCH_QUICK") == "1"  # a smoke run of the bench itself: fewer, smaller
REPS = {"init": 20, "warm": 6, "cold": 2, "scale": 3, "parallel": 3, "dind": 2, "csi": 10}
if QUICK:
    REPS = {key: min(value, 2) for key, value in REPS.items()}
WARM_MB = 1024
COLD_MB = 2048 if QUICK else 10240
PARALLEL = 8
PARALLEL_MB = 2048  # eight at once: mkfs dominates at any size; smaller keeps the run short
SCALE_LEVELS = (5, 20) if QUICK else (5, 100, 500)
DIND_MB = 4096
IMAGE_MB = 32 if QUICK else 300
BURST = 8  # a push that triggers eight CI jobs at once
BURST_MB = 3072  # a size no other section uses, so the burst's warm job is the only cache of it
ADMIN = "/usr/local/sbin/ax-vol-plugin"
CONFIG_PATH = "/etc/ax-vol-plugin/vol_plugin.conf"  # as node.set_up_blank_node writes it
LVM_PROGRAMS = {"lvm", "lvs", "vgs", "pvs", "lvchange", "lvcreate", "lvremove", "vgcreate", "vgchange"}
PROFILE_SCRIPT = r"""
import cProfile, sys
sys.path.insert(0, sys.argv[1])
out = sys.argv[2]
sys.argv = [sys.argv[1]] + sys.argv[3:]
from flexdriver.__main__ import entry
profile = cProfile.Profile()
try:
    profile.runcall(entry)
except SystemExit:
    pass
profile.dump_stats(out)
"""


def log(text: str) -> None:
    print(f"bench [{time.strftime('%H:%M:%S')}] {text}", flush=True)


# A section runs 1.5-5 minutes on a quiet host. One that hung once (DinD, no disk writes, busy
# vCPUs) left nothing to say why; past this, the section's processes are logged, and again each
# time it passes again, so that the run's log shows what was running.
WATCH_S = 900


class SectionWatch:
    """Logs what the guest is running while a section takes longer than WATCH_S."""

    def __init__(self, name: str, every_s: float = WATCH_S) -> None:
        self.name = name
        self.every_s = every_s
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> SectionWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()

    def _watch(self) -> None:
        waited = 0.0
        while not self.stopped.wait(self.every_s):
            waited += self.every_s
            log(f"{self.name}: still running after {waited:.0f} s; its processes:")
            try:
                ps = subprocess.run(
                    ["ps", "-eo", "pid,ppid,stat,etime,time,wchan:24,args", "--sort=start_time"],
                    capture_output=True, text=True, timeout=60,
                )
                header, *rows = ps.stdout.splitlines()
                # Kernel threads ([name]) only when running or in uninterruptible sleep (a stuck flush).
                shown = [
                    row[:240] for row in rows
                    if not row.split(None, 6)[6].startswith("[") or row.split(None, 3)[2][0] in "RD"
                ]
                print("\n".join([header, *shown[-40:]]), flush=True)
            except (OSError, subprocess.TimeoutExpired) as err:
                print(f"ps: {err}", flush=True)
            for path in sorted(glob.glob(DAEMON_LOG.format(name="*"))):
                with open(path, errors="replace") as handle:
                    print(f"--- {path}, last lines:\n" + "".join(handle.readlines()[-15:]), flush=True)


def ok(reply, expect: str = ""):
    assert reply.ok, reply.message
    assert expect in reply.message, f"expected {expect!r} in {reply.message!r}"
    return reply.seconds


class OtherDriver(Kubelet):
    """Kubelet calling another build of the driver (the baseline), installed beside the real one."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def start(self, *argv, env=None):
        return subprocess.Popen(
            [self.path, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(self.env, **(env or {})), cwd="/", start_new_session=True,
        )


BASELINE = os.environ.get("BENCH_BASELINE", "")
BASELINE_NAME = os.environ.get("BENCH_BASELINE_NAME", "baseline")


# ---- 1. init ----------------------------------------------------------------------------------


def bench_init(results: dict) -> None:
    driver, floor, before = [], [], []
    for _ in range(REPS["init"]):
        driver.append(timed([node.DRIVER, "init"], env=node.KUBELET_ENV))
        floor.append(timed(PYTHON_FLOOR, env=node.KUBELET_ENV))
        if BASELINE:
            before.append(timed([BASELINE, "init"], env=node.KUBELET_ENV))
    results["figures"].append(figure("init (in the VM)", driver, floor, 1.5, "python3 -I -S -c pass"))
    if BASELINE:
        results["gains"].append(figure("init", driver, before, float("inf"), f"driver at {BASELINE_NAME}"))


# ---- 2. warm mount and keep-unmount -----------------------------------------------------------


def count_commands(argv) -> dict:
    """The programs the driver runs for one call, from strace's execve log."""
    out = tempfile.mktemp(prefix="bench-strace-")
    done = subprocess.run(["strace", "-f", "-qq", "-s", "512", "-e", "trace=execve", "-o", out, *argv],
                          capture_output=True, env=node.KUBELET_ENV)
    assert b'"Success"' in done.stdout, done.stdout
    programs = []
    with open(out) as handle:
        for line in handle:
            found = re.search(r'execve\("([^"]+)", \["([^"]*)"', line)
            if found and line.rstrip().endswith("= 0"):
                programs.append(os.path.basename(found.group(2)))
    os.unlink(out)
    # The first execs are the driver itself: its own path, then the header's sh (the shebang's
    # interpreter, reached through env) and the python3 it execs (an older driver: env's python3).
    while programs and (programs[0] in ("env", "sh", "python3") or programs[0] == os.path.basename(argv[0])):
        programs.pop(0)
    return {"programs": programs, "lvm": sum(1 for p in programs if p in LVM_PROGRAMS)}


def profile_call(argv, name: str, results: dict) -> None:
    import io
    import pstats

    out = f"/tmp/bench-{name}.prof"
    done = subprocess.run(["python3", "-I", "-S", "-c", PROFILE_SCRIPT, node.DRIVER, out, *argv],
                          capture_output=True, env=node.KUBELET_ENV)
    assert b'"Success"' in done.stdout, done.stdout + done.stderr
    text = io.StringIO()
    stats = pstats.Stats(out, stream=text)
    stats.sort_stats("cumulative").print_stats(28)
    results["profiles"][name] = re.sub(r"\n{3,}", "\n\n", text.getvalue()).strip()


def warm_cycle(kubelet: Kubelet, expect: str = "reused warm slab") -> tuple:
    pod = Pod(size_mb=WARM_MB)
    mount_s = ok(kubelet.mount(pod), expect)
    unmount_s = ok(kubelet.unmount(pod), "kept for the next pod")
    kubelet.delete_pod(pod)
    return mount_s, unmount_s


def count_warm_cycle(kubelet: Kubelet, results: dict, prefix: str) -> None:
    """The commands of one warm mount and of its keep-unmount, as `prefix`warm mount and so on."""
    pod = Pod(size_mb=WARM_MB)
    os.makedirs(pod.dir, mode=0o750, exist_ok=True)
    results["commands"][f"{prefix}warm mount"] = count_commands([node.DRIVER, "mount", pod.dir, pod.options()])
    results["commands"][f"{prefix}keep-unmount"] = count_commands([node.DRIVER, "unmount", pod.dir])
    os.rmdir(pod.dir)
    kubelet.delete_pod(pod)


def bare_mount_floor(slab_device: str) -> tuple:
    """(mount, umount) seconds of the same LV by hand, on a dir of its own."""
    point = tempfile.mkdtemp(prefix="bench-floor-")
    mount_s = timed(["mount", "-t", "ext4", "-o", "rw,noatime", slab_device, point])
    unmount_s = timed(["umount", point])
    os.rmdir(point)
    return mount_s, unmount_s


def plain_mount_floor(slab_device: str) -> tuple:
    """bare_mount_floor plus a python3 start for each: what a process per call cannot avoid."""
    mount_s, unmount_s = bare_mount_floor(slab_device)
    return timed(PYTHON_FLOOR) + mount_s, timed(PYTHON_FLOOR) + unmount_s


def bench_warm(kubelet: Kubelet, results: dict) -> None:
    first = Pod(size_mb=WARM_MB)
    ok(kubelet.mount(first), "created new slab")
    ok(kubelet.unmount(first), "kept")
    kubelet.delete_pod(first)
    (slab,) = [s for s in node.slabs().values() if s.tags.get("ax.size_mb") == str(WARM_MB)]
    mounts, unmounts, floor_m, floor_u, before_m, before_u = [], [], [], [], [], []
    baseline = OtherDriver(BASELINE) if BASELINE else None
    for _ in range(REPS["warm"]):
        m, u = warm_cycle(kubelet)
        fm, fu = plain_mount_floor(slab.device)
        mounts.append(m), unmounts.append(u), floor_m.append(fm), floor_u.append(fu)
        if baseline:
            bm, bu = warm_cycle(baseline)
            before_m.append(bm), before_u.append(bu)
    if baseline:
        results["gains"].append(figure("warm mount", mounts, before_m, float("inf"), f"driver at {BASELINE_NAME}"))
        results["gains"].append(figure("keep-unmount", unmounts, before_u, float("inf"), f"driver at {BASELINE_NAME}"))
        pod = Pod(size_mb=WARM_MB)
        os.makedirs(pod.dir, mode=0o750, exist_ok=True)
        results["commands"][f"warm mount ({BASELINE_NAME})"] = count_commands([BASELINE, "mount", pod.dir, pod.options()])
        results["commands"][f"keep-unmount ({BASELINE_NAME})"] = count_commands([BASELINE, "unmount", pod.dir])
        os.rmdir(pod.dir)
        kubelet.delete_pod(pod)
    results["samples"]["thick warm mount"] = mounts  # the thin section's floors
    results["samples"]["thick keep-unmount"] = unmounts
    results["figures"].append(figure("warm mount", mounts, floor_m, 2.0, "python3 start + bare mount of the same LV"))
    results["figures"].append(
        figure("keep-unmount", unmounts, floor_u, 2.0, "python3 start + bare umount of the same LV")
    )
    count_warm_cycle(kubelet, results, "")
    pod = Pod(size_mb=WARM_MB)
    os.makedirs(pod.dir, mode=0o750, exist_ok=True)
    profile_call(["mount", pod.dir, pod.options()], "warm mount, 1 slab", results)
    profile_call(["unmount", pod.dir], "keep-unmount, 1 slab", results)
    os.rmdir(pod.dir)
    kubelet.delete_pod(pod)


# ---- 2b. warm NodePublishVolume: the resident CSI plugin ---------------------------------------


def bench_csi(kubelet: Kubelet, results: dict) -> None:
    """The CSI node plugin (one process, its lvm shell open, the pool kept) publishing and
    unpublishing a warm slab, called over its socket as kubelet calls it (tests/realkernel/csi.py):
    against a bare mount and umount of the same LV, taken alternately, and against the FlexVolume
    driver's warm mount of this run (warm section), which pays an interpreter's start per call."""
    from tests.realkernel.csi import CSIKubelet, CSIPod, Plugin

    plugin = Plugin()
    plugin.start()
    try:
        csi = CSIKubelet()
        csi.register()
        attributes = (("size_mb", str(WARM_MB)),)
        first = CSIPod(attributes=attributes)
        assert csi.publish(first).ok and csi.unpublish(first).ok
        (slab,) = [s for s in node.slabs().values() if s.tags.get("ax.size_mb") == str(WARM_MB)]
        publish, unpublish, floor_m, floor_u = [], [], [], []
        for _ in range(REPS["csi"]):
            pod = CSIPod(attributes=attributes)
            published = csi.publish(pod)
            assert published.ok and node.slab_mounts().get(pod.dir) == slab.name, (published, node.slab_mounts())
            unpublished = csi.unpublish(pod)
            assert unpublished.ok, unpublished
            shutil.rmtree(pod.pod_dir)
            fm, fu = bare_mount_floor(slab.device)
            floor_m.append(fm), floor_u.append(fu)
            publish.append(published.seconds)
            unpublish.append(unpublished.seconds)
    finally:
        plugin.stop()
    results["figures"].append(figure("warm NodePublishVolume (CSI)", publish, floor_m, 1.5, "bare mount of the same LV"))
    results["figures"].append(figure("keep NodeUnpublishVolume (CSI)", unpublish, floor_u, 1.5, "bare umount of the same LV"))
    flex = results["samples"].get("thick warm mount")
    if flex:  # the warm section ran: a resident plugin must beat a process per call
        results["figures"].append(figure("warm NodePublishVolume against FlexVolume", publish, flex, 1.0,
                                         "FlexVolume warm mount (this run's warm section)", paired=False))


# ---- 3. cold mount of a 10 GiB slab ----------------------------------------------------------


def plain_cold(fs_type: str) -> float:
    """What the 2017 driver did: plain lvcreate, plain mkfs, mount."""
    name = "bench-plain"
    device = f"/dev/{VG}/{name}"
    point = tempfile.mkdtemp(prefix="bench-plain-")
    seconds = timed(["lvcreate", "--yes", "--size", f"{COLD_MB}m", "--name", name, VG])
    seconds += timed([f"mkfs.{fs_type}", device])
    seconds += timed(["mount", device, point])
    node.run("umount", point)
    node.run("lvremove", "--yes", f"{VG}/{name}")
    os.rmdir(point)
    return seconds


def cold_cycle(kubelet: Kubelet, fs_type: str) -> float:
    """One cold mount of a new slab (anonymous: deleted at unmount, so the next is cold too)."""
    pod = Pod(size_mb=COLD_MB, fs_type=fs_type, volume_type=ANONYMOUS)
    seconds = ok(kubelet.mount(pod), "created new slab")
    ok(kubelet.unmount(pod), "deleted")
    kubelet.delete_pod(pod)
    return seconds


def bench_cold(kubelet: Kubelet, results: dict) -> None:
    for fs_type in ("ext4", "xfs"):
        driver, floor = [], []
        for _ in range(REPS["cold"]):
            driver.append(cold_cycle(kubelet, fs_type))
            floor.append(plain_cold(fs_type))
        results["samples"][f"thick cold mount {fs_type}"] = driver
        results["figures"].append(
            figure(f"cold mount {COLD_MB // 1024} GiB {fs_type}", driver, floor, 0.5,
                   f"plain lvcreate + mkfs.{fs_type} + mount")
        )
        pod = Pod(size_mb=COLD_MB, fs_type=fs_type, volume_type=ANONYMOUS)
        os.makedirs(pod.dir, mode=0o750, exist_ok=True)
        results["commands"][f"cold mount {fs_type}"] = count_commands([node.DRIVER, "mount", pod.dir, pod.options()])
        ok(kubelet.unmount(pod), "deleted")
        kubelet.delete_pod(pod)
    pod = Pod(size_mb=COLD_MB, volume_type=ANONYMOUS)
    os.makedirs(pod.dir, mode=0o750, exist_ok=True)
    profile_call(["mount", pod.dir, pod.options()], f"cold mount {COLD_MB // 1024} GiB ext4", results)
    ok(kubelet.unmount(pod), "deleted")
    kubelet.delete_pod(pod)


# ---- 4. scale ---------------------------------------------------------------------------------


def add_fillers(count: int, start: int) -> float:
    """`count` more free slabs of another size (never chosen for the warm pods), inactive, made
    by one lvm process reading commands on stdin. Returns the seconds it took."""
    tags = ["ax.slab", "ax.type=graph", "ax.fs=ext4", "ax.size_mb=4", "ax.state=free", "ax.released=1000",
            "ax.scope=node", "bench.filler"]
    lines = []
    for i in range(start, start + count):
        argv = ["lvcreate", "--yes", "--activate", "n", "--zero", "n", "--wipesignatures", "n", "--size", "4m",
                "--name", f"filler-{i:04d}"]
        for tag in tags:
            argv += ["--addtag", tag]
        lines.append(" ".join(argv + [VG]))
    started = time.perf_counter()
    done = subprocess.run(["lvm"], input="\n".join(lines) + "\n", capture_output=True, text=True,
                          env={**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return time.perf_counter() - started


def bench_scale(kubelet: Kubelet, results: dict) -> None:
    levels = {}
    fillers = 0
    for level in SCALE_LEVELS:
        missing = level - len(node.slabs())
        if missing > 0:
            log(f"scale: adding {missing} slabs")
            results["timings"][f"scale: {missing} slabs made"] = add_fillers(missing, fillers)
            fillers += missing
        assert len(node.slabs()) == level, len(node.slabs())
        mounts, unmounts = [], []
        for _ in range(REPS["scale"]):
            m, u = warm_cycle(kubelet)
            mounts.append(m), unmounts.append(u)
        levels[level] = (mounts, unmounts)
        log(f"scale: {level} slabs: warm mount {sorted(mounts)[len(mounts) // 2]:.3f} s")
    low, high = SCALE_LEVELS[0], SCALE_LEVELS[-1]
    for level in SCALE_LEVELS[1:]:
        results["figures"].append(
            figure(f"warm mount, {level} slabs in the VG", levels[level][0], levels[low][0],
                   1.5 if level == high else float("inf"), f"warm mount, {low} slabs", paired=False)
        )
    results["figures"].append(
        figure(f"keep-unmount, {high} slabs in the VG", levels[high][1], levels[low][1], 1.5,
               f"keep-unmount, {low} slabs", paired=False)
    )
    pod = Pod(size_mb=WARM_MB)
    os.makedirs(pod.dir, mode=0o750, exist_ok=True)
    profile_call(["mount", pod.dir, pod.options()], f"warm mount, {high} slabs", results)
    profile_call(["unmount", pod.dir], f"keep-unmount, {high} slabs", results)
    os.rmdir(pod.dir)
    kubelet.delete_pod(pod)
    names = [f"{VG}/{name}" for name, s in node.slabs().items() if "bench.filler" in s.tags]
    node.run("lvremove", "--yes", *names)


# ---- 5. parallelism ---------------------------------------------------------------------------


def bench_parallel(kubelet: Kubelet, results: dict) -> None:
    def pods():
        return [Pod(size_mb=PARALLEL_MB, volume_type=ANONYMOUS) for _ in range(PARALLEL)]

    def finish(batch):
        with ThreadPoolExecutor(PARALLEL) as pool:
            for reply in pool.map(kubelet.unmount, batch):
                ok(reply, "deleted")
        for pod in batch:
            kubelet.delete_pod(pod)

    concurrent, serial = [], []
    for rep in range(REPS["parallel"]):
        for mode in (("serial", "concurrent") if rep % 2 == 0 else ("concurrent", "serial")):
            batch = pods()
            started = time.perf_counter()
            if mode == "serial":
                replies = [kubelet.mount(pod) for pod in batch]
            else:
                with ThreadPoolExecutor(PARALLEL) as pool:
                    replies = list(pool.map(kubelet.mount, batch))
            seconds = time.perf_counter() - started
            for reply in replies:
                ok(reply, "created new slab")
            (serial if mode == "serial" else concurrent).append(seconds)
            finish(batch)
    results["figures"].append(
        figure(f"{PARALLEL} concurrent cold mounts ({PARALLEL_MB // 1024} GiB ext4)", concurrent, serial, 0.6,
               f"the same {PARALLEL} one after another")
    )


# ---- 6. the user's view: DinD -----------------------------------------------------------------


def bench_dind(kubelet: Kubelet, results: dict) -> None:
    tarball = build_image_tarball(os.path.join(node.KUBELET_ROOT, "bench-image.tar"), payload_mb=IMAGE_MB)
    image_mb = os.path.getsize(tarball) / (1 << 20)
    cold, warm = [], []
    for rep in range(REPS["dind"]):
        size = DIND_MB + rep  # a size no slab has yet: the cold job gets a new slab
        first = run_ci_job(kubelet, Pod(size_mb=size), tarball, f"cold-{rep}")
        assert not first.cache_hit
        second = run_ci_job(kubelet, Pod(size_mb=size), tarball, f"warm-{rep}")
        assert second.cache_hit and second.slab == first.slab
        cold.append(first.seconds_to_container), warm.append(second.seconds_to_container)
        log(f"dind: cold {first.seconds_to_container:.1f} s, warm {second.seconds_to_container:.1f} s")
    results["figures"].append(
        figure(f"DinD pod to first container, warm slab ({image_mb:.0f} MB image)", warm, cold, 0.2,
               "the same pod on a cold slab, image loaded with docker import")
    )
    os.unlink(tarball)


# ---- 7. thin provisioning: a burst of CI pods; thin mounts against thick ones ------------------


def burst_of_jobs(kubelet: Kubelet, tarball: str, size_mb: int, label: str) -> List[JobResult]:
    """BURST CI jobs started at once (a push), each a pod asking for `size_mb`."""
    def one(i):
        return run_ci_job(kubelet, Pod(size_mb=size_mb), tarball, f"{label}-{i}")

    with ThreadPoolExecutor(BURST) as pool:
        return list(pool.map(one, range(BURST)))


def held_bytes(thin: bool, size_mb: int) -> float:
    """What the node's disk holds. Thin: the thin pool's data in use, where blocks that snapshots
    share count once. Thick: the data in the slabs of `size_mb`, as each slab's filesystem counted
    it when released (ax.usage, permille of the slab)."""
    if thin:
        return node.thin_pool_figures()["data_used_bytes"]
    return sum(
        int(slab.tags["ax.usage"]) / 1000 * slab.size_bytes
        for slab in node.slabs().values()
        if slab.tags.get("ax.size_mb") == str(size_mb) and "ax.usage" in slab.tags
    )


def burst_after_warm_job(kubelet: Kubelet, tarball: str, thin: bool, results: dict) -> List[JobResult]:
    """One CI job warms a slab of BURST_MB; then BURST jobs of that size at once. Records how many
    found their image cached, and what the disk holds after the burst against one job's cache."""
    mode = "thin" if thin else "thick"
    before = held_bytes(thin, BURST_MB)
    first = run_ci_job(kubelet, Pod(size_mb=BURST_MB), tarball, f"{mode}-warmup")
    assert not first.cache_hit and first.kept, first
    one_cache = held_bytes(thin, BURST_MB) - before
    jobs = burst_of_jobs(kubelet, tarball, BURST_MB, f"{mode}-burst")
    held = held_bytes(thin, BURST_MB) - before
    cached = sum(job.cache_hit for job in jobs)
    seconds = sorted(job.seconds_to_container for job in jobs)
    log(f"burst ({mode}): {cached} of {BURST} cached, held {held / one_cache:.2f}x one cache, "
        f"to first container {seconds[0]:.1f}-{seconds[-1]:.1f} s")
    results["bursts"].append({
        "mode": mode, "pods": BURST, "cached": cached, "image_mb": os.path.getsize(tarball) / (1 << 20),
        "one_cache_bytes": one_cache, "held_bytes": held, "seconds_to_container": seconds,
        # The targets are for thin mode; thick's row is what it replaces.
        "target_cached": BURST if thin else None, "target_held": 1.3 if thin else None,
    })
    return jobs


def space_return(discard: bool, files: int = 16, file_mb: int = 8) -> tuple:
    """What giving a pod's deleted files back to the thin pool costs: a thin volume of the pool
    (beside the driver's), files written and synced, then deleted. Online discard: mounted with
    `-o discard`, the delete and its sync. The driver's way: mounted without, the delete, its
    sync and an fstrim (what the unmount adds). Returns (seconds, bytes given back)."""
    name = "bench-discard"
    device = f"/dev/{VG}/{name}"
    point = tempfile.mkdtemp(prefix="bench-discard-")
    node.run("lvcreate", "--yes", "--thin", "--virtualsize", "1024m", "--name", name, f"{VG}/{THIN_POOL_NAME}")
    node.run("mkfs.ext4", "-q", device)
    node.run("mount", *(["-o", "discard"] if discard else []), device, point)
    chunk = os.urandom(1 << 20)
    for i in range(files):
        with open(os.path.join(point, f"layer-{i}"), "wb") as handle:
            for _ in range(file_mb):
                handle.write(chunk)
    os.sync()
    before = node.thin_pool_figures()["data_used_bytes"]
    started = time.perf_counter()
    for i in range(files):
        os.unlink(os.path.join(point, f"layer-{i}"))
    os.sync()
    if not discard:
        node.run("fstrim", point)
    seconds = time.perf_counter() - started
    returned = before - node.thin_pool_figures()["data_used_bytes"]
    node.run("umount", point)
    node.run("lvremove", "--yes", f"{VG}/{name}")
    os.rmdir(point)
    return seconds, returned


def switch_to_thin() -> None:
    """The admin's steps on a drained node: `prepare --thin`, then the config says so."""
    log(node.run(ADMIN, "prepare", "--thin", "--yes").stdout.strip().splitlines()[0])
    with open(CONFIG_PATH, "a") as handle:
        handle.write("provisioning = thin\n")


def bench_thin(kubelet: Kubelet, results: dict) -> None:
    samples = results["samples"]
    for fs_type in ("ext4", "xfs"):  # measured by the cold section unless it was left out
        if f"thick cold mount {fs_type}" not in samples:
            samples[f"thick cold mount {fs_type}"] = [cold_cycle(kubelet, fs_type) for _ in range(REPS["cold"])]
    tarball = build_image_tarball(os.path.join(node.KUBELET_ROOT, "bench-burst.tar"), payload_mb=IMAGE_MB)
    burst_after_warm_job(kubelet, tarball, False, results)

    switch_to_thin()
    first = Pod(size_mb=WARM_MB)
    ok(kubelet.mount(first), "created new slab")
    ok(kubelet.unmount(first), "kept")
    kubelet.delete_pod(first)
    mounts, unmounts = [], []
    for _ in range(REPS["warm"]):
        m, u = warm_cycle(kubelet, "snapshot of warm slab")
        mounts.append(m), unmounts.append(u)
    figures = results["figures"]
    # Thick and thin cannot alternate on one disk (the switch wipes it): ratios of the medians.
    figures.append(figure("warm mount, thin (snapshot + new UUID + mount)", mounts, samples["thick warm mount"], 1.3,
                          "thick warm mount, this run", paired=False))
    figures.append(figure("keep-unmount, thin (with fstrim)", unmounts, samples["thick keep-unmount"], float("inf"),
                          "thick keep-unmount, this run", paired=False))
    count_warm_cycle(kubelet, results, "thin ")
    for fs_type in ("ext4", "xfs"):
        cold = [cold_cycle(kubelet, fs_type) for _ in range(REPS["cold"])]
        figures.append(figure(f"cold mount {COLD_MB // 1024} GiB {fs_type}, thin", cold,
                              samples[f"thick cold mount {fs_type}"], float("inf"), "thick cold mount, this run",
                              paired=False))

    online, trimmed = [], []
    for _ in range(REPS["cold"] + 1):
        online.append(space_return(True)), trimmed.append(space_return(False))
    results["space_returned"] = {"online discard": [b for _, b in online], "fstrim": [b for _, b in trimmed]}
    figures.append(figure("space given back, online discard (rm + sync on -o discard)", [s for s, _ in online],
                          [s for s, _ in trimmed], float("inf"), "rm + sync + fstrim, as the driver's unmount"))

    warm = burst_after_warm_job(kubelet, tarball, True, results)
    cold = burst_of_jobs(kubelet, tarball, BURST_MB + 1, "thin-cold")  # a size nothing has cached
    assert not any(job.cache_hit for job in cold), cold
    figures.append(figure(
        f"burst of {BURST}, pod to first container, thin ({IMAGE_MB} MB image)",
        [job.seconds_to_container for job in warm], [job.seconds_to_container for job in cold], 0.3,
        f"a burst of {BURST} on cold thin slabs", every=True,
    ))
    os.unlink(tarball)


def environment() -> dict:
    lvm = node.run("lvm", "version").stdout.splitlines()[0].split(":", 1)[1].strip()
    return {"kernel": platform.release(), "python": platform.python_version(), "lvm": lvm, "cpus": os.cpu_count()}


def main() -> int:
    with open(os.environ["AX_VM_MANIFEST"]) as handle:
        manifest = json.load(handle)
    node.set_up_blank_node(manifest, "bench")
    kubelet = Kubelet()
    results = {"figures": [], "commands": {}, "profiles": {}, "environment": environment(), "quick": QUICK, "timings": {},
               "gains": [], "baseline": BASELINE_NAME if BASELINE else "", "samples": {}, "bursts": []}
    out = os.path.join(manifest["results"], "bench.json")
    sections = [("init", bench_init), ("warm", bench_warm), ("csi", bench_csi), ("cold", bench_cold), ("scale", bench_scale),
                ("parallel", bench_parallel), ("dind", bench_dind), ("thin", bench_thin)]
    only = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
    for name, section in sections:
        if only and name not in only and name != "warm":
            continue
        log(f"{name}...")
        started = time.perf_counter()
        with SectionWatch(name):
            if name == "init":
                section(results)
            else:
                section(kubelet, results)
        results["timings"][name] = time.perf_counter() - started
        log(f"{name} done in {results['timings'][name]:.0f} s")
        with open(out, "w") as handle:
            json.dump(results, handle, indent=1)
    node.check_pool()
    return 0


if __name__ == "__main__":
    sys.exit(main())
