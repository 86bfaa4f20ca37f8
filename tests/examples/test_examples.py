"""The pod specs in examples/ are valid, use the driver correctly, and pass its own option parser."""

import glob
import json
import os

import pytest
import yaml

from flexdriver.options import parse_mount

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = sorted(glob.glob(os.path.join(REPO, "examples", "*.yaml")))


def pod_spec(document):
    return document["spec"]["template"]["spec"] if document["kind"] == "Job" else document["spec"]


def running_containers(spec):
    """The containers that run side by side: the pod's own and its native sidecars (init
    containers with restartPolicy Always, which run beside them until they end)."""
    sidecars = [c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    return sidecars + spec["containers"]


def load(path):
    """The example's pod spec and its one slab volume (a flexVolume, or a CSI inline volume)."""
    with open(path) as handle:
        (document,) = list(yaml.safe_load_all(handle))
    spec = pod_spec(document)
    (volume,) = [v for v in spec["volumes"] if "flexVolume" in v or "csi" in v]
    return spec, volume


def kubelet_options(volume, uid="2b8e6f0c-1d2a-4c3b-9e8f-0a1b2c3d4e5f"):
    """The JSON kubelet would pass to mount: its own keys, then the spec's options merged last."""
    flex = volume["flexVolume"]
    options = {
        "kubernetes.io/fsType": flex.get("fsType", ""),
        "kubernetes.io/readwrite": "ro" if flex.get("readOnly") else "rw",
        "kubernetes.io/pvOrVolumeName": volume["name"],
        "kubernetes.io/pod.uid": uid,
        **flex.get("options", {}),
    }
    return json.dumps(options)


def test_there_are_examples():
    names = {os.path.basename(p) for p in EXAMPLES}
    assert {"dind-pod.yaml", "dind-pod-xfs.yaml", "dind-pod-csi.yaml", "ci-runner-job.yaml", "prewarm-job.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_uses_the_driver_with_options_it_accepts(path):
    _, volume = load(path)
    uid = "2b8e6f0c-1d2a-4c3b-9e8f-0a1b2c3d4e5f"
    if "csi" in volume:
        from flexdriver.csi import DRIVER_NAME, request

        source = volume["csi"]
        assert source["driver"] == DRIVER_NAME
        options = source["volumeAttributes"]
        target = f"/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~csi/{volume['name']}/mount"
        kubelet_keys = {"csi.storage.k8s.io/pod.uid": uid, "csi.storage.k8s.io/pod.namespace": "ci",
                        "csi.storage.k8s.io/ephemeral": "true"}
        parsed = request.mount_request(request.target_of(target, "/var/lib/kubelet"), {**options, **kubelet_keys},
                                       source.get("fsType", ""), bool(source.get("readOnly")), 10240, "node")
    else:
        source = volume["flexVolume"]
        assert source["driver"] == "ax/vol_plugin"
        options = source["options"]
        mount_dir = f"/var/lib/kubelet/pods/{uid}/volumes/ax~vol_plugin/{volume['name']}"
        parsed = parse_mount(mount_dir, kubelet_options(volume, uid), default_size_mb=10240)
    assert all(isinstance(v, str) for v in options.values()), "options and volumeAttributes are strings"
    assert parsed.fs_type == (source.get("fsType") or "ext4")
    assert parsed.size_mb == int(options["size_mb"])
    assert parsed.pod_uid == uid


def test_the_csi_example_differs_from_the_flexvolume_one_only_in_its_volume_source():
    flex_spec, flex = load(os.path.join(REPO, "examples", "dind-pod.yaml"))
    csi_spec, csi = load(os.path.join(REPO, "examples", "dind-pod-csi.yaml"))
    assert {k: v for k, v in flex_spec.items() if k != "volumes"} == {k: v for k, v in csi_spec.items() if k != "volumes"}
    assert csi["csi"]["volumeAttributes"] == flex["flexVolume"]["options"]
    assert csi["csi"]["fsType"] == flex["flexVolume"]["fsType"]


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_only_the_daemon_is_privileged_and_it_owns_the_slab(path):
    spec, volume = load(path)
    containers = running_containers(spec)
    assert all(c.get("restartPolicy") == "Always" for c in spec.get("initContainers", [])), "no init container runs alone"
    privileged = [c for c in containers if c.get("securityContext", {}).get("privileged")]
    assert [c["name"] for c in privileged] == ["dind"]
    (daemon,) = privileged
    mounts = {m["name"]: m["mountPath"] for m in daemon.get("volumeMounts", [])}
    assert mounts[volume["name"]] == "/var/lib/docker"
    # No other container may mount the graph storage: one dockerd per /var/lib/docker.
    others = [c for c in containers if c is not daemon]
    assert all(volume["name"] not in {m["name"] for m in c.get("volumeMounts", [])} for c in others)
    # The daemon listens on the pod's loopback only; clients reach it through localhost.
    assert any(a.startswith("--host=tcp://127.0.0.1:") for a in daemon.get("args", []))
    for client in others:
        env = {e["name"]: e.get("value") for e in client.get("env", [])}
        assert env.get("DOCKER_HOST", "").startswith("tcp://localhost:")


def test_the_prewarm_job_warms_the_slabs_the_runners_ask_for():
    _, prewarm = load(os.path.join(REPO, "examples", "prewarm-job.yaml"))
    _, runner = load(os.path.join(REPO, "examples", "ci-runner-job.yaml"))
    # Slabs are handed out by size, filesystem, type and scope: any difference and no runner
    # would ever get the warm slab.
    assert prewarm["flexVolume"] == runner["flexVolume"]


def test_the_prewarm_job_runs_one_pod_per_node_and_ends():
    with open(os.path.join(REPO, "examples", "prewarm-job.yaml")) as handle:
        job = yaml.safe_load(handle)
    spec = job["spec"]
    assert spec["completions"] == spec["parallelism"], "all at once, so that the anti-affinity spreads them"
    template = spec["template"]
    (term,) = template["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert template["spec"]["restartPolicy"] == "Never"
    # The daemon is a native sidecar, so the pod ends when the loader does.
    assert [c["name"] for c in template["spec"]["initContainers"]] == ["dind"]
    assert [c["name"] for c in template["spec"]["containers"]] == ["loader"]
