"""install/kustomize rendered by kubectl's own kustomize, one overlay per distribution, and checked
object by object; and packaging/Containerfile's file layout against what the DaemonSet runs."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KUSTOMIZE = f"{REPO}/install/kustomize"
# Each distribution's kubelet plugin dir (README.md, Install, has the same table).
PLUGIN_DIRS = {
    "kubeadm": "/usr/libexec/kubernetes/kubelet-plugins/volume/exec",
    "gke": "/home/kubernetes/flexvolume",
    "flatcar": "/opt/libexec/kubernetes/kubelet-plugins/volume/exec",
    "rke": "/var/lib/kubelet/volumeplugins",
    "aks": "/etc/kubernetes/volumeplugins",
    "openshift": "/etc/kubernetes/kubelet-plugins/volume/exec",
}


def render(path):
    result = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "$(" not in result.stdout, "a variable was left unsubstituted"
    return {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout) if doc}


def test_every_overlay_is_tested():
    assert sorted(os.listdir(f"{KUSTOMIZE}/overlays")) == sorted(PLUGIN_DIRS)


@pytest.fixture(scope="module")
def rendered():
    return {name: render(f"{KUSTOMIZE}/overlays/{name}") for name in PLUGIN_DIRS}


@pytest.mark.parametrize("distribution", sorted(PLUGIN_DIRS))
def test_the_plugin_dir_setting_flows_into_hostpath_mount_and_installer(rendered, distribution):
    plugin_dir = PLUGIN_DIRS[distribution]
    objects = rendered[distribution]
    assert objects["ConfigMap"]["data"]["pluginDir"] == plugin_dir
    pod = objects["DaemonSet"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["plugin-dir"]["hostPath"] == {"path": plugin_dir, "type": "DirectoryOrCreate"}
    (install,) = pod["initContainers"]
    mounts = {m["name"]: m["mountPath"] for m in install["volumeMounts"]}
    assert mounts["plugin-dir"] == "/host" + plugin_dir
    # Every hostPath is mounted at its node path under --host-root, so install.sh's paths line up.
    for name, path in mounts.items():
        assert path == "/host" + volumes[name]["hostPath"]["path"]
    args = install["args"]
    assert args[args.index("--plugin-dir") + 1] == plugin_dir
    assert args[args.index("--host-root") + 1] == "/host"


def test_only_the_install_step_is_privileged(rendered):
    daemonset = rendered["kubeadm"]["DaemonSet"]
    assert daemonset["metadata"]["namespace"] == "kube-system"
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostPID"] is True  # install.sh reaches the node's mount namespace through pid 1
    assert not pod.get("hostNetwork") and not pod.get("hostIPC")
    assert {t.get("operator") for t in pod["tolerations"]} == {"Exists"}  # tainted nodes too
    (install,) = pod["initContainers"]
    assert install["securityContext"] == {"privileged": True}
    (guard,) = pod["containers"]
    security = guard["securityContext"]
    assert security["privileged"] is False and security["allowPrivilegeEscalation"] is False
    assert security["runAsNonRoot"] is True and security["capabilities"]["drop"] == ["ALL"]
    assert security["readOnlyRootFilesystem"] is True
    assert not guard.get("volumeMounts"), "the guard needs no host access"
    assert guard["resources"]["limits"]["memory"]
    hostpaths = sorted(v["hostPath"]["path"] for v in pod["volumes"])
    assert hostpaths == sorted(["/etc/ax-vol-plugin", "/usr/local/sbin", PLUGIN_DIRS["kubeadm"]])  # nothing else of the node


def container_rootfs(tmp_path):
    """The image's files as packaging/Containerfile lays them out (its COPY lines), built offline
    from this checkout: no registry is needed to check what the DaemonSet will find in it."""
    root = tmp_path / "rootfs"
    subprocess.run(
        [f"{REPO}/packaging/build", "--out", str(tmp_path / "dist/vol_plugin"),
         "--admin-out", str(tmp_path / "dist/ax-vol-plugin")],
        check=True, capture_output=True,
    )
    with open(f"{REPO}/packaging/Containerfile") as handle:
        lines = [line.split() for line in handle if line.startswith("COPY ")]
    assert lines
    for _, *sources, target in lines:
        os.makedirs(root / target.lstrip("/"), exist_ok=True)
        for source in sources:
            origin = tmp_path / source if source.startswith("dist/") else f"{REPO}/{source}"
            shutil.copy2(origin, root / target.lstrip("/") / os.path.basename(source))
    return root


def test_the_image_holds_what_the_daemonset_runs(rendered, tmp_path):
    root = container_rootfs(tmp_path)
    pod = rendered["kubeadm"]["DaemonSet"]["spec"]["template"]["spec"]
    (install,) = pod["initContainers"]
    args = install["args"]
    for path in (install["command"][0], args[args.index("--driver") + 1], args[args.index("--admin") + 1]):
        assert os.access(root / path.lstrip("/"), os.X_OK), path
    # install.sh sources lib.sh from its own dir.
    assert (root / "opt/ax-vol-plugin/install/lib.sh").exists()
    # The image's entrypoint, run as the container would (help only: no node here).
    result = subprocess.run([str(root / "opt/ax-vol-plugin/install/install.sh"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--host-root" in result.stdout


def test_readme_documents_the_same_plugin_dirs():
    with open(f"{REPO}/README.md") as handle:
        readme = handle.read()
    for distribution, plugin_dir in PLUGIN_DIRS.items():
        assert f"`{plugin_dir}`" in readme, plugin_dir
        assert f"overlays/{distribution}" in readme, distribution
    command = "kubectl apply -k install/kustomize/overlays/"
    assert command in readme and shlex.split(command)[0] == "kubectl"
