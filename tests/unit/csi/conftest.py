"""The CSI front-end against the real grpcio server, on unix sockets in the test's tmp_path, with
the core replaced by one that records its calls (the core itself is tested on its own and, with
the CSI front-end in front of it, on a real kernel in tests/realkernel/test_csi.py)."""

from __future__ import annotations

import argparse
import threading

import grpc
import pytest

from flexdriver.core import Core
from flexdriver.csi import server, service


class RecordingCore(Core):
    """acquire/release/owned_dirs recorded and answered by the test; finish (the call log) real."""

    def __init__(self, config, calls, behaviour):
        super().__init__(config)
        self.calls, self.behaviour = calls, behaviour

    def acquire(self, request, record):
        self.calls.append(("acquire", request))
        return self.behaviour.get("acquire", lambda request: "mounted")(request)

    def release(self, mount_dir, record):
        self.calls.append(("release", mount_dir))
        return self.behaviour.get("release", lambda mount_dir: "released")(mount_dir)

    def owned_dirs(self):
        return list(self.behaviour.get("owned", []))


class Node:
    """A plugin serving in tmp_path: its kubelet dir, sockets, and the core's calls."""

    def __init__(self, tmp_path):
        self.kubelet_dir = tmp_path / "kubelet"
        self.kubelet_dir.mkdir()
        self.calls = []
        self.behaviour = {}
        args = argparse.Namespace(
            endpoint=f"unix://{tmp_path}/plugin/csi.sock", kubelet_endpoint="", registration_dir=str(tmp_path / "registry"),
            kubelet_dir=str(self.kubelet_dir), node_id="node-1", sweep_interval=0.0,
            health_address="127.0.0.1:0",
        )
        self.plugin = server.Plugin(args)
        self.plugin.core_of = lambda config: RecordingCore(config, self.calls, self.behaviour)
        self.plugin.start()
        self.channel = grpc.insecure_channel(f"unix://{self.plugin.endpoint}")
        self.node = service.csi_grpc.NodeStub(self.channel)
        self.identity = service.csi_grpc.IdentityStub(self.channel)

    def volume_dir(self, uid="0f6c1f0e-1", volume="cache"):
        """The dir kubelet makes (with its vol_data.json) before it publishes."""
        path = self.kubelet_dir / "pods" / uid / "volumes" / "kubernetes.io~csi" / volume
        path.mkdir(parents=True, exist_ok=True)
        (path / "vol_data.json").write_text("{}")
        return path

    def publish(self, target, attributes=None, fs_type="", mode=None, readonly=False, volume_id="csi-1", **capability):
        pb = service.csi_pb2
        access = pb.VolumeCapability.AccessMode(mode=mode or pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER)
        if capability.get("block"):
            volume_capability = pb.VolumeCapability(block=pb.VolumeCapability.BlockVolume(), access_mode=access)
        else:
            mount = pb.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=capability.get("flags", []))
            volume_capability = pb.VolumeCapability(mount=mount, access_mode=access)
        request = pb.NodePublishVolumeRequest(
            volume_id=volume_id, target_path=str(target), volume_capability=volume_capability, readonly=readonly,
            volume_context=attributes if attributes is not None else {"size_mb": "512"},
        )
        return self.node.NodePublishVolume(request, timeout=10)

    def unpublish(self, target, volume_id="csi-1"):
        request = service.csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target))
        return self.node.NodeUnpublishVolume(request, timeout=10)

    def close(self):
        self.channel.close()
        self.plugin.stop(grace_s=1)


@pytest.fixture
def node(tmp_path):
    running = Node(tmp_path)
    yield running
    running.close()


def fails_with(code, call):
    """The grpc error `call()` raised, checked to carry `code`."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code, caught.value.details()
    return caught.value


__all__ = ["Node", "fails_with", "threading"]
