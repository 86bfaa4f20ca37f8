"""Inside the VM: pod cycles through the installed driver, kubelet's way, and what they leave behind.

    python -m tests.soak --cycles 500 --block 100 --streams 3 --out RESULTS.json [--driver FILE]

A cycle is one pod: mount, write, unmount, its dir removed. Sizes and filesystems come in a fixed
mix; every HEAVY_EVERY-th pod fills its slab past the usage threshold, so that unmount deletes it
and a later pod makes a new one. RESIDENT pods stay mounted throughout, as long jobs on a node do:
LVM writes the whole volume group's metadata on every change, so its archive files are the size
of a pool with slabs in it, not of an empty one. After each block of cycles (both streams
stopped) the footprint is read: /etc/lvm's archive and backup, the metadata area, the call log.
At the end, whether LVM's backup of the current metadata still restores.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tests.realkernel import node
from tests.realkernel.node import Kubelet, Pod

ETC_LVM = "/etc/lvm"
RESIDENT = 12
RESIDENT_MB = 32
# (size_mb, fs) of the pods in turn; xfs needs 300 MiB at least.
MIX = [(64, "ext4"), (128, "ext4"), (64, "ext4"), (256, "ext4"), (64, "ext4"), (320, "xfs"),
       (128, "ext4"), (64, "ext4"), (256, "ext4"), (64, "ext4")]
HEAVY_EVERY = 7  # that pod fills its slab to HEAVY_FILL: over the 0.5 rule, deleted at unmount
HEAVY_FILL = 0.6
LIGHT_BYTES = 1 << 20  # what every other pod writes: its marker and a MiB of build output


def pod_for(cycle: int) -> tuple:
    size_mb, fs_type = MIX[cycle % len(MIX)]
    heavy = cycle % HEAVY_EVERY == HEAVY_EVERY - 1 and fs_type == "ext4"
    return Pod(size_mb=size_mb, fs_type=fs_type), heavy


def one_cycle(kubelet: Kubelet, cycle: int, calls: list, lock: threading.Lock) -> None:
    pod, heavy = pod_for(cycle)
    mounted = kubelet.mount_retrying(pod)
    node.write_marker(pod, f"cycle {cycle}")
    if heavy:
        node.fill(pod, HEAVY_FILL)
    else:
        with open(os.path.join(pod.dir, "output"), "wb") as handle:
            handle.write(os.urandom(LIGHT_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
    unmounted = kubelet.unmount(pod)
    if not unmounted.ok:
        raise AssertionError(f"cycle {cycle}: unmount failed: {unmounted.message}")
    kubelet.delete_pod(pod)
    with lock:
        calls.append(("mount", mounted.seconds))
        calls.append(("unmount", unmounted.seconds))


def run_block(first: int, count: int, streams: int) -> list:
    """Cycles first..first+count-1 on `streams` pods at a time (each stream a kubelet worker);
    returns (verb, seconds) of every call."""
    calls, lock, failed = [], threading.Lock(), threading.Event()
    cycles = iter(range(first, first + count))
    take = threading.Lock()

    def stream() -> None:
        kubelet = Kubelet()
        while not failed.is_set():
            with take:
                cycle = next(cycles, None)
            if cycle is None:
                return
            try:
                one_cycle(kubelet, cycle, calls, lock)
            except BaseException:
                failed.set()  # the other streams stop at their next cycle
                raise

    with ThreadPoolExecutor(streams) as pool:
        for future in [pool.submit(stream) for _ in range(streams)]:
            future.result()
    return calls


def tree_footprint(root: str) -> tuple:
    """(bytes, files) of the regular files under root."""
    size = count = 0
    for parent, _, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(parent, name))
            size += st.st_size
            count += 1
    return size, count


def metadata_area() -> tuple:
    out = node.run("vgs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o",
                   "vg_mda_size,vg_mda_free,vg_seqno", node.VOLUME_GROUP).stdout
    row = json.loads(out)["report"][0]["vg"][0]
    return int(row["vg_mda_size"]), int(row["vg_mda_free"]), int(row["vg_seqno"])


def log_bytes() -> tuple:
    """(bytes, files) of the call log and its rotations."""
    folder, base = os.path.split(node.LOG_FILE)
    found = [os.path.join(folder, n) for n in os.listdir(folder) if n == base or n.startswith(base + ".")]
    return sum(os.path.getsize(p) for p in found), len(found)


def percentile(values: list, fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def measure(cycles_done: int, calls: list, seconds: float) -> dict:
    archive = tree_footprint(os.path.join(ETC_LVM, "archive"))
    backup = tree_footprint(os.path.join(ETC_LVM, "backup"))
    mda_size, mda_free, seqno = metadata_area()
    logged = log_bytes()
    decisions = collections.Counter(line.get("decision", "?") for line in node.log_lines())
    times = [s for _, s in calls]
    return {
        "cycles": cycles_done,
        "etc_lvm_bytes": archive[0] + backup[0], "etc_lvm_files": archive[1] + backup[1],
        "archive_bytes": archive[0], "archive_files": archive[1], "backup_bytes": backup[0],
        # vg_mda_free is the room LVM has for the next write, which goes beside the current
        # copy: about half the area less the metadata text (whose size the backup file shows).
        "mda_size": mda_size, "mda_free": mda_free, "metadata_bytes": backup[0], "vg_seqno": seqno,
        "log_bytes": logged[0], "log_files": logged[1],
        "calls": len(times), "median_s": percentile(times, 0.5), "p90_s": percentile(times, 0.9),
        "mount_median_s": percentile([s for v, s in calls if v == "mount"], 0.5),
        "unmount_median_s": percentile([s for v, s in calls if v == "unmount"], 0.5),
        "slabs": len(node.slabs()), "decisions_so_far": dict(decisions), "seconds": round(seconds, 1),
    }


def restore_check() -> dict:
    """What an admin would do with LVM's backup: is it the current metadata, and does it restore?"""
    backup = os.path.join(ETC_LVM, "backup", node.VOLUME_GROUP)
    seqno_in_backup = None
    with open(backup) as handle:
        for line in handle:
            if line.strip().startswith("seqno"):
                seqno_in_backup = int(line.split("=")[1])
                break
    _, _, seqno = metadata_area()
    before = {name: view.tags for name, view in node.slabs().items()}
    dry = node.run("vgcfgrestore", "--test", "--yes", "-f", backup, node.VOLUME_GROUP, check=False)
    listed = node.run("vgcfgrestore", "--list", node.VOLUME_GROUP, check=False)
    # Then the real thing, on the live pool: the resident pods' slabs are still active and mounted,
    # as on a node an admin repairs; LVM asks before restoring a VG with active LVs, even in test
    # mode (--yes answers).
    real = node.run("vgcfgrestore", "--yes", "-f", backup, node.VOLUME_GROUP, check=False)
    after = {name: view.tags for name, view in node.slabs().items()}
    return {
        "backup_seqno": seqno_in_backup, "vg_seqno": seqno,
        "test_rc": dry.returncode, "test_output": (dry.stdout + dry.stderr).strip()[-400:],
        "archives_listed": listed.stdout.count("File:"),
        "restore_rc": real.returncode, "restore_output": (real.stdout + real.stderr).strip()[-400:],
        "pool_unchanged": before == after,
    }


def lvm_settings() -> dict:
    """The archive settings the node's LVM runs with: lvm.conf's, else LVM's built-in defaults
    (a node may have no lvm.conf at all, as this guest's fresh /etc/lvm has not)."""
    found = {}
    for key in ("retain_min", "retain_days"):
        for kind in ("current", "default"):
            shown = node.run("lvmconfig", "--type", kind, f"backup/{key}", check=False).stdout
            value = shown.strip().lstrip("#").strip().partition("=")[2]
            if value:
                found["node_" + key] = value if kind == "current" else f"{value} (LVM's default)"
                break
    return found


def main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=500)
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--driver", default="", help="install this build instead of dist/vol_plugin")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with open(os.environ["AX_VM_MANIFEST"]) as handle:
        print(node.set_up_blank_node(json.load(handle), "soak", driver=args.driver), flush=True)
    results = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "kernel": platform.release(),
        "lvm": node.run("lvm", "version").stdout.splitlines()[0].split(":", 1)[1].strip(),
        "cpus": os.cpu_count(), "streams": args.streams, "resident": RESIDENT, "blocks": [], **lvm_settings(),
    }

    def save() -> None:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=1)

    kubelet = Kubelet()
    residents = [Pod(size_mb=RESIDENT_MB) for _ in range(RESIDENT)]
    for pod in residents:
        kubelet.mount_retrying(pod)
        node.write_marker(pod, "resident")
    results["before"] = measure(0, [("mount", r.seconds) for r in kubelet.calls], 0.0)
    save()
    done = 0
    while done < args.cycles:
        count = min(args.block, args.cycles - done)
        started = time.monotonic()
        calls = run_block(done, count, args.streams)
        done += count
        block = measure(done, calls, time.monotonic() - started)
        results["blocks"].append(block)
        save()
        print(f"soak: {done} cycles: /etc/lvm {block['etc_lvm_bytes'] / 1e6:.2f} MB in {block['etc_lvm_files']} files, "
              f"metadata {block['metadata_bytes'] / 1e3:.0f} kB ({block['mda_free'] / 1e3:.0f} kB free), "
              f"log {block['log_bytes'] / 1e3:.0f} kB, "
              f"median {block['median_s']:.2f} s, p90 {block['p90_s']:.2f} s, {block['seconds']:.0f} s", flush=True)
    node.check_pool(residents)
    for pod in residents:
        assert node.read_marker(pod) == "resident", f"resident pod {pod.uid} lost its data"
    results["restore"] = restore_check()
    save()
    print(f"soak: restore check {results['restore']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
