"""`ax-vol-plugin gc`: reclaims exactly what the driver would, under the node lock."""

from __future__ import annotations

import time

from flexdriver.admin.cli import EXIT_FAILED, EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE
from flexdriver.pool import Kind, State, encode_dir

from .simulated import DEAD, VG, me, slab

UID = "aaaaaaaa-0000-4000-8000-000000000001"
GONE = "bbbbbbbb-0000-4000-8000-000000000002"


def seed(node, kubelet_dir):
    """One of everything: only orphan, anon, half and doomed are gc's to reclaim."""
    mine = kubelet_dir(UID)
    node.add(slab("slab-inuse", State.USED, 1, mount_dir=mine, uid=UID))
    node.mount_slab("slab-inuse", mine)
    node.add(slab("slab-resting", State.USED, 2, mount_dir=kubelet_dir("resting"), uid="resting"))
    node.add(slab("slab-free", State.FREE, 3, released_at=5))
    orphan_dir = kubelet_dir(GONE, exists=False)
    node.add(slab("slab-orphan", State.USED, 4, mount_dir=orphan_dir, uid=GONE, scope="ns.ci"))
    node.add(slab("slab-anon", State.USED, 5, mount_dir=kubelet_dir("anon", exists=False), kind=Kind.ANONYMOUS))
    node.add(slab("slab-half", State.CREATING, 6, mount_dir=kubelet_dir("half", exists=False), creator=DEAD))
    node.add(slab("slab-busy", State.CREATING, 7, mount_dir=kubelet_dir("busy", exists=False), creator=me()))
    node.add(slab("slab-doomed", State.DOOMED, 8, mount_dir=mine))
    return orphan_dir


def test_dry_run_lists_what_it_would_do_and_changes_nothing(node, invoke, kubelet_dir):
    orphan_dir = seed(node, kubelet_dir)
    before = {name: set(v["tags"]) for name, v in node.volumes.items()}
    result = invoke("gc", "--dry-run")
    assert result.exit_code == EXIT_OK
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["would", "free"], ["would", "delete"], ["would", "delete"], ["would", "delete"],
    ]
    assert [line.split()[2] for line in lines] == ["slab-orphan", "slab-anon", "slab-half", "slab-doomed"]
    assert lines[0].endswith(f"in use by {orphan_dir}, not mounted, and {orphan_dir.rsplit('/volumes/', 1)[0]} is gone"
                             "; never measured, so measured before its next pod gets it")
    assert "half-made by a call that is no longer alive" in lines[2] and "doomed" in lines[3]
    assert node.programs() == ["lvs"]
    assert {name: v["tags"] for name, v in node.volumes.items()} == before


def test_yes_frees_orphans_as_unmount_would_and_deletes_garbage_under_the_lock(node, invoke, kubelet_dir):
    orphan_dir = seed(node, kubelet_dir)
    before = int(time.time())
    result = invoke("gc", "--yes")
    assert result.exit_code == EXIT_OK, result.stderr
    assert node.programs() == ["lvs", "lvs", "lvchange", "lvremove"]
    assert node.locked == [False, True, True, True]
    retag = node.calls[2]
    (released,) = [t for t in node.tags("slab-orphan") if t.startswith("ax.released=")]
    assert before <= int(released.split("=")[1]) <= int(time.time())
    assert retag == [
        "lvchange", "--deltag", f"ax.dir={encode_dir(orphan_dir)}", "--deltag", f"ax.pod={GONE}",
        "--deltag", "ax.state=used", "--addtag", released, "--addtag", "ax.state=free", f"{VG}/slab-orphan",
    ]
    assert node.tags("slab-orphan") == {
        "ax.slab", "ax.type=graph", "ax.fs=ext4", "ax.size_mb=256", "ax.scope=ns.ci", "ax.state=free", released,
    }
    assert node.calls[3] == ["lvremove", "--yes", f"{VG}/slab-anon", f"{VG}/slab-half", f"{VG}/slab-doomed"]
    assert sorted(node.volumes) == ["slab-busy", "slab-free", "slab-inuse", "slab-orphan", "slab-resting"]
    assert result.stdout.splitlines()[-4:] == [
        "freed slab-orphan: back in the pool", "deleted slab-anon", "deleted slab-half", "deleted slab-doomed",
    ]


def test_nothing_to_reclaim_changes_nothing(node, invoke, kubelet_dir):
    node.add(slab("slab-free", State.FREE, 3, released_at=5))
    result = invoke("gc", "--yes")
    assert (result.exit_code, result.stdout) == (EXIT_OK, "nothing to reclaim\n")
    assert node.programs() == ["lvs"]


def test_without_yes_and_no_terminal_it_refuses_in_one_line(node, invoke, kubelet_dir):
    seed(node, kubelet_dir)
    result = invoke("gc")
    assert result.exit_code == EXIT_USAGE
    assert result.stderr == (
        "ax-vol-plugin: refusing to change the pool without --yes (no terminal to confirm on); nothing changed\n"
    )
    assert node.programs() == ["lvs"]


def test_at_a_terminal_it_asks_and_a_no_changes_nothing(node, invoke, kubelet_dir):
    seed(node, kubelet_dir)
    result = invoke("gc", tty=True, input="n\n")
    assert result.exit_code == EXIT_USAGE and "Reclaim these 4 slab(s)? [y/N]" in result.stdout
    assert result.stderr == "ax-vol-plugin: not confirmed; nothing changed\n"
    assert node.programs() == ["lvs"]
    result = invoke("gc", tty=True, input="y\n")
    assert result.exit_code == EXIT_OK and "deleted slab-doomed" in result.stdout


def test_a_slab_claimed_between_listing_and_lock_is_left_alone(node, invoke, kubelet_dir, monkeypatch):
    orphan_dir = seed(node, kubelet_dir)
    from flexdriver.admin import common

    real_confirm = common.confirm

    def confirm_then_pod_returns(question, yes):
        real_confirm(question, yes)
        kubelet_dir(GONE)  # the pod dir is back (a retried mount): no longer an orphan
        node.mount_slab("slab-orphan", orphan_dir)

    monkeypatch.setattr("flexdriver.admin.gc.confirm", confirm_then_pod_returns)
    result = invoke("gc", "--yes")
    assert "left slab-orphan alone: it changed since it was listed" in result.stdout
    assert "ax.state=used" in node.tags("slab-orphan")
    assert [argv[0] for argv in node.calls] == ["lvs", "lvs", "lvremove"]


def test_slabs_lvm_cannot_remove_are_named_left_for_later_and_exit_1(node, invoke, kubelet_dir):
    seed(node, kubelet_dir)
    node.failing.add("lvremove")  # every slab's device busy
    result = invoke("gc", "--yes")
    assert result.exit_code == EXIT_PROBLEMS
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("could not delete slab-") and "busy" in line for line in lines)


def test_a_busy_node_lock_is_exit_3(node, invoke, kubelet_dir, tmp_path):
    import fcntl
    import os

    seed(node, kubelet_dir)
    (tmp_path / "run").mkdir(exist_ok=True)
    (tmp_path / "vol_plugin.conf").write_text(
        f"[vol_plugin]\nlog_file = {tmp_path}/driver.log\nrun_dir = {tmp_path}/run\nlock_timeout_s = 0.2\n"
    )
    fd = os.open(tmp_path / "run" / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        result = invoke("gc", "--yes")
    finally:
        os.close(fd)
    assert result.exit_code == EXIT_FAILED and "node lock was held" in result.stderr
    assert node.programs() == ["lvs"]
