"""metrics.py: what each call counts, the pool's gauges, the text format, and the files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from flexdriver import metrics
from flexdriver.config import Config
from flexdriver.pool import MIB, Decision, Kind, Pool, Release, Slab, State

EXTENT = 4 * MIB
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def slab(name, state, size_mb=1024, fs="ext4"):
    return Slab(name, size_mb * MIB, size_mb, fs, Kind.GRAPH, state)


def pool(*slabs, free_mb=1000):
    return Pool("vg-ax", 10240 * MIB, free_mb * MIB, EXTENT, tuple(slabs))


def counted(fields, outcome="Success", threshold=0.5):
    return {(name, tuple(sorted(labels.items()))): n for name, labels, n in metrics.increments(fields, outcome, threshold)}


def gauge(gauges, name, **labels):
    return gauges.get(json.dumps([name, sorted(labels.items())]), 0)


def test_a_warm_mount_is_a_cache_hit():
    found = counted({"verb": "mount", "type": "graph", "decision": Decision.REUSED, "slab": "s"})
    assert found == {("calls_total", (("outcome", "success"), ("verb", "mount"))): 1, ("cache_hits_total", ()): 1}


@pytest.mark.parametrize("decision", [Decision.CREATED, Decision.REFORMATTED])
def test_a_cold_mount_is_a_cache_miss_and_evictions_and_reclaims_are_counted(decision):
    found = counted({"verb": "mount", "type": "graph", "decision": decision, "evicted": ["a", "b"], "reclaimed": ["c"]})
    assert found[("cache_misses_total", ())] == 1
    assert found[("evictions_total", ())] == 2 and found[("reclaimed_slabs_total", ())] == 1
    assert ("cache_hits_total", ()) not in found


@pytest.mark.parametrize("decision", [Decision.RESUMED, Decision.ALREADY_MOUNTED])
def test_a_pods_own_slab_again_is_neither_hit_nor_miss(decision):
    found = counted({"verb": "mount", "type": "graph", "decision": decision})
    assert set(found) == {("calls_total", (("outcome", "success"), ("verb", "mount")))}


def test_slabs_lvm_could_not_remove_are_counted_and_not_taken_for_removed():
    found = counted({"verb": "mount", "type": "graph", "decision": Decision.REUSED, "unremovable": ["a", "b"]})
    assert found[("removals_deferred_total", ())] == 2
    found = counted({"verb": "unmount", "type": "graph", "decision": Decision.DEFERRED, "unremovable": ["s"], "usage": 0.9})
    assert found[("removals_deferred_total", ())] == 1 and ("deletions_over_threshold_total", ()) not in found


def test_anonymous_volumes_are_not_cache_traffic():
    found = counted({"verb": "mount", "type": "anonymous", "decision": Decision.CREATED})
    assert ("cache_misses_total", ()) not in found
    found = counted({"verb": "unmount", "type": "anonymous", "decision": Decision.DELETED, "usage": 0.9})
    assert ("deletions_over_threshold_total", ()) not in found


def test_deletion_by_the_usage_rule_is_counted_against_the_configured_threshold():
    fields = {"verb": "unmount", "type": "graph", "decision": Decision.DELETED, "usage": 0.7, "release": Release.DELETE}
    assert counted(fields, threshold=0.5)[("deletions_over_threshold_total", ())] == 1
    assert ("deletions_over_threshold_total", ()) not in counted(fields, threshold=0.8)
    assert ("deletions_over_threshold_total", ()) not in counted({**fields, "usage": None})
    # The release planner's decision is what counts: a doomed slab deleted on a retry was not.
    assert ("deletions_over_threshold_total", ()) not in counted({**fields, "release": None})


def test_failures_by_verb_and_reason():
    found = counted({"verb": "mount", "reason": "no_space"}, outcome="Failure")
    assert found[("failures_total", (("reason", "no_space"), ("verb", "mount")))] == 1
    assert found[("calls_total", (("outcome", "failure"), ("verb", "mount")))] == 1


def test_gauges_after_a_cold_mount_that_evicted():
    before = pool(slab("old", State.FREE), slab("busy", State.USED), free_mb=0)
    fields = {"verb": "mount", "decision": Decision.CREATED, "slab": "new", "size_mb": 1022, "fs": "xfs", "evicted": ["old"]}
    gauges = metrics.gauges_after(before, fields)
    assert gauge(gauges, "slabs", state="used", fs="xfs", size_mb="1022") == 1
    assert gauge(gauges, "slabs", state="used", fs="ext4", size_mb="1024") == 1
    assert gauge(gauges, "slabs", state="free", fs="ext4", size_mb="1024") == 0
    assert gauge(gauges, "slab_bytes", state="used") == 2048 * MIB  # 1022 MiB rounds up to whole 4 MiB extents
    assert gauge(gauges, "volume_group_free_bytes") == 0 and gauge(gauges, "volume_group_size_bytes") == 10240 * MIB


def test_gauges_after_reuse_keep_and_delete():
    before = pool(slab("warm", State.FREE), slab("mine", State.USED))
    reused = metrics.gauges_after(before, {"decision": Decision.REUSED, "slab": "warm"})
    assert gauge(reused, "slabs", state="used", fs="ext4", size_mb="1024") == 2
    kept = metrics.gauges_after(before, {"decision": Decision.KEPT, "slab": "mine"})
    assert gauge(kept, "slabs", state="free", fs="ext4", size_mb="1024") == 2
    deleted = metrics.gauges_after(before, {"decision": Decision.DELETED, "slab": "mine"})
    assert gauge(deleted, "slab_bytes", state="used") == 0
    assert gauge(deleted, "volume_group_free_bytes") == 2024 * MIB


def test_histogram_buckets_are_cumulative():
    state = {}
    for seconds in (0.04, 0.3, 7.0, 400.0):
        state = metrics.add(state, {"verb": "mount", "decision": Decision.CREATED}, "Success", seconds, 0.5, None, 1.0)
    (histogram,) = state["histograms"].values()
    by_bound = dict(zip(metrics.BUCKETS, histogram["buckets"]))
    assert (by_bound[0.05], by_bound[0.5], by_bound[10.0], by_bound[300.0]) == (1, 2, 3, 3)
    assert histogram["count"] == 4 and histogram["sum"] == pytest.approx(407.34)


def test_an_older_snapshot_never_replaces_a_newer_picture_of_the_pool():
    newer = metrics.add({}, {"verb": "mount", "decision": Decision.KEPT, "slab": "x"}, "Success", 1, 0.5,
                        pool(slab("x", State.USED)), now=20.0, snapshot_at=10.0)
    late = metrics.add(newer, {"verb": "mount", "decision": Decision.REUSED, "slab": "y"}, "Success", 1, 0.5,
                       pool(slab("y", State.FREE), free_mb=5), now=21.0, snapshot_at=9.0)
    assert late["gauges"] == newer["gauges"]
    assert sum(late["counters"].values()) == 3  # but its counts are in


def rendered_sample_state():
    state = {}
    calls = [
        ({"verb": "mount", "type": "graph", "decision": Decision.CREATED, "slab": "n", "size_mb": 512, "fs": "ext4"},
         "Success"),
        ({"verb": "mount", "type": "graph", "decision": Decision.REUSED, "slab": "w"}, "Success"),
        ({"verb": "unmount", "type": "graph", "decision": Decision.DELETED, "slab": "w", "usage": 0.8,
          "release": Release.DELETE}, "Success"),
        ({"verb": "mount", "reason": "bad_request"}, "Failure"),
    ]
    for fields, outcome in calls:
        state = metrics.add(state, fields, outcome, 0.7, 0.5, pool(slab("w", State.FREE)), now=1700000000.5)
    return state


def test_rendered_text_passes_promtool():
    text = metrics.render(rendered_sample_state())
    assert 'ax_vol_plugin_failures_total{reason="bad_request",verb="mount"} 1' in text
    assert 'ax_vol_plugin_operation_duration_seconds_bucket{decision="reuse",verb="mount",le="+Inf"} 1' in text
    assert "ax_vol_plugin_cache_hits_total 1" in text
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


def test_label_values_are_escaped():
    assert metrics._sample("x", (("reason", 'a"b\\c\nd'),), 1) == 'ax_vol_plugin_x{reason="a\\"b\\\\c\\nd"} 1'


def test_no_metrics_dir_means_no_files(tmp_path):
    config = Config(metrics_dir=str(tmp_path / "absent"), run_dir=str(tmp_path / "run"))
    assert metrics.record_call(config, {"verb": "mount"}, "Success", 0.1) is False
    assert not (tmp_path / "run").exists()
    assert metrics.record_call(Config(metrics_dir="", run_dir=str(tmp_path / "run")), {"verb": "mount"}, "Success", 0.1) is False


def test_a_metrics_dir_another_user_owns_is_refused_and_nothing_is_written(tmp_path):
    textfile = tmp_path / "node-exporter"
    textfile.mkdir(mode=0o755)
    os.chown(textfile, 65534, 65534)
    config = Config(metrics_dir=str(textfile), run_dir=str(tmp_path / "run"))
    with pytest.raises(metrics.MetricsRefused, match=f"metrics off: {textfile} is owned by uid 65534"):
        metrics.record_call(config, {"verb": "mount"}, "Success", 0.1)
    assert list(textfile.iterdir()) == [] and not (tmp_path / "run").exists()


COUNTER = """
import sys
from flexdriver import metrics
from flexdriver.config import Config
from flexdriver.pool import Decision
config = Config(metrics_dir=sys.argv[1], run_dir=sys.argv[2])
for _ in range(int(sys.argv[3])):
    metrics.record_call(config, {"verb": "mount", "type": "graph", "decision": Decision.REUSED}, "Success", 0.2)
"""


def test_concurrent_calls_each_count_once_and_the_file_is_always_whole(tmp_path):
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    run_dir = tmp_path / "run"
    procs = [
        subprocess.Popen([sys.executable, "-c", COUNTER, str(textfile), str(run_dir), "25"], cwd=REPO) for _ in range(8)
    ]
    assert [p.wait() for p in procs] == [0] * 8
    assert os.listdir(textfile) == ["ax_vol_plugin.prom"]  # no temporary file left behind
    text = (textfile / "ax_vol_plugin.prom").read_text()
    assert "ax_vol_plugin_cache_hits_total 200" in text
    assert 'ax_vol_plugin_calls_total{outcome="success",verb="mount"} 200' in text


def test_a_damaged_state_file_starts_the_counts_again(tmp_path):
    (tmp_path / "textfile").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text('{"counters": {"tru')
    config = Config(metrics_dir=str(tmp_path / "textfile"), run_dir=str(tmp_path / "run"))
    assert metrics.record_call(config, {"verb": "unmount", "decision": Decision.KEPT}, "Success", 0.1)
    assert 'calls_total{outcome="success",verb="unmount"} 1' in (tmp_path / "textfile" / "ax_vol_plugin.prom").read_text()


def test_a_snapshot_of_a_warm_slab_is_a_cache_hit_and_a_snapshot():
    found = counted({"verb": "mount", "type": "graph", "decision": Decision.SNAPSHOTTED, "slab": "s"})
    assert found[("cache_hits_total", ())] == 1 and found[("snapshots_total", ())] == 1
    assert ("cache_misses_total", ()) not in found


def test_thin_mode_gauges_the_thin_pool_and_new_thin_slabs_take_no_extents():
    from flexdriver.pool import ThinPool

    thin = ThinPool("thinpool", 8192 * MIB, 2048 * MIB, 64 * MIB, 8 * MIB)
    snapshot = pool(slab("warm", State.FREE), free_mb=0)._replace(thin_pool=thin)
    gauges = metrics.gauges_after(snapshot, {"verb": "mount", "decision": Decision.SNAPSHOTTED, "slab": "new",
                                             "size_mb": 1024, "fs": "ext4"})
    assert gauge(gauges, "thin_pool_data_bytes", kind="size") == 8192 * MIB
    assert gauge(gauges, "thin_pool_data_bytes", kind="used") == 2048 * MIB
    assert gauge(gauges, "thin_pool_metadata_bytes", kind="used") == 8 * MIB
    assert gauge(gauges, "volume_group_free_bytes") == 0
    assert gauge(gauges, "slabs", state="used", fs="ext4", size_mb="1024") == 1
    assert gauge(gauges, "slabs", state="free", fs="ext4", size_mb="1024") == 1


def test_a_thin_slab_removed_gives_no_extents_back_to_the_volume_group():
    from flexdriver.pool import ThinPool

    thin = ThinPool("thinpool", 8192 * MIB, 2048 * MIB, 64 * MIB, 8 * MIB)
    snapshot = pool(slab("old", State.FREE), free_mb=0)._replace(thin_pool=thin)
    gauges = metrics.gauges_after(snapshot, {"verb": "mount", "decision": Decision.SNAPSHOTTED, "evicted": ["old"]})
    assert gauge(gauges, "volume_group_free_bytes") == 0
