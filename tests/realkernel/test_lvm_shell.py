"""The `lvm` shell on the real LVM: what it prints is what flexdriver/system/lvm.py decides from.

A change in the shell has no exit status; LVM's own line on stdout ("changed", "created") with
nothing on stderr settles it, and anything else is read back. These tests hold that to the LVM
these nodes run: were its words different, every change would be read back and these fail.
"""

from __future__ import annotations

import pytest

from flexdriver.errors import CommandFailed
from flexdriver.system.lvm import LVM
from flexdriver.system.lvm_shell import LVMShell
from flexdriver.system.runner import Runner

from . import node
from .conftest import SCRATCH


class Recording(LVMShell):
    """The shell, with the commands it was given."""

    def __init__(self, runner: Runner) -> None:
        super().__init__(runner, 60.0)
        self.commands: list = []

    def run(self, argv):
        self.commands.append(list(argv))
        return super().run(argv)


@pytest.fixture
def lvm(kubelet):
    node.run("vgcreate", node.VOLUME_GROUP, SCRATCH)
    runner = Runner()
    shell = Recording(runner)
    yield LVM(runner, node.VOLUME_GROUP, 60.0, shell=shell)
    shell.close()


def tags_of(name: str) -> set:
    out = node.run("lvs", "--noheadings", "-o", "lv_tags", f"{node.VOLUME_GROUP}/{name}").stdout
    return set(filter(None, out.strip().split(",")))


def test_a_new_lv_and_a_tag_change_are_settled_by_lvms_own_words_without_a_read_back(lvm):
    lvm.create("slab-words", 64 << 20, ["ax.slab", "ax.state=creating"])
    lvm.retag("slab-words", add=["ax.state=used"], delete=["ax.state=creating"])
    assert [argv[0] for argv in lvm.shell.commands] == ["lvcreate", "lvchange"]
    assert tags_of("slab-words") == {"ax.slab", "ax.state=used"}
    assert node.run("lvs", "--noheadings", "-o", "lv_active", f"{node.VOLUME_GROUP}/slab-words").stdout.strip() == "active"


def test_a_change_lvm_refuses_in_the_shell_fails_with_its_words(lvm):
    with pytest.raises(CommandFailed, match="slab-missing"):
        lvm.retag("slab-missing", add=["ax.state=used"], delete=[])
    # No "changed" line: read back (nothing there), then LVM's error is the call's.
    assert [argv[0] for argv in lvm.shell.commands] == ["lvchange", "lvs"]
