"""`ax-vol-plugin status`: every slab's state as the driver would judge it, usage, totals."""

from __future__ import annotations

import json
import time

from flexdriver.admin.cli import EXIT_FAILED, EXIT_OK
from flexdriver.pool import MIB, Kind, State
from flexdriver.system.mounts import MountEntry

from .simulated import DEAD, VG, me, slab

UID_A = "aaaaaaaa-0000-4000-8000-000000000001"
UID_B = "bbbbbbbb-0000-4000-8000-000000000002"


def seed_every_state(node, kubelet_dir):
    now = int(time.time())
    mine = kubelet_dir(UID_A)
    node.add(slab("slab-inuse", State.USED, 1, mount_dir=mine, uid=UID_A))
    node.mount_slab("slab-inuse", mine)
    node.add(slab("slab-free", State.FREE, 2, released_at=now - 3 * 3600, usage=123, size_mb=1024, scope="ns.ci"))
    node.add(slab("slab-orphan", State.USED, 3, mount_dir=kubelet_dir(UID_B, exists=False), uid=UID_B))
    node.add(slab("slab-half", State.CREATING, 4, mount_dir=kubelet_dir("c", exists=False), creator=DEAD))
    node.add(slab("slab-busy", State.CREATING, 5, mount_dir=kubelet_dir("d", exists=False), creator=me()))
    node.add(slab("slab-doomed", State.DOOMED, 6, mount_dir=mine))
    node.usage = 0.375
    return mine


def test_the_table_has_one_row_per_slab_with_the_drivers_view_of_it(node, invoke, kubelet_dir):
    mine = seed_every_state(node, kubelet_dir)
    result = invoke("status")
    assert result.exit_code == EXIT_OK, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SLAB", "SIZE", "FS", "SCOPE", "STATE", "LAST", "USED", "USE%", "POD", "MOUNT", "DIR"]
    rows = {line.split()[0]: line for line in lines[1:7]}
    assert rows["slab-inuse"].split() == ["slab-inuse", "256", "MiB", "ext4", "node", "in", "use", "now", "38%", UID_A, mine]
    assert rows["slab-free"].split() == ["slab-free", "1", "GiB", "ext4", "ns.ci", "free", "3h", "12%", "-", "-"]
    assert rows["slab-orphan"].split()[5] == "orphan"
    assert rows["slab-half"].split()[5] == "half-made"
    assert rows["slab-busy"].split()[5] == "busy"
    assert rows["slab-doomed"].split()[5] == "doomed"
    assert lines[-1] == (
        f"volume group {VG}: 8 GiB, 5.8 GiB free, 2.2 GiB in 6 slab(s): "
        "1 in use, 1 busy, 1 free, 1 orphan, 1 half-made, 1 doomed"
    )
    assert node.programs() == ["lvs"], "status only reads"


def test_json_is_one_object_with_the_same_facts(node, invoke, kubelet_dir):
    mine = seed_every_state(node, kubelet_dir)
    body = json.loads(invoke("status", "--json").stdout)
    assert body["volume_group"] == {
        "name": VG, "size_bytes": 8192 * MIB, "free_bytes": (8192 - 2304) * MIB, "slab_bytes": 2304 * MIB,
        "extent_bytes": 4 * MIB,
    }
    assert body["counts"] == {"in use": 1, "busy": 1, "free": 1, "orphan": 1, "half-made": 1, "doomed": 1}
    by_name = {row["name"]: row for row in body["slabs"]}
    inuse, free = by_name["slab-inuse"], by_name["slab-free"]
    assert (inuse["state"], inuse["pod"], inuse["mount_dir"], inuse["mounted_at"]) == ("in use", UID_A, mine, [mine])
    assert (inuse["last_used_s"], inuse["usage_percent"]) == (0, 37.5)
    assert (free["state"], free["scope"], free["usage_percent"], free["mounted_at"]) == ("free", "ns.ci", 12.3, [])
    assert 3 * 3600 <= free["last_used_s"] <= 3 * 3600 + 60
    assert by_name["slab-doomed"]["tagged"] == "doomed" and by_name["slab-half"]["tagged"] == "creating"


def test_a_free_slab_mounted_by_someone_is_in_use_not_free(node, invoke, tmp_path):
    node.add(slab("slab-1", State.FREE, 1, released_at=5))
    node.mounts.append(MountEntry(str(tmp_path), (253, 1), "ext4", "/dev/mapper/x"))
    (row,) = json.loads(invoke("status", "--json").stdout)["slabs"]
    assert row["state"] == "in use" and row["mounted_at"] == [str(tmp_path)]


def test_an_anonymous_slab_whose_pod_is_gone_is_an_orphan(node, invoke, kubelet_dir):
    node.add(slab("slab-anon", State.USED, 1, mount_dir=kubelet_dir(UID_B, exists=False), kind=Kind.ANONYMOUS))
    (row,) = json.loads(invoke("status", "--json").stdout)["slabs"]
    assert (row["state"], row["type"]) == ("orphan", "anonymous")


def test_lvs_with_unreadable_slab_tags_are_named_not_shown_as_slabs(node, invoke):
    node.add(slab("slab-ok", State.FREE, 1, released_at=5))
    node.volumes["slab-odd"] = {"size": 4 * MIB, "tags": {"ax.slab", "ax.state=free", "ax.state=used"}, "device": (253, 9)}
    node.volumes["not-ours"] = {"size": 4 * MIB, "tags": set(), "device": (253, 10)}
    result = invoke("status")
    assert "slab-odd" not in result.stdout.splitlines()[1]
    assert result.stdout.splitlines()[-1].startswith("tagged slab-odd but the tags do not describe a slab")
    body = json.loads(invoke("status", "--json").stdout)
    assert [r["name"] for r in body["slabs"]] == ["slab-ok"] and body["unreadable"] == ["slab-odd"]


def test_a_missing_volume_group_is_said_plainly(node, invoke):
    node.has_vg = False
    result = invoke("status")
    assert result.exit_code == EXIT_OK
    assert result.stdout == (
        f"volume group {VG} does not exist: the driver makes it on /dev/xvdz at the first mount, "
        "or run ax-vol-plugin prepare\n"
    )
    body = json.loads(invoke("status", "--json").stdout)
    assert body["volume_group"] is None and body["device"] == "/dev/xvdz"


def test_an_lvm_failure_is_one_line_on_stderr_and_exit_3(node, invoke):
    node.failing.add("lvs")
    result = invoke("status")
    assert result.exit_code == EXIT_FAILED and result.stdout == ""
    assert result.stderr.startswith("ax-vol-plugin: lvs ") and result.stderr.count("\n") == 1
