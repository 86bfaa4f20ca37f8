"""Metrics: the textfile node_exporter would read, after real calls on a real pool, checked by
promtool and against what LVM itself reports."""

import os
import re
import subprocess

from . import node
from .node import Pod, check_pool, slab_at

TEXTFILE_DIR = "/tmp/node-exporter-textfile"
PROM = os.path.join(TEXTFILE_DIR, "ax_vol_plugin.prom")


def samples() -> dict:
    """{'name{labels}': value} from the .prom file."""
    found = {}
    with open(PROM) as handle:
        for line in handle:
            if line.startswith("#") or not line.strip():
                continue
            key, _, value = line.rstrip("\n").rpartition(" ")
            found[key] = float(value)
    return found


def test_metrics_count_hits_misses_evictions_deletions_and_failures(kubelet):
    os.makedirs(TEXTFILE_DIR, exist_ok=True)
    for name in os.listdir(TEXTFILE_DIR):
        os.unlink(os.path.join(TEXTFILE_DIR, name))
    with open("/etc/ax-vol-plugin/vol_plugin.conf", "a") as handle:
        handle.write(f"metrics_dir = {TEXTFILE_DIR}\n")

    first = Pod(size_mb=256)
    assert kubelet.mount(first).ok and kubelet.unmount(first).ok  # miss, kept
    second = Pod(size_mb=256)
    assert kubelet.mount(second).ok  # hit
    node.fill(second, 0.8)
    assert kubelet.unmount(second).ok  # deleted by the usage rule
    third = Pod(size_mb=256)
    assert kubelet.mount(third).ok and kubelet.unmount(third).ok  # miss, kept
    big = Pod(size_mb=1900)
    assert kubelet.mount(big).ok, kubelet.calls[-1].message  # miss; evicts the free 256 MiB slab
    squeezed = Pod(size_mb=512)
    assert kubelet.mount(squeezed).status == "Failure"  # no room while `big` runs
    bad = Pod(size_mb=256, extra=(("size_mb", "abc"),))
    assert kubelet.mount(bad).status == "Failure"
    assert kubelet.unmount(big).ok

    checked = subprocess.run(["promtool", "check", "metrics"], stdin=open(PROM), capture_output=True, text=True)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")
    assert os.listdir(TEXTFILE_DIR) == ["ax_vol_plugin.prom"]
    found = samples()
    p = "ax_vol_plugin_"
    assert found[f"{p}cache_hits_total"] == 1
    assert found[f"{p}cache_misses_total"] == 3
    assert found[f"{p}evictions_total"] == 1
    assert found[f"{p}deletions_over_threshold_total"] == 1
    assert found[f'{p}failures_total{{reason="no_space",verb="mount"}}'] == 1
    assert found[f'{p}failures_total{{reason="bad_request",verb="mount"}}'] == 1
    assert found[f'{p}calls_total{{outcome="success",verb="mount"}}'] == 4
    assert found[f'{p}calls_total{{outcome="success",verb="unmount"}}'] == 4
    histogram_count = rf'{p}operation_duration_seconds_count\{{decision="\w+",verb="mount"\}}'
    mounts = sum(v for k, v in found.items() if re.fullmatch(histogram_count, k))
    assert mounts == 6

    # The gauges describe the pool as LVM has it now.
    pool = check_pool()
    (only,) = pool.values()
    assert only.state == "free" and only.tags["ax.size_mb"] == "1900"
    assert found[f'{p}slabs{{fs="ext4",size_mb="1900",state="free"}}'] == 1
    assert sum(v for k, v in found.items() if k.startswith(f"{p}slabs{{")) == 1
    assert found[f'{p}slab_bytes{{state="free"}}'] == only.size_bytes
    assert found[f"{p}volume_group_free_bytes"] == node.volume_group_free_bytes()


def test_no_metrics_dir_writes_no_metrics(kubelet):
    missing = "/tmp/no-such-textfile-dir"
    with open("/etc/ax-vol-plugin/vol_plugin.conf", "a") as handle:
        handle.write(f"metrics_dir = {missing}\n")
    pod = Pod(size_mb=128)
    assert kubelet.mount(pod).ok and slab_at(pod)
    assert kubelet.unmount(pod).ok
    assert not os.path.exists(missing)
