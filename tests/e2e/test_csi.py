"""The CSI node plugin under the real kubelet and kube-apiserver (the CSI boot): the plugin is
install/kustomize/csi's DaemonSet pod run as a static pod from the image tests/e2e/images.py
builds, registered with kubelet through its own registration socket; pods come from
examples/dind-pod-csi.yaml (and dind-pod.yaml for the FlexVolume side of the shared pool).

The scenarios: a DinD pod on a slab, and the next one finding its image; a bad spec refused in the
pod's events with nothing made; a FlexVolume pod and a CSI pod handing one slab to each other;
three pods at once, then, on those pods, kubelet restarted, the plugin restarted, and pods deleted
while the plugin is down."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from flexdriver.csi import DRIVER_NAME
from tests.realkernel import node as pool

from .cluster import (
    CSI_PLUGIN_NAME,
    MANIFESTS,
    NODE_NAME,
    csi_plugin_pod,
    csi_target_dir,
    load_deploy,
    pod_from_example,
    wait_for,
)
from .images import JOB_IMAGE
from .scenario import (
    RunningPod,
    delete_and_wait,
    driver_calls,
    load_job_image,
    mark,
    slab_of,
    start,
    unchanged,
    wait_for_hello,
)

pytestmark = pytest.mark.csi

EXAMPLE = "dind-pod-csi.yaml"


def registered(node) -> bool:
    csinode = node.control_plane.request("GET", f"/apis/storage.k8s.io/v1/csinodes/{NODE_NAME}")
    return bool(csinode) and DRIVER_NAME in [d["name"] for d in csinode["spec"].get("drivers") or []]


UNREGISTERED = f"driver name {DRIVER_NAME} not found in the list of registered CSI drivers"  # kubelet's words


def registrations(node) -> int:
    """How many times kubelet has registered the plugin (its log, across kubelet's restarts)."""
    return node.kubelet.log(tail=1 << 30).count(f"Register new plugin with name: {DRIVER_NAME} ")


def liveness_restarts(node) -> list:
    """Kubelet's restarts of the plugin for failing its liveness probe (its log, across kubelet's
    restarts). One failed probe is not one: it takes three in a row."""
    return [line for line in node.kubelet.log(tail=1 << 30).splitlines()
            if "Container plugin failed liveness probe, will be restarted" in line and CSI_PLUGIN_NAME in line]


def plugin_uid(node) -> str:
    return node.uid(CSI_PLUGIN_NAME)


def plugin_log(node) -> str:
    uid = node.pods().get(CSI_PLUGIN_NAME, {}).get("metadata", {}).get("uid", "none")
    return node.container_log(uid, CSI_PLUGIN_NAME, "plugin")[-3000:]


def start_plugin(node) -> None:
    node.create_static(csi_plugin_pod())
    node.wait_running(CSI_PLUGIN_NAME, ("plugin",), 600)
    wait_for("kubelet to register the plugin in its CSINode", lambda: registered(node), 300, every_s=2,
             detail=lambda: plugin_log(node) + "\n" + node.kubelet.log()[-2000:])
    # Kubelet's httpGet readiness probe reached the plugin on its pod's IP, and its config loads.
    wait_for("kubelet's readiness probe of the plugin to pass",
             lambda: (node.container_status(CSI_PLUGIN_NAME, "plugin") or {}).get("ready"), 300, every_s=2,
             detail=lambda: node.describe(CSI_PLUGIN_NAME))


@pytest.fixture(scope="module")
def plugin(node):
    node.control_plane.apply(load_deploy("csidriver.yaml"))
    start_plugin(node)
    return CSI_PLUGIN_NAME


def released(slabs) -> None:
    view = pool.slabs()
    for slab in slabs:
        assert slab not in view or view[slab].state == "free", f"{slab} not released: {view[slab].tags}"


def device_of_graph(node, pod: RunningPod) -> str:
    """The device the dind container has on /var/lib/docker."""
    with open(f"/proc/{node.container_pid(pod.uid, 'dind')}/mountinfo") as handle:
        graph = [line.split() for line in handle if line.split()[4] == "/var/lib/docker"]
    assert graph, "the dind container has nothing on /var/lib/docker"
    return graph[-1][graph[-1].index("-") + 2]


def images_of(node, pod: RunningPod) -> list:
    return node.pod_docker(pod.uid, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()


def test_csi_dind_pod_runs_on_a_slab_and_the_next_csi_pod_finds_its_image(node, plugin):
    first = start(node, pod_from_example(EXAMPLE, "dind-csi-cold"))
    slab = slab_of(first)
    assert pool.slab_mounts()[csi_target_dir(first.uid)] == slab
    assert device_of_graph(node, first) == pool.slabs()[slab].device
    assert JOB_IMAGE not in images_of(node, first)
    load_job_image(node, first)
    wait_for_hello(node, first)
    delete_and_wait(node, first)
    released([slab])
    assert not pool.slab_mounts()

    second = start(node, pod_from_example(EXAMPLE, "dind-csi-warm"))
    assert slab_of(second) == slab, "the next pod of the same size did not get the slab kept for it"
    assert JOB_IMAGE in images_of(node, second)
    wait_for_hello(node, second)
    delete_and_wait(node, second)
    released([slab])
    pool.check_pool()


BAD = {
    "size-mb": ({"size_mb": "lots"}, "size_mb must be a positive whole number of MiB"),
    "unknown": ({"colour": "blue"}, "unknown volumeAttributes 'colour'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_csi_bad_volume_attributes_are_refused_in_the_pods_events_and_create_nothing(node, plugin, case):
    attributes, message = BAD[case]
    before = pool.slabs()
    pod = pod_from_example(EXAMPLE, f"dind-csi-bad-{case}")
    volume = next(v for v in pod["spec"]["volumes"] if "csi" in v)["csi"]
    volume["volumeAttributes"].update(attributes)
    name = node.create(pod)
    uid = node.uid(name)

    def refusal():
        return next((e["message"] for e in node.control_plane.events("default", uid)
                     if e["reason"] == "FailedMount" and message in e["message"]), None)

    event = wait_for("the pod's FailedMount event with the plugin's message", refusal, 300, every_s=2,
                     detail=lambda: str(node.control_plane.events("default", uid))[-3000:])
    assert "InvalidArgument" in event and '"docker-graph-storage"' in event, event
    assert node.container_status(name, "dind") is None or "running" not in node.container_status(name, "dind")["state"]
    assert pool.slabs() == before, "a refused publish created or changed a slab"
    assert not os.path.ismount(csi_target_dir(uid))
    delete_and_wait(node, RunningPod(name, uid, None))
    assert pool.slabs() == before


def test_csi_and_flexvolume_pods_on_one_node_hand_a_slab_to_each_other(node, plugin):
    flex = start(node, pod_from_example("dind-pod.yaml", "dind-flex-shared"), daemon=False)
    slab = slab_of(flex)
    delete_and_wait(node, flex)
    released([slab])
    csi = start(node, pod_from_example(EXAMPLE, "dind-csi-shared"), daemon=False)
    assert slab_of(csi) == slab, "the CSI pod did not get the slab the FlexVolume pod left"
    delete_and_wait(node, csi)
    released([slab])
    again = start(node, pod_from_example("dind-pod.yaml", "dind-flex-shared-again"), daemon=False)
    assert slab_of(again) == slab, "the FlexVolume pod did not get the slab the CSI pod left"
    delete_and_wait(node, again)
    released([slab])
    pool.check_pool()


# ---- three pods at once, and what the node does under them --------------------------------------
THREE = ("dind-csi-0", "dind-csi-1", "dind-csi-2")


@pytest.fixture(scope="module")
def three(node, plugin):
    with ThreadPoolExecutor(3) as workers:
        running = list(workers.map(lambda name: start(node, pod_from_example(EXAMPLE, name)), THREE))
    for pod in running:
        mark(pod, csi_target_dir(pod.uid))
    return {pod.name: pod for pod in running}


def _unchanged(node, pod: RunningPod, slab: str) -> None:
    unchanged(node, pod, slab, csi_target_dir(pod.uid))


def test_csi_pods_started_at_once_each_get_a_slab_of_their_own(node, three):
    slabs = [slab_of(pod) for pod in three.values()]
    assert len(set(slabs)) == len(slabs), f"pods share slabs: {slabs}"
    pool.check_pool()


def test_csi_volumes_of_running_pods_survive_a_kubelet_restart(node, three):
    slabs = {name: slab_of(pod) for name, pod in three.items()}
    calls_before, before = len(driver_calls()), registrations(node)
    node.kubelet.stop()
    node.start_kubelet()
    node.wait_synced()
    # Not the CSINode: it still lists the driver the kubelet before the restart registered.
    wait_for("the plugin registered again", lambda: registrations(node) > before, 300, every_s=2,
             detail=lambda: node.kubelet.log()[-3000:])
    # Unlike its FlexVolume SetUp, kubelet's CSI SetUp does not look at the target dir first: after
    # the restart it publishes each running pod's volume again (its retries, from when the plugin
    # was not registered yet), and the plugin answers from the mount already there (no
    # unpublish, nothing else changed).

    def calls():
        return [c for c in driver_calls()[calls_before:] if c.get("frontend") == "csi" and c.get("verb") != "register"]

    wait_for("kubelet to publish the running pods' volumes again", lambda: len(calls()) >= len(three), 300, every_s=2,
             detail=lambda: repr(calls()))
    for name, pod in three.items():
        _unchanged(node, pod, slabs[name])
    calls = calls()
    assert sorted((c["verb"], c["pod"]) for c in calls) == sorted(("publish", pod.uid) for pod in three.values()), calls
    by_pod = {pod.uid: slabs[name] for name, pod in three.items()}
    assert all((c["decision"], c["outcome"], c["slab"]) == ("already mounted", "Success", by_pod[c["pod"]]) for c in calls), calls
    # Three DinD pods, kubelet restarting: the plugin answered kubelet's probes all along.
    assert not liveness_restarts(node), liveness_restarts(node)[-3:]


def test_csi_plugin_restarted_under_running_pods_keeps_their_volumes_and_unpublishes_later(node, three):
    slabs = {name: slab_of(pod) for name, pod in three.items()}
    uid = plugin_uid(node)
    old = node.container_pid(uid, "plugin")
    before = registrations(node)
    os.kill(old, signal.SIGKILL)  # a crash: no chance to clean up
    wait_for("kubelet to restart the plugin", lambda: _plugin_pid(node, uid) not in (None, old), 300, every_s=2,
             detail=lambda: plugin_log(node))
    # The killed plugin's sockets are still there, so the CSINode still lists the driver: wait
    # for kubelet to register the new process.
    wait_for("kubelet to register the restarted plugin", lambda: registrations(node) > before, 300, every_s=2,
             detail=lambda: plugin_log(node))
    for name, pod in three.items():
        _unchanged(node, pod, slabs[name])
    gone = three[THREE[0]]
    delete_and_wait(node, gone)
    released([slabs[gone.name]])


def _plugin_pid(node, uid: str):
    try:
        return node.container_pid(uid, "plugin")
    except AssertionError:
        return None


def test_csi_pods_deleted_while_the_plugin_was_down_are_released_when_it_returns(node, three):
    pods = [three[name] for name in THREE[1:]]
    slabs = {slab_of(pod) for pod in pods}
    node.delete(CSI_PLUGIN_NAME)
    wait_for("the plugin pod stopped", lambda: CSI_PLUGIN_NAME not in node.pods(), 300, every_s=2)
    for pod in pods:
        node.delete(pod.name)
    # Kubelet cannot unpublish without the plugin: its TearDown fails, the pods' volumes stay.
    wait_for("kubelet's unpublish to fail for want of the plugin", lambda: all(
        any(p.uid in line and UNREGISTERED in line for line in node.kubelet.log(tail=1 << 30).splitlines()) for p in pods),
        300, every_s=2, detail=lambda: node.kubelet.log()[-3000:])
    assert all(os.path.ismount(csi_target_dir(p.uid)) for p in pods)
    assert not os.path.exists(os.path.join(MANIFESTS, f"{CSI_PLUGIN_NAME}.yaml"))
    start_plugin(node)
    for pod in pods:
        node.wait_gone(pod.name, pod.uid)
    released(slabs)
    assert not pool.slab_mounts()
    pool.check_pool()
