"""Metrics in Prometheus' text format, for node_exporter's textfile collector.

Every driver call is its own short process, so counters and histograms are kept in a small
state file in the run dir (a tmpfs: they start again from zero after a reboot, which
Prometheus' rate() takes in its stride) and the whole .prom file is rewritten after each
mount and unmount: written beside its final name and renamed over it, so node_exporter never
reads half a file. Gauges describe the pool as the call left it, projected from the `lvs`
snapshot the call already took, so metrics cost no LVM command.

What is counted is read off the call's record (the same fields as its log line); this module
only adds them up. The state file is updated under its own lock, never the node lock: a call
waiting to count itself does not hold up decisions.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterable

from .config import Config
from .pool import Decision, Pool, Release, State, round_to_extents
from .system import files

PROM_FILE = "ax_vol_plugin.prom"
STATE_FILE = "metrics.json"
LOCK_FILE = "metrics.lock"
PREFIX = "ax_vol_plugin_"
# Seconds; from a warm mount on a fast node to a cold mkfs of a big slab on a slow one.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

HELP = {
    "calls_total": ("counter", "Driver calls by verb and outcome."),
    "cache_hits_total": ("counter", "Mounts that got a warm slab left by an earlier pod."),
    "cache_misses_total": ("counter", "Mounts of pooled graph storage that had to make a new, cold slab."),
    "evictions_total": ("counter", "Free warm slabs deleted to make room for a new slab."),
    "reclaimed_slabs_total": ("counter", "Half-made, doomed or orphaned anonymous slabs deleted by a later call."),
    "deletions_over_threshold_total": ("counter", "Slabs deleted at unmount because they were fuller than the usage threshold."),
    "removals_deferred_total": ("counter", "Slabs LVM could not remove yet (a busy device, e.g. mounted in another "
                                "mount namespace), left for a later call or gc."),
    "failures_total": ("counter", "Failed calls by verb and reason."),
    "operation_duration_seconds": ("histogram", "Wall time of mount and unmount calls, by verb and decision."),
    "slabs": ("gauge", "Slabs in the volume group by state, filesystem and size, as the last call left them."),
    "slab_bytes": ("gauge", "Bytes of the volume group held by slabs, by state."),
    "volume_group_size_bytes": ("gauge", "Size of the volume group."),
    "volume_group_free_bytes": ("gauge", "Unallocated bytes in the volume group."),
    "last_call_timestamp_seconds": ("gauge", "Unix time of the last mount or unmount call."),
    "snapshots_total": ("counter", "Thin mode: mounts that got a copy-on-write snapshot of a warm slab."),
    "thin_pool_data_bytes": ("gauge", "Thin mode: size of the thin pool's data, and bytes of it used, by kind "
                             "(size, used), as the last call read them."),
    "thin_pool_metadata_bytes": ("gauge", "Thin mode: size of the thin pool's metadata, and bytes of it used, "
                                 "by kind (size, used); the driver refuses new slabs past 75% used."),
}

Labels = tuple[tuple[str, str], ...]


def _key(name: str, labels: dict[str, str]) -> str:
    # A stable string key for the JSON state: name plus sorted labels.
    return json.dumps([name, sorted(labels.items())])


def _unkey(key: str) -> tuple[str, Labels]:
    name, labels = json.loads(key)
    return name, tuple((k, v) for k, v in labels)


# ---- what one call adds (pure) --------------------------------------------------------------


def increments(fields: dict[str, object], outcome: str, threshold: float) -> list[tuple[str, dict[str, str], float]]:
    """The counter increments one call's record stands for."""
    verb = str(fields.get("verb", ""))
    decision = fields.get("decision")
    found: list[tuple[str, dict[str, str], float]] = [
        ("calls_total", {"verb": verb, "outcome": outcome.lower()}, 1),
    ]
    if outcome != "Success":
        found.append(("failures_total", {"verb": verb, "reason": str(fields.get("reason", "error"))}, 1))
    pooled = fields.get("type", "graph") == "graph"
    if verb == "mount" and pooled:
        if decision in (Decision.REUSED, Decision.SNAPSHOTTED):
            found.append(("cache_hits_total", {}, 1))
        if decision is Decision.SNAPSHOTTED:
            found.append(("snapshots_total", {}, 1))
        elif decision in (Decision.CREATED, Decision.REFORMATTED):
            found.append(("cache_misses_total", {}, 1))
    evicted = fields.get("evicted") or []
    reclaimed = fields.get("reclaimed") or []
    if evicted:
        found.append(("evictions_total", {}, len(evicted)))
    if reclaimed:
        found.append(("reclaimed_slabs_total", {}, len(reclaimed)))
    unremovable = fields.get("unremovable") or []
    if unremovable:
        found.append(("removals_deferred_total", {}, len(unremovable)))
    usage = fields.get("usage")
    over_threshold = fields.get("release") is Release.DELETE and isinstance(usage, (int, float)) and usage > threshold
    if verb == "unmount" and decision is Decision.DELETED and pooled and over_threshold:
        found.append(("deletions_over_threshold_total", {}, 1))
    return found


def gauges_after(pool: Pool, fields: dict[str, object]) -> dict[str, float]:
    """The pool's gauges once this call's changes are applied to the snapshot it decided from."""
    removed = set(fields.get("evicted") or []) | set(fields.get("reclaimed") or [])
    if fields.get("discarded"):
        removed.add(fields["discarded"])
    decision = fields.get("decision")
    name = fields.get("slab")
    if decision is Decision.DELETED:
        removed.add(name)
    slabs = []  # (state, fs, size_mb, bytes)
    free_bytes = pool.vg_free_bytes
    for slab in pool.slabs:
        if slab.name in removed:
            if pool.thin_pool is None:  # a thin slab's blocks go back to the thin pool, not the VG
                free_bytes += slab.size_bytes
            continue
        state = "used" if slab.state is State.CLAIMED else slab.state.value  # claimed: being handed to a pod
        if slab.name == name and decision in (Decision.REUSED, Decision.REFORMATTED):
            state = "used"
        elif slab.name == name and decision in (Decision.KEPT, Decision.KEPT_UNMEASURED):
            state = "free"
        elif slab.name == name and decision is Decision.DEFERRED:
            state = "doomed"  # unmounted, tagged for removal, its device still busy
        slabs.append((state, slab.fs_type, slab.size_mb, slab.size_bytes))
    if decision in (Decision.CREATED, Decision.SNAPSHOTTED) and isinstance(fields.get("size_mb"), int):
        size = round_to_extents(fields["size_mb"], pool.extent_bytes)
        slabs.append(("used", str(fields.get("fs", "")), fields["size_mb"], size))
        if pool.thin_pool is None:  # a thin slab takes no extents of its own (slab_bytes: virtual size)
            free_bytes -= size
    gauges: dict[str, float] = {
        _key("volume_group_size_bytes", {}): pool.vg_size_bytes,
        _key("volume_group_free_bytes", {}): max(free_bytes, 0),
    }
    for state in ("used", "free", "creating", "doomed"):
        gauges[_key("slab_bytes", {"state": state})] = sum(b for s, _, _, b in slabs if s == state)
    for state, fs, size_mb, _ in slabs:
        key = _key("slabs", {"state": state, "fs": fs, "size_mb": str(size_mb)})
        gauges[key] = gauges.get(key, 0) + 1
    thin = pool.thin_pool
    if thin is not None:  # as read before the call's own change: blocks are known only to the kernel
        gauges[_key("thin_pool_data_bytes", {"kind": "size"})] = thin.data_bytes
        gauges[_key("thin_pool_data_bytes", {"kind": "used"})] = thin.data_used_bytes
        gauges[_key("thin_pool_metadata_bytes", {"kind": "size"})] = thin.metadata_bytes
        gauges[_key("thin_pool_metadata_bytes", {"kind": "used"})] = thin.metadata_used_bytes
    return gauges


def add(state: dict, fields: dict[str, object], outcome: str, duration_s: float, threshold: float,
        pool: Pool | None, now: float, snapshot_at: float | None = None) -> dict:
    """The state with one call counted in (pure: returns a new dict)."""
    counters = dict(state.get("counters", {}))
    for name, labels, amount in increments(fields, outcome, threshold):
        key = _key(name, labels)
        counters[key] = counters.get(key, 0) + amount
    histograms = {k: dict(v, buckets=list(v["buckets"])) for k, v in state.get("histograms", {}).items()}
    verb = str(fields.get("verb", ""))
    if verb in ("mount", "unmount"):
        decision = fields.get("decision")
        decision = decision.label if isinstance(decision, Decision) else ("failed" if outcome != "Success" else "other")
        key = _key("operation_duration_seconds", {"verb": verb, "decision": decision})
        histogram = histograms.setdefault(key, {"buckets": [0] * len(BUCKETS), "sum": 0.0, "count": 0})
        for index, bound in enumerate(BUCKETS):
            if duration_s <= bound:
                histogram["buckets"][index] += 1
        histogram["sum"] += duration_s
        histogram["count"] += 1
    gauges, gauges_at = state.get("gauges", {}), state.get("gauges_at", 0.0)
    snapshot_at = now if snapshot_at is None else snapshot_at
    if pool is not None and snapshot_at >= gauges_at:
        # Snapshots are taken under the node lock, so their times order the calls' decisions;
        # a call that counts itself late must not overwrite a later call's picture of the pool.
        gauges, gauges_at = gauges_after(pool, fields), snapshot_at
    return {"counters": counters, "histograms": histograms, "gauges": gauges, "gauges_at": gauges_at, "last_call": now}


# ---- the text format (pure) -----------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name: str, labels: Iterable[tuple[str, str]], value: float) -> str:
    labels = list(labels)
    text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    number = repr(float(value)) if isinstance(value, float) and not float(value).is_integer() else str(int(value))
    return f"{PREFIX}{name}{{{text}}} {number}" if text else f"{PREFIX}{name} {number}"


def render(state: dict) -> str:
    samples: dict[str, list[str]] = {name: [] for name in HELP}
    for key, value in sorted(state.get("counters", {}).items()):
        name, labels = _unkey(key)
        samples[name].append(_sample(name, labels, value))
    for key, value in sorted(state.get("gauges", {}).items()):
        name, labels = _unkey(key)
        samples[name].append(_sample(name, labels, value))
    for key, histogram in sorted(state.get("histograms", {}).items()):
        name, labels = _unkey(key)
        cumulative = histogram["buckets"]
        for bound, count in zip(BUCKETS, cumulative):
            samples[name].append(_sample(f"{name}_bucket", labels + (("le", repr(bound)),), count))
        samples[name].append(_sample(f"{name}_bucket", labels + (("le", "+Inf"),), histogram["count"]))
        samples[name].append(_sample(f"{name}_sum", labels, float(histogram["sum"]) + 0.0))
        samples[name].append(_sample(f"{name}_count", labels, histogram["count"]))
    if "last_call" in state:
        samples["last_call_timestamp_seconds"].append(_sample("last_call_timestamp_seconds", (), round(state["last_call"], 3)))
    lines = []
    for name, (kind, text) in HELP.items():
        if samples[name]:
            lines += [f"# HELP {PREFIX}{name} {text}", f"# TYPE {PREFIX}{name} {kind}", *samples[name]]
    return "\n".join(lines) + "\n"


# ---- the files ------------------------------------------------------------------------------


def record_call(
    config: Config, fields: dict[str, object], outcome: str, duration_s: float,
    pool: Pool | None = None, snapshot_at: float | None = None,
) -> bool:
    """Count one call in and rewrite the .prom file. False when metrics are off (no dir)."""
    if not config.metrics_dir or not os.path.isdir(config.metrics_dir):
        return False
    untrusted = files.untrusted_dir(config.metrics_dir)
    if untrusted is not None:
        raise MetricsRefused(f"metrics dir refused, metrics off: {untrusted}")
    os.makedirs(config.run_dir, mode=0o700, exist_ok=True)
    lock = files.open_lock(os.path.join(config.run_dir, LOCK_FILE))
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state_path = os.path.join(config.run_dir, STATE_FILE)
        try:
            state = json.loads(files.read_text(state_path))
        except (OSError, ValueError):
            state = {}  # first call since boot, or a state file cut short by a crash: start again
        state = add(state, fields, outcome, duration_s, config.usage_threshold, pool, time.time(), snapshot_at)
        files.replace(state_path, json.dumps(state))
        files.replace(os.path.join(config.metrics_dir, PROM_FILE), render(state), mode=0o644)
    finally:
        os.close(lock)
    return True


class MetricsRefused(Exception):
    """The metrics dir is one that others than root can change: nothing is written into it."""

