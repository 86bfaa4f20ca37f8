"""Fixtures of the admin command's tests: a simulated node it runs against, and the command."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from flexdriver import inventory
from flexdriver.admin import common
from flexdriver.admin.cli import main
from flexdriver.system import filesystems

from .simulated import AdminNode


@pytest.fixture
def node(tmp_path, monkeypatch):
    sim = AdminNode(lock_path=str(tmp_path / "run" / "lock"))
    monkeypatch.setattr(inventory, "read_mounts", lambda: list(sim.mounts))
    monkeypatch.setattr(filesystems, "measure", lambda mount_point, device: sim.usage)
    return sim


@pytest.fixture
def invoke(node, monkeypatch):
    """Runs `ax-vol-plugin ARGS` against the simulated node; stdin is no terminal unless
    `tty=True`, and then `input` is what is typed."""

    def invoke(*args, input=None, tty=False):
        monkeypatch.setattr(common, "interactive", lambda: tty)
        return CliRunner(mix_stderr=False).invoke(main, list(args), obj={"runner": node}, input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def kubelet_dir(tmp_path):
    """A mount dir in kubelet's layout; its pod dir exists unless `exists=False`."""

    def make(uid: str, exists: bool = True) -> str:
        path = tmp_path / "kubelet" / "pods" / uid / "volumes" / "ax~vol_plugin" / "docker"
        if exists:
            path.mkdir(parents=True)
        return os.path.join(os.path.realpath(tmp_path), "kubelet", "pods", uid, "volumes", "ax~vol_plugin", "docker")

    return make
