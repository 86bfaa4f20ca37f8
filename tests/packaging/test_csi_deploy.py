"""install/kustomize/csi rendered by kubectl's kustomize and checked against what the plugin and
kubelet expect; packaging/Containerfile.csi against the pins and the files it copies; and the
README's CSI pod snippet against examples/dind-pod-csi.yaml."""

from __future__ import annotations

import os
import re
import subprocess

import yaml

from flexdriver.csi import DRIVER_NAME
from flexdriver.csi.server import DEFAULT_ENDPOINT, DEFAULT_HEALTH_ADDRESS, DEFAULT_REGISTRY

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rendered():
    result = subprocess.run(["kubectl", "kustomize", f"{REPO}/install/kustomize/csi"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout) if doc}


def test_the_csidriver_is_inline_only_and_gets_the_pods_namespace():
    driver = rendered()["CSIDriver"]
    assert driver["metadata"]["name"] == DRIVER_NAME
    spec = driver["spec"]
    assert spec["volumeLifecycleModes"] == ["Ephemeral"]
    assert spec["podInfoOnMount"] is True and spec["attachRequired"] is False
    assert spec["fsGroupPolicy"] == "None"


def test_the_daemonset_shares_the_nodes_locks_config_and_kubelets_dir():
    daemonset = rendered()["DaemonSet"]
    assert daemonset["metadata"]["namespace"] == "kube-system"
    pod = daemonset["spec"]["template"]["spec"]
    (plugin,) = pod["containers"]
    assert plugin["securityContext"]["privileged"] is True
    assert plugin["image"] == "ax-vol-plugin-csi:0.1.0"
    args = dict(arg.lstrip("-").split("=", 1) for arg in plugin["args"])
    assert args["endpoint"] == f"unix://{DEFAULT_ENDPOINT}" and args["registration-dir"] == DEFAULT_REGISTRY
    # Kubelet's own HTTP probes on the port the plugin serves them on (nothing exec'd in the container).
    (port,) = plugin["ports"]
    assert f":{port['containerPort']}" == DEFAULT_HEALTH_ADDRESS and "exec" not in plugin["livenessProbe"]
    assert (plugin["startupProbe"]["httpGet"], plugin["livenessProbe"]["httpGet"], plugin["readinessProbe"]["httpGet"]) == (
        {"path": "/healthz", "port": port["name"]}, {"path": "/healthz", "port": port["name"]},
        {"path": "/readyz", "port": port["name"]})
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    mounts = {m["name"]: m for m in plugin["volumeMounts"]}
    # Each is the host's own path at the same path: the plugin's paths are the host's.
    for name in ("kubelet-dir", "dev", "config-dir", "run-dir", "lvm-lock-dir", "log-dir"):
        assert mounts[name]["mountPath"] == host[name], name
    assert host["kubelet-dir"] == "/var/lib/kubelet" and mounts["kubelet-dir"]["mountPropagation"] == "Bidirectional"
    assert DEFAULT_ENDPOINT.startswith(host["kubelet-dir"] + "/") and DEFAULT_REGISTRY.startswith(host["kubelet-dir"] + "/")
    assert (host["run-dir"], host["lvm-lock-dir"], host["config-dir"]) == (
        "/run/ax-vol-plugin", "/run/lock/lvm", "/etc/ax-vol-plugin")
    env = {e["name"]: e for e in plugin["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_the_image_installs_the_pinned_runtime_and_generates_the_api_in_its_build():
    with open(f"{REPO}/packaging/Containerfile.csi") as handle:
        text = handle.read()
    assert "pip install --no-cache-dir -r /opt/ax-vol-plugin/requirements-csi.txt" in text
    assert "RUN python3 /src/packaging/csi-api /api" in text
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert os.path.exists(os.path.join(REPO, source)), source
    assert 'ENTRYPOINT ["python3", "-m", "flexdriver.csi"]' in text
    # Bytecode for what it imports, made after the last of it is in place (unchecked: the files never change).
    compiled = text.index("RUN python3 -m compileall")
    assert compiled > text.rindex("COPY ") and "--invalidation-mode unchecked-hash" in text[compiled:]
    with open(f"{REPO}/packaging/lvmlocal-csi.conf") as handle:
        lvm = handle.read()
    for setting in ("udev_sync = 0", "udev_rules = 0", "obtain_device_list_from_udev = 0"):
        assert setting in lvm


def test_the_readmes_csi_volume_is_the_examples():
    with open(f"{REPO}/README.md") as handle:
        readme = handle.read()
    assert "kubectl apply -k install/kustomize/csi" in readme
    snippet = readme[readme.index("### CSI node plugin"):].split("```yaml\n", 1)[1].split("```", 1)[0]
    with open(f"{REPO}/examples/dind-pod-csi.yaml") as handle:
        example = yaml.safe_load(handle)
    assert yaml.safe_load(snippet)["volumes"] == example["spec"]["volumes"]
