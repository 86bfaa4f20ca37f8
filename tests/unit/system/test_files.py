"""system/files.py: root's own files are never opened through a link, nor written into a dir
that another user can change."""

from __future__ import annotations

import errno
import os

import pytest

from flexdriver.system import files

NOBODY = 65534


@pytest.fixture
def victim(tmp_path):
    """A root-owned 0600 file that a planted link points at."""
    path = tmp_path / "shadow"
    path.write_text("root's secret\n")
    path.chmod(0o600)
    return path


def test_append_and_lock_refuse_a_planted_link(tmp_path, victim):
    link = tmp_path / "ax-vol-plugin.log"
    link.symlink_to(victim)
    for opener in (files.open_append, files.open_lock):
        with pytest.raises(OSError) as refused:
            opener(str(link))
        assert refused.value.errno == errno.ELOOP
    assert victim.read_text() == "root's secret\n"


def test_replace_removes_a_link_planted_at_its_temp_name_and_writes_its_own_file(tmp_path, victim):
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    target = textfile / "ax_vol_plugin.prom"
    (textfile / f".ax_vol_plugin.prom.{os.getpid()}").symlink_to(victim)
    files.replace(str(target), "metrics\n", mode=0o644)
    assert victim.read_text() == "root's secret\n"
    assert target.read_text() == "metrics\n" and not target.is_symlink()
    assert [p.name for p in textfile.iterdir()] == ["ax_vol_plugin.prom"]


def test_read_text_refuses_a_link(tmp_path, victim):
    link = tmp_path / "counters.json"
    link.symlink_to(victim)
    with pytest.raises(OSError):
        files.read_text(str(link))


def test_a_dir_of_roots_alone_is_trusted(tmp_path):
    trusted = tmp_path / "textfile"
    trusted.mkdir(mode=0o755)
    assert files.untrusted_dir(str(trusted)) is None  # /tmp above it is sticky: that is fine


@pytest.mark.parametrize("how", ["owned by another user", "group-writable", "world-writable and sticky"])
def test_a_dir_others_can_change_is_refused(tmp_path, how):
    dir = tmp_path / "textfile"
    dir.mkdir(mode=0o755)
    if how == "owned by another user":
        os.chown(dir, NOBODY, NOBODY)
    elif how == "group-writable":
        dir.chmod(0o775)
    else:
        dir.chmod(0o1777)
    reason = files.untrusted_dir(str(dir))
    assert reason is not None and str(dir) in reason


def test_a_dir_under_another_users_dir_is_refused(tmp_path):
    home = tmp_path / "prometheus"
    home.mkdir(mode=0o755)
    os.chown(home, NOBODY, NOBODY)  # its owner could swap node-exporter/ for a link at any time
    (home / "node-exporter").mkdir(mode=0o755)
    assert f"{home} is owned by uid {NOBODY}" in files.untrusted_dir(str(home / "node-exporter"))


def test_a_link_to_another_users_dir_is_judged_by_where_it_leads(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, NOBODY, NOBODY)
    link = tmp_path / "textfile"
    link.symlink_to(theirs)
    assert "not root" in files.untrusted_dir(str(link))


def test_a_named_owner_is_trusted_as_root_is_and_no_one_else(tmp_path):
    """The CSI plugin imports its generated modules from a dir that may be its own user's."""
    mine = tmp_path / "cache"
    mine.mkdir(mode=0o755)
    os.chown(mine, NOBODY, NOBODY)
    assert files.untrusted_dir(str(mine), owners=(0, NOBODY)) is None
    mine.chmod(0o775)
    assert "writable by others" in files.untrusted_dir(str(mine), owners=(0, NOBODY))
