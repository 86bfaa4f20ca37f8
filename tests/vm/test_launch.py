"""The host-side checks of tests/vm/launch.py, which run before any VM boots."""

from __future__ import annotations

import os

import pytest

from . import launch


@pytest.mark.parametrize("path", ["/var/tmp/clone", "/var/cache/ax/repo", "/var/lib/apt/x", "/run/user/0/repo", "/var/tmp"])
def test_a_checkout_the_guest_cannot_see_is_refused_before_booting(path):
    with pytest.raises(SystemExit) as refusal:
        launch.check_guest_can_see([path])
    message = str(refusal.value)
    assert path in message and "cannot see it" in message
    assert launch.hidden_in_guest(path) in message


@pytest.mark.parametrize("path", ["/work/main", "/tmp/clone", "/srv/ci/repo", "/var/lib/kubelet", "/variable/repo", "/home/ci"])
def test_locations_the_guest_shares_with_the_host_pass(path):
    launch.check_guest_can_see([path])
    assert launch.hidden_in_guest(path) is None


def test_a_link_into_a_hidden_location_is_refused_by_where_it_leads(tmp_path, monkeypatch):
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "checkout"
    link.symlink_to(target)
    monkeypatch.setattr(launch, "GUEST_HIDDEN", (str(target),))
    with pytest.raises(SystemExit):
        launch.check_guest_can_see([str(link)])


def test_boot_refuses_a_hidden_checkout_without_starting_a_vm(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "REPO", "/var/tmp/clone")
    started = []
    monkeypatch.setattr(launch, "_relay", lambda *args: started.append(args) or True)
    with pytest.raises(SystemExit, match="/var/tmp"):
        launch.boot(["true"], str(tmp_path), {})
    assert started == []


def test_the_vm_tools_are_looked_up_in_the_cache_dir_first(monkeypatch):
    path = launch.host_path().split(os.pathsep)
    assert path[1] == os.path.join(launch.CACHE_DIR, "virtiofsd", "bin")


def test_the_guest_root_type_is_read_from_the_mount_table_it_saved(tmp_path):
    (tmp_path / "guest-mountinfo").write_text(
        "22 1 0:21 / / ro,relatime - virtiofs ROOTFS ro\n"
        "23 22 0:22 / /proc rw,nosuid - proc proc rw\n"
        "40 22 0:35 / /tmp/x rw,relatime - virtiofs virtme.initmount0 rw\n"
    )
    assert launch.guest_root_type(str(tmp_path)) == "virtiofs"
    (tmp_path / "guest-mountinfo").write_text("22 1 0:21 / / ro,sync,dirsync - 9p /dev/root ro,msize=512000\n")
    assert launch.guest_root_type(str(tmp_path)) == "9p"
    assert launch.guest_root_type(str(tmp_path / "absent")) is None
