"""`ax-vol-plugin evict`: free slabs only, by age or count, filtered, under the node lock."""

from __future__ import annotations

import time

import pytest

from flexdriver.admin.cli import EXIT_OK, EXIT_USAGE
from flexdriver.pool import State

from .simulated import VG, slab

UID = "aaaaaaaa-0000-4000-8000-000000000001"
HOUR = 3600


@pytest.fixture
def pool(node, kubelet_dir):
    """Free slabs released 1, 5, 30 and 50 hours ago (one of them xfs, one 512 MiB), and a slab
    in use that was released long ago before its pod took it."""
    now = int(time.time())
    node.add(slab("slab-1h", State.FREE, 1, released_at=now - 1 * HOUR))
    node.add(slab("slab-5h", State.FREE, 2, released_at=now - 5 * HOUR, fs="xfs"))
    node.add(slab("slab-30h", State.FREE, 3, released_at=now - 30 * HOUR))
    node.add(slab("slab-50h", State.FREE, 4, released_at=now - 50 * HOUR, size_mb=512))
    mine = kubelet_dir(UID)
    node.add(slab("slab-inuse", State.USED, 5, mount_dir=mine, uid=UID))
    node.mount_slab("slab-inuse", mine)
    return node


def evicted(node):
    removes = [argv for argv in node.calls if argv[0] == "lvremove"]
    return [target.split("/", 1)[1] for argv in removes for target in argv[2:]]


def test_keep_n_keeps_the_most_recently_released(pool, invoke):
    result = invoke("evict", "--keep", "2", "--yes")
    assert result.exit_code == EXIT_OK, result.stderr
    assert pool.calls[-1] == ["lvremove", "--yes", f"{VG}/slab-30h", f"{VG}/slab-50h"]
    assert pool.locked[-2:] == [True, True]
    assert sorted(pool.volumes) == ["slab-1h", "slab-5h", "slab-inuse"]
    assert result.stdout.splitlines()[-1] == "evicted 2 slab(s), 768 MiB: slab-30h, slab-50h"


def test_older_than_takes_an_age(pool, invoke):
    invoke("evict", "--older-than", "1d", "--yes")
    assert evicted(pool) == ["slab-30h", "slab-50h"]


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--older-than", "4h", "--fs", "ext4"], ["slab-30h", "slab-50h"]),
        (["--older-than", "4h", "--size-mb", "512"], ["slab-50h"]),
        (["--keep", "0", "--fs", "xfs"], ["slab-5h"]),
        (["--keep", "1", "--older-than", "40h"], ["slab-50h"]),  # both given: both must agree
        (["--older-than", "30m"], ["slab-1h", "slab-5h", "slab-30h", "slab-50h"]),
    ],
)
def test_filters_and_criteria_combine(pool, invoke, args, expected):
    assert invoke("evict", *args, "--yes").exit_code == EXIT_OK
    assert evicted(pool) == expected


def test_never_a_slab_in_use_even_when_nothing_else_is_left(pool, invoke):
    invoke("evict", "--keep", "0", "--yes")
    assert "slab-inuse" not in evicted(pool) and list(pool.volumes) == ["slab-inuse"]


def test_dry_run_lists_and_changes_nothing(pool, invoke):
    result = invoke("evict", "--keep", "3", "--dry-run")
    assert result.exit_code == EXIT_OK
    assert result.stdout == "would evict slab-50h (512 MiB ext4, free for 2d)\n"
    assert pool.programs() == ["lvs"]


def test_nothing_matching_is_said_and_changes_nothing(pool, invoke):
    result = invoke("evict", "--older-than", "2w", "--yes")
    assert (result.exit_code, result.stdout) == (EXIT_OK, "no free slab matches; nothing to evict\n")
    assert pool.programs() == ["lvs"]


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "say which free slabs to evict"),
        (["--older-than", "7 days"], "is not a duration like 30m, 12h, 7d or 2w"),
        (["--older-than", "-1d"], "is not a duration"),
        (["--keep", "-1"], "-1 is not in the range x>=0"),
        (["--keep", "1", "--fs", "btrfs"], "'btrfs' is not one of 'ext4', 'xfs'"),
    ],
)
def test_bad_arguments_are_exit_2_and_change_nothing(pool, invoke, args, message):
    result = invoke("evict", *args, "--yes")
    assert result.exit_code == EXIT_USAGE and message in result.stderr
    assert pool.calls == []


def test_without_yes_and_no_terminal_it_refuses(pool, invoke):
    result = invoke("evict", "--keep", "0")
    assert result.exit_code == EXIT_USAGE and result.stderr.startswith("ax-vol-plugin: refusing to change the pool without --yes")
    assert evicted(pool) == []


def test_a_slab_claimed_after_the_listing_is_left_alone(pool, invoke, kubelet_dir, monkeypatch):
    def confirm_then_claim(question, yes):
        other = kubelet_dir("bbbbbbbb-0000-4000-8000-000000000002")
        pool.volumes["slab-50h"]["tags"] -= {t for t in pool.tags("slab-50h") if t.startswith(("ax.state=", "ax.released="))}
        pool.volumes["slab-50h"]["tags"] |= {"ax.state=used"}
        pool.mount_slab("slab-50h", other)

    monkeypatch.setattr("flexdriver.admin.evict.confirm", confirm_then_claim)
    result = invoke("evict", "--keep", "2", "--yes")
    assert "left slab-50h alone: it is no longer a free slab to evict" in result.stdout
    assert evicted(pool) == ["slab-30h"]
