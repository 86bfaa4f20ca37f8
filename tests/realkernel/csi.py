"""Kubelet's side of the CSI node plugin, played as kubelet plays it for an ephemeral inline volume.

The plugin runs as its own process (python3 -m flexdriver.csi, as its container runs it). This
side finds its registration socket in plugins_registry, asks it GetInfo, dials the endpoint it
names and asks NodeGetInfo (kubelet's registration); then, per pod: makes the volume's dir and
writes vol_data.json (kubelet's NewMounter), calls NodePublishVolume with the volume id kubelet
derives, the target path, a mount capability and the pod's attributes merged under kubelet's own
csi.storage.k8s.io/ keys; and on teardown NodeUnpublishVolume, then removes vol_data.json and the
volume's dir if nothing is mounted there any more (kubelet's removeMountDir).

Only the spec's messages are imported (generated from its .proto by packaging/csi-api), not the driver.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Dict, Optional

import grpc

from . import node

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVER_NAME = "vol-plugin.ax"
PLUGIN_DIR = f"{node.KUBELET_ROOT}/plugins/{DRIVER_NAME}"
ENDPOINT = f"{PLUGIN_DIR}/csi.sock"
REGISTRY = f"{node.KUBELET_ROOT}/plugins_registry"
REGISTRATION_SOCKET = f"{REGISTRY}/{DRIVER_NAME}-reg.sock"
PLUGIN_LOG = "/tmp/csi-plugin.log"


def _api_dir() -> str:
    cache = os.environ.get("AX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ax-vol-plugin")
    found = sorted(name for name in os.listdir(cache) if name.startswith("csi-api-"))
    assert found, f"no generated CSI modules in {cache}: run make csi-api"
    return os.path.join(cache, found[-1])


API_DIR = _api_dir()
sys.path.insert(0, API_DIR)
from ax_csi_api import csi_pb2, csi_pb2_grpc, pluginregistration_pb2, pluginregistration_pb2_grpc  # noqa: E402

sys.path.remove(API_DIR)


@dataclasses.dataclass(frozen=True)
class CSIPod:
    uid: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    namespace: str = "ci"
    name: str = "dind"
    volume: str = "docker-graph-storage"
    attributes: tuple = (("size_mb", "256"),)
    fs_type: str = ""  # the pod's csi.fsType

    @property
    def pod_dir(self) -> str:
        return f"{node.KUBELET_ROOT}/pods/{self.uid}"

    @property
    def volume_dir(self) -> str:
        return f"{self.pod_dir}/volumes/kubernetes.io~csi/{self.volume}"

    @property
    def dir(self) -> str:
        """The target path; named as node.Pod's mount dir, so node's views of the pool take both."""
        return f"{self.volume_dir}/mount"

    @property
    def volume_id(self) -> str:
        return "csi-" + hashlib.sha256((self.uid + self.volume).encode()).hexdigest()

    def context(self) -> Dict[str, str]:
        return {
            **dict(self.attributes),
            "csi.storage.k8s.io/pod.name": self.name,
            "csi.storage.k8s.io/pod.namespace": self.namespace,
            "csi.storage.k8s.io/pod.uid": self.uid,
            "csi.storage.k8s.io/serviceAccount.name": "default",
            "csi.storage.k8s.io/ephemeral": "true",
        }


@dataclasses.dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    message: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.code is grpc.StatusCode.OK


class Plugin:
    """The plugin process, started as its container's command starts it."""

    def __init__(self) -> None:
        self.proc: Optional[subprocess.Popen] = None

    def start(self, wait_s: float = 60.0) -> None:
        """Start it and wait for its registration socket: a new one, not what a killed one left."""
        left = _identity(REGISTRATION_SOCKET)
        log = open(PLUGIN_LOG, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flexdriver.csi", "--endpoint", f"unix://{ENDPOINT}", "--registration-dir", REGISTRY,
             "--kubelet-dir", node.KUBELET_ROOT, "--node-id", "node-1"],
            cwd=REPO, env={**node.KUBELET_ENV, "PYTHONPATH": REPO, "AX_CSI_API_DIR": API_DIR},
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + wait_s
        while _identity(REGISTRATION_SOCKET) in (None, left):
            assert self.proc.poll() is None, f"the plugin exited ({self.proc.returncode}): {tail(PLUGIN_LOG)}"
            assert time.monotonic() < deadline, f"no registration socket after {wait_s:g} s: {tail(PLUGIN_LOG)}"
            time.sleep(0.1)

    def stop(self) -> int:
        """SIGTERM, as kubelet's container runtime stops it."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(60)


def _identity(path: str):
    try:
        st = os.stat(path)
        return (st.st_ino, st.st_mtime_ns)
    except FileNotFoundError:
        return None


def tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


class CSIKubelet:
    def __init__(self) -> None:
        self.endpoint: Optional[str] = None
        self.calls = []

    def register(self) -> None:
        """Kubelet's plugin watcher: GetInfo on the new socket, NodeGetInfo on its endpoint, then
        NotifyRegistrationStatus."""
        with grpc.insecure_channel(f"unix://{REGISTRATION_SOCKET}") as channel:
            stub = pluginregistration_pb2_grpc.RegistrationStub(channel)
            info = stub.GetInfo(pluginregistration_pb2.InfoRequest(), timeout=1, wait_for_ready=True)
            assert (info.type, info.name, list(info.supported_versions)) == ("CSIPlugin", DRIVER_NAME, ["1.0.0"])
            self.endpoint = info.endpoint or REGISTRATION_SOCKET
            node_info = self._node().NodeGetInfo(csi_pb2.NodeGetInfoRequest(), timeout=120)
            assert node_info.node_id == "node-1"
            stub.NotifyRegistrationStatus(pluginregistration_pb2.RegistrationStatus(plugin_registered=True), timeout=5)

    def _node(self):
        return csi_pb2_grpc.NodeStub(grpc.insecure_channel(f"unix://{self.endpoint}"))

    def _call(self, method: str, request) -> Answer:
        started = time.monotonic()
        try:
            getattr(self._node(), method)(request, timeout=120)
            answer = Answer(grpc.StatusCode.OK, "", time.monotonic() - started)
        except grpc.RpcError as err:
            answer = Answer(err.code(), err.details() or "", time.monotonic() - started)
        self.calls.append(answer)
        return answer

    def publish(self, pod: CSIPod) -> Answer:
        """NodePublishVolume, whether or not the target dir is mounted already: unlike its
        FlexVolume SetUp, the real kubelet's CSI SetUp does not look first, and after a restart
        it publishes every running pod's volume again (tests/e2e/test_csi.py saw it)."""
        os.makedirs(pod.volume_dir, mode=0o750, exist_ok=True)
        with open(os.path.join(pod.volume_dir, "vol_data.json"), "w") as handle:
            json.dump({"specVolID": pod.volume, "volumeHandle": pod.volume_id, "driverName": DRIVER_NAME,
                       "nodeName": "node-1", "volumeLifecycleMode": "Ephemeral"}, handle)
        mode = csi_pb2.VolumeCapability.AccessMode(mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER)
        capability = csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume(fs_type=pod.fs_type),
                                              access_mode=mode)
        answer = self._call("NodePublishVolume", csi_pb2.NodePublishVolumeRequest(
            volume_id=pod.volume_id, target_path=pod.dir, volume_capability=capability, volume_context=pod.context()))
        if not answer.ok and answer.code not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
            self._remove_mount_dir(pod)  # a final error: kubelet removes the volume's dir
        return answer

    def unpublish(self, pod: CSIPod) -> Answer:
        answer = self._call("NodeUnpublishVolume", csi_pb2.NodeUnpublishVolumeRequest(
            volume_id=pod.volume_id, target_path=pod.dir))
        if answer.ok:
            self._remove_mount_dir(pod)
        return answer

    @staticmethod
    def _remove_mount_dir(pod: CSIPod) -> None:
        if os.path.ismount(pod.dir):
            return
        for path in (pod.dir, os.path.join(pod.volume_dir, "vol_data.json")):
            if os.path.isdir(path):
                os.rmdir(path)
            elif os.path.lexists(path):
                os.unlink(path)
        if os.path.isdir(pod.volume_dir):
            os.rmdir(pod.volume_dir)
