"""The demo's guest side: one CI node with a blank slab disk, and a handful of Docker-in-Docker
CI jobs that kubelet runs on it, told as they happen."""

from __future__ import annotations

import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor

from tests.realkernel import node
from tests.realkernel.dind import build_image_tarball, run_ci_job
from tests.realkernel.node import Kubelet, Pod

ADMIN = "/usr/local/sbin/ax-vol-plugin"
CONFIG_PATH = "/etc/ax-vol-plugin/vol_plugin.conf"  # as node.set_up_blank_node writes it

# Small enough that the whole demo, a fresh machine's `make deps` included, ends within about eight
# minutes under emulation (loading the image dominates a cold job, filling the slab job-3);
# what it shows does not depend on the sizes.
SLAB_MB = 512
IMAGE_MB = 96
MIB = 1 << 20


def job(kubelet, name, tarball, fill_to=None, size_mb=SLAB_MB):
    result = run_ci_job(kubelet, Pod(size_mb=size_mb), tarball, name, fill_to)
    cache = "cached   " if result.cache_hit else "not cached (loaded)"
    fate = "kept for the next job" if result.kept else "deleted (more than half full)"
    print(
        f"  {name:<7} image {cache:<19} container ran after {result.seconds_to_container:5.1f} s"
        f"  slab {result.slab}  (mount {result.mount_s:.1f} s, unmount {result.unmount_s:.1f} s: {fate})",
        flush=True,
    )
    return result


def main() -> None:
    with open(os.environ["AX_VM_MANIFEST"]) as handle:
        print(node.set_up_blank_node(json.load(handle), "demo"))
    kubelet = Kubelet()
    tarball = build_image_tarball(os.path.join(tempfile.mkdtemp(), "toolchain.tar"), payload_mb=IMAGE_MB)
    print(f"Each job runs dockerd on its {SLAB_MB} MiB slab and needs a {IMAGE_MB} MiB toolchain image;")
    print("without it the job loads it from a tarball, standing in for a registry pull.\n")

    print("CI jobs one after another:")
    results = [job(kubelet, f"job-{i}", tarball) for i in (1, 2)]
    print("\nA job whose build leaves its slab 80% full: the slab is deleted so the disk does not silt up:")
    results.append(job(kubelet, "job-3", tarball, fill_to=0.8))
    print("\nSo the next job starts cold, and the one after it is warm again:")
    results += [job(kubelet, f"job-{i}", tarball) for i in (4, 5)]
    print("\nTwo jobs at once: one gets the warm slab, the other a new one:")
    with ThreadPoolExecutor(2) as pool:
        results += list(pool.map(lambda i: job(kubelet, f"job-{i}", tarball), (6, 7)))

    node.check_pool()
    print("\nSlabs left on the node (LVM tags are the driver's only state):")
    show_slabs()
    summary(results)

    print("\nThe same node switched to thin provisioning (drained: `ax-vol-plugin prepare --thin`,")
    print("then provisioning = thin in the config). One job warms the pool; then four jobs at once,")
    print("each on a copy-on-write snapshot of that warm slab of its own (of the free slabs they leave,")
    print("the two most recent are kept, thin_keep_free):")
    switched = node.run(ADMIN, "prepare", "--thin", "--yes").stdout.strip().splitlines()[0]
    print(f"  {switched}")
    with open(CONFIG_PATH, "a") as handle:
        handle.write("provisioning = thin\n")
    job(kubelet, "job-8", tarball)
    one_cache = node.thin_pool_figures()["data_used_bytes"]
    with ThreadPoolExecutor(4) as pool:
        burst = list(pool.map(lambda i: job(kubelet, f"job-{i}", tarball), (9, 10, 11, 12)))
    warm_used = node.thin_pool_figures()["data_used_bytes"]
    print("\nThe same burst of four where nothing is cached yet (a size no job used), for comparison:")
    with ThreadPoolExecutor(4) as pool:
        cold = list(pool.map(lambda i: job(kubelet, f"job-{i}", tarball, size_mb=SLAB_MB + 64), (13, 14, 15, 16)))
    cold_used = node.thin_pool_figures()["data_used_bytes"] - warm_used
    node.check_pool()
    show_slabs()
    print("\n  burst of 4  cache hits  avg time to first container  thin pool space held after it (2 free slabs)")
    for label, jobs, used in (("warm", burst, warm_used - one_cache), ("cold", cold, cold_used)):
        average = sum(r.seconds_to_container for r in jobs) / len(jobs)
        print(f"  {label:>10}  {sum(r.cache_hit for r in jobs):>10}  {average:>26.1f} s  "
              f"{used / MIB:>10.0f} MiB ({used / one_cache:.2f}x one cache)")
    print("\n(Times are under software emulation, several times slower than a real node; a real pull")
    print(" of a CI toolchain takes minutes, which is what a warm slab saves every job.)")


def show_slabs() -> None:
    for slab in node.slabs().values():
        origin = f"  (snapshot of {slab.tags['ax.origin']})" if "ax.origin" in slab.tags else ""
        print(f"  {slab.name}  {slab.size_bytes // MIB} MiB  {slab.tags.get('ax.fs')}  {slab.state}{origin}")
    print(f"  volume group {node.VOLUME_GROUP}: {node.volume_group_free_bytes() // MIB} MiB free")


def summary(results) -> None:
    hits = [r for r in results if r.cache_hit]
    misses = [r for r in results if not r.cache_hit]
    cold = sum(r.seconds_to_container for r in misses) / len(misses) if misses else 0.0
    warm = sum(r.seconds_to_container for r in hits) / len(hits) if hits else 0.0
    saved = sum(cold - r.seconds_to_container for r in hits)
    print("\n  jobs  cache hits  avg time to first container (cold / warm)  time saved vs all cold")
    print(f"  {len(results):>4}  {len(hits):>10}  {cold:>27.1f} s / {warm:.1f} s  {saved:>21.1f} s")


if __name__ == "__main__":
    main()
