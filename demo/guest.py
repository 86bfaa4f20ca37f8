"""The demo's guest side: a node with a blank slab disk and a kubelet that runs a few CI pods."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from tests.realkernel import node
from tests.realkernel.node import Kubelet, Pod

SCRATCH, NODE_DISK = "/dev/vda", "/dev/vdb"
MIB = 1 << 20
rows = []


def check_vm() -> None:
    with open(os.environ["AX_VM_MANIFEST"]) as handle:
        manifest = json.load(handle)
    for device in (SCRATCH, NODE_DISK):
        with open(f"/sys/block/{os.path.basename(device)}/size") as handle:
            if int(handle.read()) * 512 != manifest["disks"][device]["bytes"]:
                sys.exit(f"refusing: {device} is not the demo's blank disk")


def setup() -> None:
    node.run("mkfs.ext4", "-q", NODE_DISK)
    os.makedirs(node.KUBELET_ROOT, exist_ok=True)
    node.run("mount", NODE_DISK, node.KUBELET_ROOT)
    os.makedirs("/etc/ax-vol-plugin", exist_ok=True)
    with open("/etc/ax-vol-plugin/vol_plugin.conf", "w") as handle:
        handle.write(f"[vol_plugin]\ndevice = {SCRATCH}\n")
    repo = os.getcwd()
    installer = [f"{repo}/install/install.sh", "--plugin-dir", node.PLUGIN_DIR, "--driver", f"{repo}/dist/vol_plugin"]
    print(node.run(*installer).stdout.strip())


def record(job: str, verb: str, reply) -> None:
    """One row per call, with the slab and decision from the driver's own log line."""
    line = next(
        (e for e in reversed(node.log_lines()) if e.get("pod") == job_uid[job] and e.get("verb") == verb), {}
    )
    slab, decision = line.get("slab", "-"), line.get("decision", reply.message[:34])
    if line.get("evicted"):
        decision += ", evicted " + " ".join(line["evicted"])
    rows.append((job, verb, reply.status, slab, decision, reply.seconds))
    print(f"  {job:<9} {verb:<8} {reply.status:<8} {slab:<18} {decision:<34} {reply.seconds:6.2f} s", flush=True)


job_uid = {}


def pod(job: str, **kwargs) -> Pod:
    made = Pod(**kwargs)
    job_uid[job] = made.uid
    return made


def run_job(kubelet: Kubelet, job: str, p: Pod, fill: float = 0.1) -> None:
    record(job, "mount", kubelet.mount_retrying(p))
    cached = node.read_marker(p)
    print(f"  {job:<9} cache: {'warm, left by ' + cached if cached else 'cold (new slab)'}")
    node.fill(p, fill)
    node.write_marker(p, job)
    record(job, "unmount", kubelet.unmount(p))


def main() -> None:
    check_vm()
    setup()
    kubelet = Kubelet()
    print("\n1. init, as kubelet probes the plugin")
    reply = kubelet.call("init")
    print(f"  init -> {reply.raw}  ({reply.seconds * 1000:.0f} ms)")

    print("\n2. CI jobs one after another, 1 GiB ext4 slabs: the first is cold, the rest warm")
    for i in (1, 2, 3):
        run_job(kubelet, f"job-{i}", pod(f"job-{i}", size_mb=1024))

    print("\n3. three jobs at once: one gets the warm slab, two get new ones")
    parallel = {f"job-{i}": pod(f"job-{i}", size_mb=1024) for i in (4, 5, 6)}
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda item: run_job(kubelet, *item), parallel.items()))

    print("\n4. a job that fills its slab past 50%: the slab is deleted at unmount")
    run_job(kubelet, "job-7", pod("job-7", size_mb=1024), fill=0.7)

    print("\n5. an xfs job, 2 GiB")
    run_job(kubelet, "job-8", pod("job-8", size_mb=2048, fs_type="xfs"))

    print("\n6. the driver is SIGKILLed in the middle of a mount; kubelet retries")
    crash = pod("job-9", size_mb=1536)
    os.makedirs(crash.dir, mode=0o750)
    proc = kubelet.start("mount", crash.dir, crash.options())
    time.sleep(1.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    print("  job-9     mount    killed after 1.5 s")
    if not os.path.ismount(crash.dir):
        os.rmdir(crash.dir)
    run_job(kubelet, "job-9", crash)

    print("\n7. a job that needs more room than is free: least recently used free slabs are evicted")
    run_job(kubelet, "job-10", pod("job-10", size_mb=5120))

    print("\nThe pool at the end (lvs tags):")
    print(f"  {'slab':<18} {'size':>8} {'fs':<5} {'state':<6}")
    for slab in node.slabs().values():
        print(f"  {slab.name:<18} {slab.size_bytes // MIB:>6} MiB {slab.tags.get('ax.fs', ''):<5} {slab.state:<6}")
    print(f"  volume group {node.VOLUME_GROUP}: {node.volume_group_free_bytes() // MIB} MiB free")
    node.check_pool()
    mounts = [r for r in rows if r[1] == "mount"]
    warm = [r for r in mounts if "reused" in r[4]]
    cold = [r for r in mounts if "created" in r[4]]
    average = lambda rs: sum(r[5] for r in rs) / len(rs) if rs else 0.0  # noqa: E731
    print(f"\n{len(mounts)} mounts: {len(warm)} warm (avg {average(warm):.2f} s), {len(cold)} cold (avg {average(cold):.2f} s);"
          " times are under software emulation, several times slower than a real node")


if __name__ == "__main__":
    main()
