"""The plugin process: registration with kubelet, the sweep of volumes kubelet no longer has,
its sockets' lifetime, the probe command; the generated modules' loader."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
import pytest

from flexdriver.csi import DRIVER_NAME, api, server, service

from .conftest import Node


def registration_stub(node):
    channel = grpc.insecure_channel(f"unix://{node.plugin.registration_socket}")
    return channel, service.registration_grpc.RegistrationStub(channel)


def test_kubelet_is_told_the_csi_socket_and_the_versions_it_speaks(node):
    channel, stub = registration_stub(node)
    with channel:
        info = stub.GetInfo(service.registration_pb2.InfoRequest(), timeout=5)
    assert os.path.basename(node.plugin.registration_socket) == f"{DRIVER_NAME}-reg.sock"
    assert (info.type, info.name, info.endpoint, list(info.supported_versions)) == (
        "CSIPlugin", DRIVER_NAME, node.plugin.endpoint, ["1.0.0"])


def test_the_endpoint_kubelet_dials_can_differ_from_the_plugins_own(tmp_path):
    node = Node.__new__(Node)
    args = server.parse_args(["--endpoint", f"unix://{tmp_path}/csi.sock", "--kubelet-endpoint",
                              "/var/lib/kubelet/plugins/vol-plugin.ax/csi.sock", "--registration-dir", str(tmp_path / "reg"),
                              "--health-address", ""])
    node.plugin = server.Plugin(args)
    node.plugin.start()
    try:
        channel, stub = registration_stub(node)
        with channel:
            assert stub.GetInfo(service.registration_pb2.InfoRequest(), timeout=5).endpoint == \
                "/var/lib/kubelet/plugins/vol-plugin.ax/csi.sock"
    finally:
        node.plugin.stop(grace_s=1)


def test_kubelets_verdict_on_the_registration_is_logged(node, log_file):
    channel, stub = registration_stub(node)
    with channel:
        stub.NotifyRegistrationStatus(service.registration_pb2.RegistrationStatus(
            plugin_registered=False, error="plugin vol-plugin.ax already registered"), timeout=5)
    line = json.loads(log_file.read_text().splitlines()[-1])
    assert (line["verb"], line["registered"], line["outcome"]) == ("register", False, "Failure")
    assert line["message"] == "plugin vol-plugin.ax already registered"
    assert node.plugin.registered == (False, "plugin vol-plugin.ax already registered")


def test_stopping_removes_both_sockets(tmp_path):
    node = Node(tmp_path)
    node.close()
    assert not os.path.exists(node.plugin.endpoint)
    assert not os.path.exists(node.plugin.registration_socket)


def test_the_sweep_releases_only_csi_volumes_kubelet_no_longer_has(node, tmp_path, log_file):
    kept = node.volume_dir(uid="pod-a") / "mount"
    gone = node.volume_dir(uid="pod-b") / "mount"
    (gone.parent / "vol_data.json").unlink()  # kubelet has forgotten this one
    flex = node.kubelet_dir / "pods" / "pod-c" / "volumes" / "ax~vol_plugin" / "cache"
    other_kubelet = tmp_path / "other" / "pods" / "pod-d" / "volumes" / "kubernetes.io~csi" / "v" / "mount"
    node.behaviour["owned"] = [str(kept), str(gone), str(flex), str(other_kubelet)]
    assert node.plugin.sweep() == [str(gone)]
    assert node.calls == [("release", str(gone))]
    line = json.loads(log_file.read_text().splitlines()[-1])
    assert line["sweep"] is True and line["message"].startswith("kubelet no longer has this volume")


def test_the_sweep_leaves_a_volume_with_a_call_running(node):
    gone = node.volume_dir(uid="pod-b") / "mount"
    (gone.parent / "vol_data.json").unlink()
    node.behaviour["owned"] = [str(gone)]
    assert node.plugin.in_flight.enter("csi-b", str(gone))
    assert node.plugin.sweep() == [] and node.calls == []


def test_the_sweep_runs_at_start_up(tmp_path):
    kubelet = tmp_path / "kubelet"
    target = kubelet / "pods" / "u" / "volumes" / "kubernetes.io~csi" / "v" / "mount"
    calls = []
    from .conftest import RecordingCore

    args = server.parse_args(["--endpoint", str(tmp_path / "csi.sock"), "--registration-dir", "",
                              "--kubelet-dir", str(kubelet), "--health-address", ""])
    plugin = server.Plugin(args)
    plugin.core_of = lambda config: RecordingCore(config, calls, {"owned": [str(target)]})
    plugin.start()
    plugin.stop(grace_s=1)
    assert calls == [("release", str(target))]


def test_the_probe_command_answers_for_the_running_plugin(node, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    command = [sys.executable, "-m", "flexdriver.csi", "probe", "--endpoint", f"unix://{node.plugin.endpoint}"]
    assert subprocess.run(command, env=env, capture_output=True, text=True, timeout=60).returncode == 0
    missing = subprocess.run([*command[:-1], str(tmp_path / "none.sock")], env=env, capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 1 and "probe failed: UNAVAILABLE" in missing.stderr


def health(node, path, method="GET"):
    connection = http.client.HTTPConnection("127.0.0.1", node.plugin.health_port, timeout=10)
    try:
        connection.request(method, path)
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    finally:
        connection.close()


def test_kubelets_http_probes_pass_for_the_serving_plugin(node):
    assert node.plugin.health_port > 0
    assert health(node, "/healthz") == (200, "ok\n")
    assert health(node, "/readyz") == (200, "ok\n")
    assert health(node, "/healthz", method="HEAD") == (200, "")
    assert health(node, "/metrics")[0] == 404


def test_a_broken_config_makes_the_plugin_not_ready_but_not_dead(node, config_file):
    # Restarting cannot mend a file, and the running plugin tells each pod what is wrong with it.
    config_file.write_text("[vol_plugin]\nusage_threshold = lots\n")
    assert health(node, "/healthz") == (200, "ok\n")
    status, text = health(node, "/readyz")
    assert status == 503 and "configuration does not load" in text


def test_the_liveness_probe_fails_once_the_csi_socket_is_gone(node):
    os.unlink(node.plugin.endpoint)  # as if the gRPC server had died under a live process
    status, text = health(node, "/healthz")
    assert status == 503 and f"the CSI socket {node.plugin.endpoint} does not accept connections" in text


def test_the_liveness_probe_passes_while_every_worker_is_busy(node):
    # A burst of publishes queued on the node lock is busy, not dead: kubelet must not kill it.
    gate = threading.Event()
    node.behaviour["acquire"] = lambda request: gate.wait(30) and "mounted"
    with futures.ThreadPoolExecutor(server.WORKERS) as pool:
        calls = [pool.submit(node.publish, node.volume_dir(uid=f"pod-{n}") / "mount", volume_id=f"csi-{n}")
                 for n in range(server.WORKERS)]
        try:
            deadline = time.monotonic() + 30
            while len(node.calls) < server.WORKERS and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(node.calls) == server.WORKERS
            assert health(node, "/healthz") == (200, "ok\n")
        finally:
            gate.set()
        assert all(call.result() for call in calls)


def test_the_health_address_is_checked():
    assert server.health_address("") is None
    assert server.health_address(":9808") == ("", 9808)
    assert server.health_address("[::1]:9808") == ("::1", 9808)
    for bad in ("9808", "host:port", ":70000"):
        with pytest.raises(SystemExit, match="--health-address must be"):
            server.health_address(bad)


def test_a_health_port_in_use_is_a_clear_refusal(node, tmp_path):
    args = server.parse_args(["--endpoint", str(tmp_path / "other.sock"), "--registration-dir", "",
                              "--health-address", f"127.0.0.1:{node.plugin.health_port}"])
    other = server.Plugin(args)
    try:
        with pytest.raises(SystemExit, match="cannot serve the health probes"):
            other.start()
    finally:
        other.stop(grace_s=1)


def test_a_relative_endpoint_is_refused():
    with pytest.raises(SystemExit, match="absolute unix socket path"):
        server.socket_path("unix://csi.sock")


def test_the_generated_modules_are_refused_from_a_dir_others_can_write(tmp_path, monkeypatch):
    found = os.path.dirname(os.path.dirname(service.csi_pb2.__file__))
    copy = tmp_path / "api"
    shutil.copytree(found, copy)
    os.chmod(copy / "ax_csi_api", 0o777)
    monkeypatch.setenv(api.DIR_ENV, str(copy))
    monkeypatch.setattr(api.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(api.MissingAPI, match="refused.*writable by others"):
        api.load()
    monkeypatch.setenv(api.DIR_ENV, str(tmp_path / "nothing"))
    with pytest.raises(api.MissingAPI, match="run packaging/csi-api"):
        api.load()
