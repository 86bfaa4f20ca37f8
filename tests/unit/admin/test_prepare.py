"""`ax-vol-plugin prepare`: the volume group on a blank device, by the driver's own function."""

from __future__ import annotations

import pytest

from flexdriver import volume_group
from flexdriver.admin.cli import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE
from flexdriver.pool import State
from flexdriver.system import lvm as lvm_module
from flexdriver.volume_group import check_blank_device

from .simulated import VG, slab


@pytest.fixture
def blank(node, monkeypatch):
    """No volume group yet; every path counts as a block device (the unit tests have none)."""
    node.has_vg = False
    monkeypatch.setattr(volume_group.stat, "S_ISBLK", lambda mode: True)
    return node


def test_a_blank_device_gets_the_volume_group_under_the_lock(blank, invoke, tmp_path):
    device = str(tmp_path)
    result = invoke("prepare", "--device", device, "--yes")
    assert result.exit_code == EXIT_OK, result.stderr
    blkid = ["blkid", "-p", "-o", "export", device]
    vgcreate = ["vgcreate", "--yes", "--metadatasize", "8m", VG, device]
    assert [argv for argv in blank.calls if argv[0] in ("blkid", "vgcreate")] == [blkid, blkid, vgcreate]
    assert blank.locked[blank.calls.index(vgcreate)] is True
    assert result.stdout.splitlines()[0] == f"created volume group {VG} on {device} (8 GiB)"
    assert "note: the config names device /dev/xvdz" in result.stdout


def test_a_device_with_a_signature_is_refused_naming_what_is_on_it(blank, invoke, tmp_path):
    blank.signatures = "TYPE=ext4\nUUID=1234\n"
    result = invoke("prepare", "--device", str(tmp_path), "--yes")
    assert result.exit_code == EXIT_PROBLEMS
    assert result.stderr == (
        f"ax-vol-plugin: volume group {VG} does not exist and device {tmp_path} is not blank (it carries type ext4); "
        "refusing to create it there. Wipe the device if it is meant for slabs, or name another device or "
        "volume group in the config\n"
    )
    assert "vgcreate" not in blank.programs()


def test_something_that_is_not_a_block_device_is_refused(node, invoke, tmp_path):
    node.has_vg = False
    result = invoke("prepare", "--device", str(tmp_path / "nothing"), "--yes")
    assert result.exit_code == EXIT_PROBLEMS and "cannot be used to create it: No such file or directory" in result.stderr
    (tmp_path / "file").write_text("")
    result = invoke("prepare", "--device", str(tmp_path / "file"), "--yes")
    assert result.stderr == f"ax-vol-plugin: device {tmp_path / 'file'} is not a block device\n"
    assert "vgcreate" not in node.programs()


def test_an_existing_volume_group_is_left_as_it_is(node, invoke, tmp_path):
    result = invoke("prepare", "--device", str(tmp_path), "--yes")
    assert (result.exit_code, result.stdout) == (EXIT_OK, f"volume group {VG} already exists; nothing to do\n")
    assert node.programs() == ["lvs", "vgs"]


def test_without_yes_and_no_terminal_it_refuses_before_touching_anything(blank, invoke, tmp_path):
    result = invoke("prepare", "--device", str(tmp_path))
    assert result.exit_code == EXIT_USAGE and "without --yes" in result.stderr
    assert "vgcreate" not in blank.programs()


def test_the_device_defaults_to_the_configs(blank, invoke, tmp_path):
    conf = tmp_path / "vol_plugin.conf"
    conf.write_text(conf.read_text() + f"device = {tmp_path}\n")
    invoke("prepare", "--yes")
    assert [argv for argv in blank.calls if argv[0] == "vgcreate"] == [
        ["vgcreate", "--yes", "--metadatasize", "8m", VG, str(tmp_path)]
    ]


def test_the_driver_and_prepare_share_the_check(node, tmp_path):
    # The driver's unit tests cover its side; here the function itself refuses the same way.
    from flexdriver.errors import DeviceRefused

    with pytest.raises(DeviceRefused, match="is not a block device"):
        check_blank_device(node, lvm_module.LVM(node, VG), str(tmp_path))


def test_a_physical_volume_lvm_does_not_show_is_refused_saying_what_it_may_be(blank, invoke, tmp_path):
    blank.signatures = "TYPE=LVM2_member\nUUID=1234\n"
    result = invoke("prepare", "--device", str(tmp_path), "--yes")
    assert result.exit_code == EXIT_PROBLEMS
    assert f"volume group {VG} is not visible to LVM, and device {tmp_path} carries an LVM physical volume" in result.stderr
    assert "another volume group" in result.stderr and "cannot read it" in result.stderr
    assert "vgcreate" not in blank.programs()


# ---- thin provisioning: made on a blank device, or switched to on a drained node -------------


def test_a_blank_device_gets_the_volume_group_and_its_thin_pool(blank, invoke, tmp_path, monkeypatch):
    monkeypatch.setattr(volume_group.host, "device_size", lambda device: 100 << 30)
    result = invoke("prepare", "--device", str(tmp_path), "--thin", "--yes")
    assert result.exit_code == EXIT_OK, result.stderr
    (create,) = [argv for argv in blank.calls if argv[0] == "lvcreate"]
    assert create[:4] == ["lvcreate", "--yes", "--type", "thin-pool"]
    # 100 GiB in 64 KiB chunks at 128 bytes each: 200 MiB of metadata.
    assert create[create.index("--poolmetadatasize") + 1] == f"{200 << 20}b"
    assert blank.thin_pool["error_when_full"]
    assert "with a thin pool" in result.stdout
    assert "set provisioning = thin" in result.stdout  # the config still says thick


def test_a_drained_thick_node_switches_to_thin_deleting_its_free_slabs(node, invoke):
    node.add(slab("slab-a", State.FREE, 1, released_at=100, usage=100))
    node.add(slab("slab-b", State.FREE, 2, released_at=200, usage=100))
    result = invoke("prepare", "--thin", "--yes")
    assert result.exit_code == EXIT_OK, result.stderr
    assert node.volumes == {} and node.thin_pool is not None and node.thin_pool["error_when_full"]
    assert f"volume group {VG} is now thin: deleted 2 free slab(s)" in result.stdout
    remove = [argv for argv in node.calls if argv[0] == "lvremove"]
    assert all(node.locked[node.calls.index(argv)] for argv in remove)


def test_switching_is_refused_while_a_slab_is_in_use_and_changes_nothing(node, invoke, kubelet_dir):
    mount_dir = kubelet_dir("1111")
    node.add(slab("slab-used", State.USED, 1, mount_dir=mount_dir, uid="1111"))
    node.mount_slab("slab-used", mount_dir)
    node.add(slab("slab-free", State.FREE, 2, released_at=100, usage=100))
    result = invoke("prepare", "--thin", "--yes")
    assert result.exit_code == EXIT_PROBLEMS
    assert "slab-used are in use or being made: drain the node first; nothing changed" in result.stderr
    assert set(node.volumes) == {"slab-used", "slab-free"} and node.thin_pool is None
    assert [p for p in node.programs() if p not in ("lvs", "vgs")] == []


def test_a_drained_thin_node_switches_back_to_thick(node, invoke):
    node.make_thin()
    node.add(slab("slab-a", State.FREE, 1, released_at=100, usage=100))
    result = invoke("prepare", "--thick", "--yes")
    assert result.exit_code == EXIT_OK, result.stderr
    assert node.volumes == {} and node.thin_pool is None


def test_prepare_thin_on_a_thin_node_changes_nothing(node, invoke):
    node.make_thin()
    result = invoke("prepare", "--thin", "--yes")
    assert (result.exit_code, result.stdout.splitlines()[0]) == (EXIT_OK, f"volume group {VG} already exists; nothing to do")
    assert [p for p in node.programs() if p not in ("lvs", "vgs")] == []


def test_a_bare_prepare_never_switches_even_when_the_config_disagrees(node, invoke, tmp_path):
    node.add(slab("slab-a", State.FREE, 1, released_at=100, usage=100))
    conf = tmp_path / "thin.conf"
    conf.write_text("[vol_plugin]\nprovisioning = thin\n")
    result = invoke("--config", str(conf), "prepare", "--yes")
    assert result.exit_code == EXIT_OK
    assert result.stdout.splitlines() == [
        f"volume group {VG} already exists; nothing to do",
        "note: the config says provisioning = thin; set provisioning = thick for the driver to use the volume group",
    ]
    assert set(node.volumes) == {"slab-a"} and node.thin_pool is None
