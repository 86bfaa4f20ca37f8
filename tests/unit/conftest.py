"""Every unit test runs against a config file and a call log that live in its own tmp_path."""

from __future__ import annotations

import os

import pytest

from flexdriver import journal


@pytest.fixture(autouse=True)
def config_file(tmp_path, monkeypatch):
    """AX_VOL_PLUGIN_CONFIG names a config whose log file and run dir are inside tmp_path."""
    path = tmp_path / "vol_plugin.conf"
    path.write_text(
        f"[vol_plugin]\nlog_file = {tmp_path}/driver.log\nrun_dir = {tmp_path}/run\nmetrics_dir = {tmp_path}/textfile\n"
    )
    monkeypatch.setenv("AX_VOL_PLUGIN_CONFIG", str(path))
    monkeypatch.delenv("AX_VOL_PLUGIN_FAILPOINTS", raising=False)
    return path


@pytest.fixture
def log_file(tmp_path):
    return tmp_path / "driver.log"


@pytest.fixture(autouse=True)
def journal_writes(tmp_path, monkeypatch):
    """Every call-log append, as (path, line); only appends inside tmp_path reach the disk."""
    writes = []
    real_append = journal.append
    root = os.path.realpath(tmp_path)

    def guarded_append(path, line, rotation=None):
        writes.append((path, line))
        if os.path.commonpath([root, os.path.realpath(path)]) == root:
            real_append(path, line, rotation)

    monkeypatch.setattr(journal, "append", guarded_append)
    return writes
