"""NodePublishVolume / NodeUnpublishVolume / Identity through the real grpcio server."""

from __future__ import annotations

import json
import os
import threading

import grpc

from flexdriver.csi import DRIVER_NAME, service
from flexdriver.errors import PoolExhausted

from .conftest import fails_with

POD_NS = "csi.storage.k8s.io/pod.namespace"
ATTRS = {"size_mb": "512", "cache_scope": "namespace", POD_NS: "ci", "csi.storage.k8s.io/pod.uid": "x",
         "csi.storage.k8s.io/ephemeral": "true"}


def test_publish_makes_the_target_dir_and_asks_the_core_for_the_pods_slab(node, log_file):
    target = node.volume_dir() / "mount"
    node.publish(target, ATTRS)
    assert target.is_dir()
    [(verb, request)] = node.calls
    assert verb == "acquire"
    assert request.mount_dir == str(target)
    assert (request.size_mb, request.fs_type, request.volume_type) == (512, "ext4", "ax-docker-graph-storage")
    # The namespace is kubelet's (podInfoOnMount), the uid kubelet's path: neither is the pod's word.
    assert (request.cache_scope, request.pod_uid, request.read_only) == ("ns.ci", "0f6c1f0e-1", False)
    line = json.loads(log_file.read_text().splitlines()[-1])
    assert (line["verb"], line["frontend"], line["volume_id"], line["outcome"]) == ("publish", "csi", "csi-1", "Success")


def test_the_fs_type_comes_from_the_capability_or_the_attribute_and_they_must_agree(node):
    target = node.volume_dir() / "mount"
    node.publish(target, {"fsType": "xfs", "size_mb": "512"})
    node.publish(target, {"size_mb": "512"}, fs_type="xfs")
    assert [request.fs_type for _, request in node.calls] == ["xfs", "xfs"]
    error = fails_with(grpc.StatusCode.INVALID_ARGUMENT, lambda: node.publish(target, {"fsType": "ext4"}, fs_type="xfs"))
    assert "differ" in error.details()


def test_a_readonly_volume_is_asked_for_read_only(node):
    node.publish(node.volume_dir() / "mount", readonly=True)
    assert node.calls[0][1].read_only is True


def test_unknown_attributes_are_refused_and_nothing_is_made(node):
    target = node.volume_dir() / "mount"
    error = fails_with(grpc.StatusCode.INVALID_ARGUMENT, lambda: node.publish(target, {"sizeMb": "512"}))
    assert "'sizeMb'" in error.details() and "size_mb" in error.details()
    assert not target.exists() and node.calls == []


def test_bad_values_get_the_flexvolume_options_messages(node):
    target = node.volume_dir() / "mount"
    error = fails_with(grpc.StatusCode.INVALID_ARGUMENT, lambda: node.publish(target, {"size_mb": "lots"}))
    assert "size_mb must be a positive whole number" in error.details()
    error = fails_with(grpc.StatusCode.INVALID_ARGUMENT, lambda: node.publish(target, {"cache_scope": "namespace"}))
    assert "kubernetes.io/pod.namespace" in error.details() or "namespace" in error.details()
    assert not target.exists() and node.calls == []


def test_a_persistent_volume_is_refused(node):
    target = node.volume_dir() / "mount"
    error = fails_with(grpc.StatusCode.INVALID_ARGUMENT,
                       lambda: node.publish(target, {"csi.storage.k8s.io/ephemeral": "false"}))
    assert "ephemeral" in error.details()


def test_a_target_outside_kubelets_layout_is_refused_before_anything_is_made(node, tmp_path):
    csi_dirs = node.kubelet_dir / "pods" / "u1" / "volumes" / "kubernetes.io~csi"
    for target in (tmp_path / "elsewhere" / "mount",
                   node.kubelet_dir / "pods" / "u1" / "volumes" / "ax~vol_plugin" / "v" / "mount",
                   csi_dirs / "v" / "mount" / ".." / ".." / "x" / "mount" / "deeper"):
        error = fails_with(grpc.StatusCode.INVALID_ARGUMENT, lambda target=target: node.publish(target))
        assert "not kubelet's dir for a pod's CSI volume" in error.details()
    assert node.calls == [] and not (tmp_path / "elsewhere").exists()


def test_a_link_at_the_target_is_refused_not_followed(node, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = node.volume_dir() / "mount"
    target.symlink_to(elsewhere)
    error = fails_with(grpc.StatusCode.INVALID_ARGUMENT, lambda: node.publish(target))
    assert "is not a directory" in error.details()
    assert target.is_symlink() and node.calls == []


def test_block_volumes_other_access_modes_and_mount_flags_are_refused(node):
    target = node.volume_dir() / "mount"
    modes = service.csi_pb2.VolumeCapability.AccessMode
    for call, words in (
        (lambda: node.publish(target, block=True), "not block"),
        (lambda: node.publish(target, mode=modes.MULTI_NODE_MULTI_WRITER), "MULTI_NODE_MULTI_WRITER"),
        (lambda: node.publish(target, flags=["noexec"]), "mount flags"),
        (lambda: node.publish(target, volume_id=""), "volume_id"),
    ):
        assert words in fails_with(grpc.StatusCode.INVALID_ARGUMENT, call).details()
    assert node.calls == []


def test_a_failed_publish_removes_the_dir_it_made(node):
    target = node.volume_dir() / "mount"

    def full(request):
        raise PoolExhausted("no room for a 512 MiB slab")

    node.behaviour["acquire"] = full
    error = fails_with(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: node.publish(target))
    assert error.details() == "no room for a 512 MiB slab"
    assert not target.exists()


def test_a_retry_keeps_the_dir_an_earlier_call_made(node):
    target = node.volume_dir() / "mount"
    target.mkdir()
    node.behaviour["acquire"] = lambda request: (_ for _ in ()).throw(PoolExhausted("full"))
    fails_with(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: node.publish(target))
    assert target.is_dir()


def test_a_bug_in_the_core_is_an_internal_error_with_its_traceback_in_the_log(node, log_file):
    node.behaviour["acquire"] = lambda request: {}["missing"]
    error = fails_with(grpc.StatusCode.INTERNAL, lambda: node.publish(node.volume_dir() / "mount"))
    assert "internal error in vol-plugin.ax (KeyError" in error.details()
    line = json.loads(log_file.read_text().splitlines()[-1])
    assert line["reason"] == "internal" and "KeyError" in line["traceback"]


def test_a_second_call_for_a_volume_still_being_published_is_aborted(node):
    target = node.volume_dir() / "mount"
    started, go_on = threading.Event(), threading.Event()

    def slow(request):
        started.set()
        go_on.wait(10)
        return "mounted"

    node.behaviour["acquire"] = slow
    first = threading.Thread(target=node.publish, args=(target,))
    first.start()
    assert started.wait(10)
    error = fails_with(grpc.StatusCode.ABORTED, lambda: node.unpublish(target))
    assert "still running" in error.details()
    go_on.set()
    first.join(10)
    assert [verb for verb, _ in node.calls] == ["acquire"]


def test_unpublish_releases_the_slab_and_removes_the_target_dir(node, log_file):
    target = node.volume_dir() / "mount"
    target.mkdir()
    node.unpublish(target)
    assert node.calls == [("release", str(target))]
    assert not target.exists() and (target.parent / "vol_data.json").exists()
    line = json.loads(log_file.read_text().splitlines()[-1])
    assert (line["verb"], line["frontend"], line["outcome"]) == ("unpublish", "csi", "Success")


def test_unpublish_again_after_success_succeeds(node):
    target = node.volume_dir() / "mount"
    node.unpublish(target)
    node.unpublish(target)
    assert node.calls == [("release", str(target))] * 2


def test_unpublish_of_a_target_outside_kubelets_layout_is_refused(node, tmp_path):
    error = fails_with(grpc.StatusCode.INVALID_ARGUMENT, lambda: node.unpublish(tmp_path))
    assert "not kubelet's dir" in error.details() and node.calls == []


def test_identity_and_node_info(node):
    pb = service.csi_pb2
    info = node.identity.GetPluginInfo(pb.GetPluginInfoRequest(), timeout=5)
    assert info.name == DRIVER_NAME and info.vendor_version
    assert list(node.identity.GetPluginCapabilities(pb.GetPluginCapabilitiesRequest(), timeout=5).capabilities) == []
    assert node.identity.Probe(pb.ProbeRequest(), timeout=5).ready.value is True
    assert node.node.NodeGetInfo(pb.NodeGetInfoRequest(), timeout=5).node_id == "node-1"
    assert list(node.node.NodeGetCapabilities(pb.NodeGetCapabilitiesRequest(), timeout=5).capabilities) == []


def test_probe_is_not_ready_while_the_config_does_not_load(node, config_file):
    config_file.write_text("[vol_plugin]\nusage_threshold = lots\n")
    assert node.identity.Probe(service.csi_pb2.ProbeRequest(), timeout=5).ready.value is False
    error = fails_with(grpc.StatusCode.FAILED_PRECONDITION, lambda: node.publish(node.volume_dir() / "mount"))
    assert "usage_threshold" in error.details()


def test_the_sockets_are_roots_only(node):
    assert os.stat(node.plugin.endpoint).st_mode & 0o077 == 0
    assert os.stat(node.plugin.registration_socket).st_mode & 0o077 == 0
