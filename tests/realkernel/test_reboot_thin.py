"""The reboot scenario of test_reboot.py on a thin node, whose pods run on thin volumes and on
snapshots of a warm slab when the power goes: after the reboot each gets its own volume back with
its data, the deleted pod's is released, the half-made one is finished; the thin pool comes back
with the volume group. It runs in the other lane, on disks of its own, so that each lane's
second boot finds one node's pool."""

import os

import pytest

from . import node
from .conftest import CONFIG_PATH, node_config
from .node import slabs, thin_pool_figures
from .test_reboot import after_reboot, before_reboot

STATE = os.path.join(node.KUBELET_ROOT, "reboot-scenario-thin.json")


def configure_thin() -> None:
    # The boot's setup writes the suite's (thick) config; a real node's config would have kept
    # its provisioning key across the reboot.
    with open(CONFIG_PATH, "w") as handle:
        handle.write(node_config(provisioning="thin"))


@pytest.mark.reboot_before
def test_before_reboot_on_a_thin_node(kubelet):
    configure_thin()
    # The half-made mount is a snapshot's: made and tagged for its pod, never mounted.
    before_reboot(kubelet, STATE, warm_first=True, crash_at="mount-after-snapshot", crash_size_mb=192)
    pool = slabs()
    assert any("ax.origin" in slab.tags for slab in pool.values()), "a running pod is on a snapshot"


@pytest.mark.after_reboot
def test_after_reboot_a_thin_nodes_pods_get_their_own_volumes_back(kubelet):
    configure_thin()
    after_reboot(kubelet, STATE)
    assert thin_pool_figures()["error_when_full"], "the pool still fails writes at once when full"
    # Every pod has ended: of the 192 MiB slabs (the warm one and three snapshots), the two
    # released last are kept (thin_keep_free), the rest deleted.
    kept = [slab for slab in slabs().values() if slab.tags.get("ax.size_mb") == "192"]
    assert len(kept) == 2 and all(slab.state == "free" for slab in kept), kept
