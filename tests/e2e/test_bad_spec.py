"""Scenario 7: a pod spec the driver refuses. Kubelet reports the driver's own message (in its
log, standalone), the pod never starts, nothing is created; deleting the pod leaves nothing.

Also where the real kubelet is compared with tests/realkernel/node.py: kubelet logs the argv of a
failed driver call, so the JSON it really sends is read off its log here."""

from __future__ import annotations

import json
import re

import pytest

from tests.realkernel import node as emulation

from .cluster import pod_from_example, volume_dir, wait_for
from .scenario import RunningPod, delete_and_wait

CASES = {
    "size_mb": ({"size_mb": "lots"}, None, "size_mb must be a positive whole number of MiB (1..", "'lots'"),
    "fsType": ({}, "btrfs", "unsupported fsType 'btrfs'", "supported: "),
}
FAILED_CALL = re.compile(r"FlexVolume: driver call failed: executable: (\S+), args: \[(\w+) (\S+) (\{.*\})\], error: ")


def bad_pod(name: str, options: dict, fs_type) -> dict:
    pod = pod_from_example("dind-pod.yaml", name)
    volume = next(v for v in pod["spec"]["volumes"] if "flexVolume" in v)["flexVolume"]
    volume["options"].update(options)
    if fs_type is not None:
        volume["fsType"] = fs_type
    return pod


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_refused_spec_reports_the_drivers_message_and_creates_nothing(node, case):
    options, fs_type, *message = CASES[case]
    before = emulation.slabs()
    name = node.create(bad_pod(f"dind-bad-{case.lower().replace('_', '-')}", options, fs_type))
    uid = node.uid(name)
    pod = RunningPod(name, uid, None)
    # Kubelet's own words around ours: the mount failed for the pod's volume, with our message.
    failure = wait_for(
        "kubelet to report the driver's refusal",
        lambda: next((line for line in node.kubelet.log_since_start().splitlines()
                      if "MountVolume.SetUp failed for volume" in line and uid in line and all(m in line for m in message)),
                     None),
        300, detail=lambda: node.kubelet.log()[-3000:])
    assert '"docker-graph-storage"' in failure
    assert node.container_status(name, "dind") is None or "running" not in node.container_status(name, "dind")["state"]
    assert emulation.slabs() == before, "a refused mount created or changed a slab"
    assert volume_dir(uid) not in emulation.slab_mounts()
    # What kubelet really sent: the emulation's options must have the same keys and values.
    call = next(m for m in map(FAILED_CALL.search, node.kubelet.log_since_start().splitlines()) if m and uid in m.group(3))
    real = json.loads(call.group(4))
    emulated = json.loads(emulation.Pod(uid=uid, size_mb=0, volume="docker-graph-storage").options())
    assert call.group(2) == "mount" and call.group(3) == volume_dir(uid)
    assert sorted(real) == sorted({**emulated, **options}), f"kubelet sent {sorted(real)}, the emulation {sorted(emulated)}"
    assert real["kubernetes.io/pod.name"] == f"{name}-e2e-node" and real["kubernetes.io/pod.uid"] == uid
    assert real["kubernetes.io/fsType"] == (fs_type or "ext4")
    delete_and_wait(node, pod)
    assert emulation.slabs() == before
