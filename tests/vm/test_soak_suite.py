"""tests/vm/soak_suite.py: the extrapolation to 10,000 pods, the targets, and the report's place in
docs/reliability.md."""

from __future__ import annotations

import pytest

from tests.vm import soak_suite


def block(cycles, etc_bytes, median_s, mda_free=4_600_000, log_bytes=None):
    return {
        "cycles": cycles, "etc_lvm_bytes": etc_bytes, "etc_lvm_files": etc_bytes // 20_000, "archive_files": 0,
        "mda_size": 9 << 20, "mda_free": mda_free, "metadata_bytes": 40_000,
        "log_bytes": log_bytes if log_bytes is not None else cycles * 1500,
        "log_files": 1, "median_s": median_s, "p90_s": median_s * 1.5, "mount_median_s": median_s,
        "unmount_median_s": median_s, "slabs": 20, "decisions_so_far": {"deleted slab": cycles // 7},
        "seconds": 300.0,
    }


def results(blocks, restore=None):
    return {"blocks": blocks, "log_cap_bytes": 60 << 20, "started": "now", "streams": 2, "resident": 12,
            "kernel": "6.1", "cpus": 2, "lvm": "2.03.16", "restore": restore}


def test_growth_after_the_first_block_is_carried_on_to_ten_thousand_pods():
    blocks = [block(100, 1_000_000, 2.0), block(200, 2_000_000, 2.0), block(300, 3_000_000, 2.0)]
    assert soak_suite.slope_per_pod(blocks, "etc_lvm_bytes") == pytest.approx(10_000)
    assert soak_suite.extrapolate(blocks, "etc_lvm_bytes") == pytest.approx(3_000_000 + 9_700 * 10_000)


def test_a_footprint_that_stops_growing_after_warm_up_stays_where_it_is():
    blocks = [block(100, 600_000, 2.0), block(300, 600_000, 2.0), block(500, 600_000, 2.0)]
    assert soak_suite.extrapolate(blocks, "etc_lvm_bytes") == 600_000


def test_latency_trend_is_a_line_through_every_block_not_its_end_points():
    flat_but_noisy_end = [block(100, 0, 2.0), block(200, 0, 2.0), block(300, 0, 2.0), block(400, 0, 2.0),
                          block(500, 0, 2.2)]
    trend = soak_suite.latency_trend(flat_but_noisy_end)
    end_points = (2.2 + (2.2 - 2.0) / 400 * 9_500) / 2.0
    assert 1.0 < trend < end_points


def test_unbounded_archive_misses_its_target_and_a_bounded_one_meets_it():
    growing = [block(100, 2_000_000, 2.0), block(200, 4_000_000, 2.1)]
    bounded = [block(100, 300_000, 2.0), block(500, 310_000, 2.1)]
    assert any("/etc/lvm" in m for m in soak_suite.missed(results(growing)))
    assert not soak_suite.missed(results(bounded))


def test_a_metadata_area_filling_at_this_pace_misses_its_target():
    filling = [block(100, 300_000, 2.0, mda_free=4_600_000), block(500, 300_000, 2.0, mda_free=4_400_000)]
    assert any("metadata area" in m for m in soak_suite.missed(results(filling)))


def test_latency_target_is_the_ratio_of_the_last_block_to_the_first():
    slower = [block(100, 300_000, 2.0), block(500, 300_000, 2.5)]
    assert soak_suite.missed(results(slower)) == [
        "median call latency, last block / first: " + soak_suite.verdicts(results(slower))[3][2] + " (target < 1.2x)"]


@pytest.mark.parametrize("change,fails", [
    ({}, False),
    ({"backup_seqno": 40}, True),  # the backup is not the current metadata
    ({"test_rc": 5}, True),
    ({"restore_rc": 5}, True),
    ({"pool_unchanged": False}, True),
])
def test_restore_check_needs_the_current_metadata_restored_unchanged(change, fails):
    restore = {"backup_seqno": 41, "vg_seqno": 41, "test_rc": 0, "restore_rc": 0, "pool_unchanged": True,
               "archives_listed": 11, **change}
    got = soak_suite.missed(results([block(100, 300_000, 2.0), block(500, 300_000, 2.0)], restore))
    assert bool(got) is fails


def test_the_report_lands_in_the_reliability_doc_and_a_second_run_replaces_it(tmp_path):
    soak, reliability = tmp_path / "soak.md", tmp_path / "reliability.md"
    reliability.write_text("# Reliability\n\nscenarios\n")
    soak.write_text("# Soak: first\n\n| a |\n")
    assert soak_suite.replace_in_reliability(str(reliability), str(soak))
    soak.write_text("# Soak: second\n")
    soak_suite.replace_in_reliability(str(reliability), str(soak))
    text = reliability.read_text()
    assert text.startswith("# Reliability\n\nscenarios\n")
    assert "## Soak: second" in text and "first" not in text and text.count(soak_suite.BEGIN) == 1


def test_no_soak_report_yet_adds_nothing(tmp_path):
    assert soak_suite.reliability_section(str(tmp_path / "missing.md")) == []


def test_a_reliability_report_written_again_keeps_the_soak_section(tmp_path, monkeypatch):
    from tests.vm import reliability_suite

    soak = tmp_path / "soak.md"
    soak.write_text("# Soak: what pod after pod leaves on a node\n\n| pods |\n")
    monkeypatch.setattr(soak_suite, "REPORT", str(soak))
    report = tmp_path / "reliability.md"
    reliability_suite.write_report(str(report), [], [])
    text = report.read_text()
    assert text.startswith("# Reliability")
    assert f"{soak_suite.BEGIN}\n## Soak: what pod after pod leaves on a node\n\n| pods |\n{soak_suite.END}" in text
