"""A one-node cluster inside the VM: Debian's containerd, the real kubelet built by
tests/e2e/build.py, and pods made from the examples.

For the FlexVolume scenarios kubelet runs standalone (no apiserver): pods are manifests in its
static pod dir, deleting a pod is removing its manifest, and their status comes from kubelet's
own /pods endpoint, which reports a static pod with the status kubelet keeps for it. Everything
the driver sees comes from kubelet itself: its plugin probing, the JSON it sends, its
SetUp/TearDown, reconstruction.

The CSI scenarios need more: kubelet serves an inline CSI volume only for a driver whose CSIDriver
object says Ephemeral, and registers a node plugin in the API's CSINode. So there the node has a
control plane of its own (ControlPlane: etcd and kube-apiserver, built by the same module, no
scheduler or controllers): pods are created through the API with their nodeName set, as a
scheduler would bind them, and deleted through it; the plugin itself is a static pod made from
install/kustomize/csi's DaemonSet, as a node without a controller runs it.
"""

from __future__ import annotations

import copy
import glob
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from typing import Callable, Dict, List, Optional

import yaml

from . import images

REPO = images.REPO
NODE_NAME = "e2e-node"
# Everything that must outlive a reboot is on the node disk: kubelet's dir (pods' volume dirs),
# containerd's images and snapshots, and the static pod manifests (the pods "the API" wants).
NODE_ROOT = "/var/lib/ax-e2e"
KUBELET_ROOT = "/var/lib/kubelet"
CONTAINERD_ROOT = f"{NODE_ROOT}/containerd"
MANIFESTS = f"{NODE_ROOT}/manifests"
PLUGIN_DIR = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec"
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
CNI_CONF_DIR = "/etc/cni/net.d"
NODE_LABELS = {"ax-vol-plugin/slab-disk": "true"}  # what ci-runner-job.yaml's nodeSelector asks for
KUBELET_PORT = 10250
APISERVER_PORT = 6443
ETCD_CLIENT = "http://127.0.0.1:2379"
# The node's address, on a dummy interface: the guest has no network, and kubelet (its node's
# status) and kube-apiserver (its advertised address) each want one that is not loopback.
NODE_IP = "10.250.0.1"
NODE_INTERFACE = "ax-e2e0"
CONTROL_PLANE_DIR = f"{NODE_ROOT}/control-plane"
# The example images, and what replaces each here (the spec's only change, with the pull policy).
IMAGE_FOR = {"docker:27-dind": images.DIND_IMAGE, "docker:27-cli": images.CLI_IMAGE}
CSI_PLUGIN_NAME = "ax-vol-plugin-csi"  # install/kustomize/csi's DaemonSet, here a static pod

CONTAINERD_CONFIG = f"""version = 2
root = "{CONTAINERD_ROOT}"
state = "/run/containerd"
[grpc]
  address = "{CONTAINERD_SOCKET}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{images.PAUSE_IMAGE}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{CNI_CONF_DIR}"
"""

# A bridge with addresses from host-local and no routes out: pods get an eth0 (containerd
# wants one to report the pod's IP) and their own loopback, which is all a DinD pod uses. The
# bridge is the pods' gateway so that the node reaches pod IPs, as in any cluster: kubelet's
# httpGet probes (the CSI plugin's) dial the pod's IP from the node.
CNI_CONFIG = {
    "cniVersion": "0.4.0",
    "name": "ax-e2e",
    "plugins": [
        {
            "type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]]},
        }
    ],
}


def kubelet_config() -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "staticPodPath": MANIFESTS,
        "fileCheckFrequency": "2s",
        "syncFrequency": "10s",
        "volumePluginDir": PLUGIN_DIR,
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        # The guest has no systemd: cgroupfs, and no per-QoS cgroups to set up.
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        "address": "127.0.0.1",
        "port": KUBELET_PORT,
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        # A small test disk: nothing may be evicted or garbage-collected under the tests.
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
    }


def run(*argv: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {out.returncode}: {out.stderr.strip()[-2000:]}")
    return out


def wait_for(what: str, ready: Callable[[], object], timeout_s: float, every_s: float = 1.0, detail: Callable[[], str] = None):
    deadline = time.monotonic() + timeout_s
    while True:
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{detail()}" if detail else ""
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{extra}")
        time.sleep(every_s)


class Daemon:
    """A long-running process of the node, its output in the results dir (kept after the VM)."""

    def __init__(self, name: str, argv: List[str], results: str) -> None:
        self.name = name
        self.argv = argv
        self.log_path = os.path.join(results, f"{name}.log")
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> None:
        if not self.running():
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log(self, tail: int = 4000) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return handle.read()[-tail:]
        except OSError:
            return ""

    def log_since_start(self) -> str:
        """What the process wrote since it was last started."""
        text = self.log(tail=1 << 30)
        return text[text.rfind("\n===== "):]


class ControlPlane:
    """etcd and kube-apiserver for the one node, on loopback; a static token of system:masters
    for kubelet and for the tests, authorization AlwaysAllow. Admission without ServiceAccount:
    no controller makes the default service account or the root CA's config map that its token
    volumes need."""

    TOKEN = "ax-e2e-admin-token"

    def __init__(self, results: str, etcd_binary: str, apiserver_binary: str) -> None:
        self.results = results
        os.makedirs(CONTROL_PLANE_DIR, exist_ok=True)
        key, public = (os.path.join(CONTROL_PLANE_DIR, n) for n in ("service-account.key", "service-account.pub"))
        if not os.path.exists(public):
            run("openssl", "genrsa", "-out", key, "2048")
            run("openssl", "rsa", "-in", key, "-pubout", "-out", public)
        tokens = os.path.join(CONTROL_PLANE_DIR, "tokens.csv")
        with open(tokens, "w") as handle:
            handle.write(f'{self.TOKEN},ax-e2e-admin,ax-e2e-admin,"system:masters"\n')
        os.chmod(tokens, 0o600)
        self.kubeconfig = os.path.join(CONTROL_PLANE_DIR, "kubeconfig")
        with open(self.kubeconfig, "w") as handle:
            yaml.safe_dump({
                "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
                "clusters": [{"name": "e2e", "cluster": {"server": f"https://127.0.0.1:{APISERVER_PORT}",
                                                         "insecure-skip-tls-verify": True}}],
                "users": [{"name": "e2e", "user": {"token": self.TOKEN}}],
                "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e"}}],
            }, handle)
        self.etcd = Daemon("etcd", [
            etcd_binary, "--name", "e2e", "--data-dir", os.path.join(CONTROL_PLANE_DIR, "etcd"),
            "--listen-client-urls", ETCD_CLIENT, "--advertise-client-urls", ETCD_CLIENT,
            "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--initial-cluster", "e2e=http://127.0.0.1:2380",
            "--unsafe-no-fsync",  # a throw-away VM's store: its writes need not survive a crash
        ], results)
        self.apiserver = Daemon("kube-apiserver", [
            apiserver_binary, "--etcd-servers", ETCD_CLIENT,
            "--bind-address", "127.0.0.1", "--secure-port", str(APISERVER_PORT), "--advertise-address", NODE_IP,
            "--endpoint-reconciler-type", "none", "--service-cluster-ip-range", "10.96.0.0/24",
            "--cert-dir", os.path.join(CONTROL_PLANE_DIR, "apiserver-certs"),
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", public, "--service-account-signing-key-file", key,
            "--token-auth-file", tokens, "--authorization-mode", "AlwaysAllow",
            "--allow-privileged=true", "--disable-admission-plugins", "ServiceAccount",
        ], results)
        self._context = ssl.create_default_context()
        self._context.check_hostname = False
        self._context.verify_mode = ssl.CERT_NONE  # its self-signed serving cert, on loopback

    def start(self) -> None:
        self.etcd.start()
        wait_for("etcd", lambda: _http_ok(f"{ETCD_CLIENT}/health"), 120, detail=self.etcd.log)
        self.apiserver.start()
        wait_for("kube-apiserver", lambda: self.request("GET", "/readyz", check=False) == "ok", 300,
                 detail=self.apiserver.log)

    def stop(self) -> None:
        self.apiserver.stop()
        self.etcd.stop()

    def request(self, method: str, path: str, body: Optional[dict] = None, check: bool = True):
        """The API's answer: JSON decoded (text for /readyz), or None for a 404 (or any error, unchecked)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"https://127.0.0.1:{APISERVER_PORT}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self.TOKEN}", "Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, context=self._context, timeout=60) as reply:
                text = reply.read().decode()
        except urllib.error.HTTPError as error:
            if check and error.code != 404:
                raise AssertionError(f"{method} {path}: {error.code} {error.read().decode()[-2000:]}") from None
            return None
        except OSError:
            if check:
                raise
            return None
        return json.loads(text) if text.startswith("{") else text

    def apply(self, manifest: dict) -> dict:
        """Create an object of a kind the suite makes (so far only the CSIDriver)."""
        kind = manifest["kind"]
        if kind == "CSIDriver":
            return self.request("POST", "/apis/storage.k8s.io/v1/csidrivers", manifest)
        raise ValueError(f"the suite makes no {kind}")

    def events(self, namespace: str, uid: str) -> List[dict]:
        listing = self.request("GET", f"/api/v1/namespaces/{namespace}/events?fieldSelector=involvedObject.uid%3D{uid}")
        return (listing or {}).get("items") or []


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status == 200
    except OSError:
        return False


class Node:
    def __init__(self, results: str, kubelet_binary: str, control_plane: Optional[ControlPlane] = None) -> None:
        self.results = results
        self.kubelet_binary = kubelet_binary
        self.control_plane = control_plane
        os.makedirs(MANIFESTS, exist_ok=True)
        config_path = os.path.join(NODE_ROOT, "containerd.toml")
        with open(config_path, "w") as handle:
            handle.write(CONTAINERD_CONFIG)
        os.makedirs(CNI_CONF_DIR, exist_ok=True)
        with open(os.path.join(CNI_CONF_DIR, "10-ax-e2e.conflist"), "w") as handle:
            json.dump(CNI_CONFIG, handle)
        kubelet_config_path = os.path.join(NODE_ROOT, "kubelet.yaml")
        with open(kubelet_config_path, "w") as handle:
            yaml.safe_dump(kubelet_config(), handle)
        self.containerd = Daemon("containerd", ["containerd", "--config", config_path], results)
        labels = ",".join(f"{key}={value}" for key, value in NODE_LABELS.items())
        connected = ["--kubeconfig", control_plane.kubeconfig, "--node-ip", NODE_IP] if control_plane else []
        self.kubelet = Daemon("kubelet", [
            kubelet_binary, "--config", kubelet_config_path, "--hostname-override", NODE_NAME,
            "--node-labels", labels, "--root-dir", KUBELET_ROOT, "-v", "3", *connected,
        ], results)
        self._context = ssl.create_default_context()
        self._context.check_hostname = False
        self._context.verify_mode = ssl.CERT_NONE  # kubelet's self-signed serving cert, on loopback

    # ---- the daemons -------------------------------------------------------------------------

    def start_containerd(self) -> None:
        self.containerd.start()
        wait_for("containerd", lambda: run("ctr", "--address", CONTAINERD_SOCKET, "version", check=False).returncode == 0,
                 120, detail=self.containerd.log)

    def ctr(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return run("ctr", "--address", CONTAINERD_SOCKET, "-n", "k8s.io", *args, check=check, timeout=timeout)

    def import_images(self, tarballs: Dict[str, str]) -> None:
        have = set(self.ctr("images", "ls", "-q").stdout.split())
        for name, path in tarballs.items():
            wanted = images.CONTAINERD_IMAGES.get(name)
            if wanted is None or wanted in have:
                continue
            self.ctr("images", "import", path, timeout=900)

    def start_kubelet(self) -> None:
        self.kubelet.start()
        wait_for("kubelet's API", lambda: self._get("/healthz", check=False) == "ok", 300, detail=self.kubelet.log)

    def version(self) -> str:
        return run(self.kubelet_binary, "--version").stdout.strip()

    def _get(self, path: str, check: bool = True) -> Optional[str]:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{KUBELET_PORT}{path}", context=self._context, timeout=30) as reply:
                return reply.read().decode()
        except OSError:
            if check:
                raise
            return None

    # ---- pods --------------------------------------------------------------------------------

    def pods(self) -> Dict[str, dict]:
        """Kubelet's pods by their name: a static pod's in its manifest (kubelet appends the
        node's name), an API pod's own."""
        listing = json.loads(self._get("/pods"))
        return {_static_name(p): p for p in listing.get("items") or []}

    def create(self, pod: dict) -> str:
        """A static pod (its manifest), or with a control plane an API pod bound to this node."""
        if self.control_plane is not None:
            bound = copy.deepcopy(pod)
            bound["spec"]["nodeName"] = NODE_NAME
            self.control_plane.request("POST", "/api/v1/namespaces/default/pods", bound)
            return pod["metadata"]["name"]
        return self.create_static(pod)

    def delete(self, name: str) -> None:
        if self.control_plane is not None and not os.path.exists(os.path.join(MANIFESTS, f"{name}.yaml")):
            self.control_plane.request("DELETE", f"/api/v1/namespaces/default/pods/{name}")
            return
        os.unlink(os.path.join(MANIFESTS, f"{name}.yaml"))

    def create_static(self, pod: dict) -> str:
        name = pod["metadata"]["name"]
        path = os.path.join(MANIFESTS, f"{name}.yaml")
        temporary = os.path.join(MANIFESTS, f".{name}.tmp")
        with open(temporary, "w") as handle:
            yaml.safe_dump(pod, handle)
        os.replace(temporary, path)  # kubelet must never read half a manifest
        return name

    def manifests(self) -> List[str]:
        return sorted(n[:-5] for n in os.listdir(MANIFESTS) if n.endswith(".yaml"))

    def uid(self, name: str, timeout_s: float = 120) -> str:
        return wait_for(f"kubelet to take pod {name}", lambda: self.pods().get(name, {}).get("metadata", {}).get("uid"),
                        timeout_s, detail=self.kubelet.log)

    def container_status(self, name: str, container: str) -> Optional[dict]:
        status = self.pods().get(name, {}).get("status", {})
        for entry in status.get("containerStatuses") or []:
            if entry["name"] == container:
                return entry
        return None

    def wait_running(self, name: str, containers=("dind",), timeout_s: float = 600) -> dict:
        def ready():
            pod = self.pods().get(name)
            if not pod:
                return None
            states = {c["name"]: c.get("state", {}) for c in pod.get("status", {}).get("containerStatuses") or []}
            return pod if all("running" in states.get(c, {}) for c in containers) else None
        return wait_for(f"pod {name} running", ready, timeout_s, every_s=2, detail=lambda: self.describe(name))

    def wait_gone(self, name: str, uid: str, timeout_s: float = 600) -> None:
        """Until kubelet has no such pod, and has removed the pod's dir (which it does only once
        every volume is unmounted)."""
        wait_for(f"pod {name} gone", lambda: name not in self.pods() and not os.path.exists(pod_dir(uid)),
                 timeout_s, every_s=2, detail=lambda: self.describe(name) + "\n" + self.kubelet.log())

    def wait_synced(self, timeout_s: float = 120) -> None:
        """Until kubelet's volume manager has been through its pods since it started: its
        reconciler has run once the node reports the volumes it has in use."""
        wait_for("kubelet's volume reconciler", lambda: "Reconciler: start to sync state" in self.kubelet.log_since_start(),
                 timeout_s, detail=self.kubelet.log)

    def describe(self, name: str) -> str:
        pod = self.pods().get(name)
        return json.dumps(pod.get("status") if pod else None, indent=1)[-3000:]

    def container_pid(self, uid: str, container: str) -> int:
        """The host pid of a pod's running container (to enter its network namespace)."""
        for line in self.ctr("tasks", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 3 or fields[2] != "RUNNING":
                continue
            info = json.loads(self.ctr("containers", "info", fields[0]).stdout)
            labels = info.get("Labels") or {}
            if labels.get("io.kubernetes.pod.uid") == uid and labels.get("io.kubernetes.container.name") == container:
                return int(fields[1])
        raise AssertionError(f"no running {container} container for pod {uid}")

    def pod_docker(self, uid: str, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        """The docker client against the pod's own dockerd, on the pod's loopback (as its build container does)."""
        pid = self.container_pid(uid, "dind")
        return run("nsenter", "-t", str(pid), "-n", "/usr/bin/docker", "-H", "tcp://127.0.0.1:2375", *args,
                   check=check, timeout=timeout)

    def container_log(self, uid: str, name: str, container: str) -> str:
        """What kubelet wrote of a container's output, every restart of it."""
        text = ""
        try:
            # NAMESPACE_NAME_UID: a static pod's name has the node's appended, an API pod's not
            (base,) = glob.glob(f"/var/log/pods/*_{uid}/{container}") or [f"/var/log/pods/none_{uid}/{container}"]
            for entry in sorted(os.listdir(base)):
                with open(os.path.join(base, entry), errors="replace") as handle:
                    text += handle.read()
        except OSError:
            pass
        return text


def _static_name(pod: dict) -> str:
    name, suffix = pod["metadata"]["name"], f"-{NODE_NAME}"
    is_static = (pod["metadata"].get("annotations") or {}).get("kubernetes.io/config.source", "api") != "api"
    return name[: -len(suffix)] if is_static and name.endswith(suffix) else name


def pod_dir(uid: str) -> str:
    return f"{KUBELET_ROOT}/pods/{uid}"


def volume_dir(uid: str, volume: str = "docker-graph-storage") -> str:
    return f"{pod_dir(uid)}/volumes/ax~vol_plugin/{volume}"


def csi_target_dir(uid: str, volume: str = "docker-graph-storage") -> str:
    """Where kubelet has a CSI inline volume mounted (NodePublishVolume's target path)."""
    return f"{pod_dir(uid)}/volumes/kubernetes.io~csi/{volume}/mount"


def load_example(name: str) -> dict:
    with open(os.path.join(REPO, "examples", name)) as handle:
        return yaml.safe_load(handle)


CSI_DEPLOY = os.path.join(REPO, "install", "kustomize", "csi")


def load_deploy(name: str) -> dict:
    with open(os.path.join(CSI_DEPLOY, name)) as handle:
        return yaml.safe_load(handle)


def csi_plugin_pod() -> dict:
    """The CSI node plugin as a static pod: install/kustomize/csi's DaemonSet's pod, in the
    kustomization's namespace, with only its image (the local one) and pull policy changed."""
    daemonset = load_deploy("daemonset.yaml")
    kustomization = load_deploy("kustomization.yaml")
    template = copy.deepcopy(daemonset["spec"]["template"])
    for container in template["spec"]["containers"]:
        container["image"] = images.CSI_PLUGIN_IMAGE
        container["imagePullPolicy"] = "Never"
    metadata = {"name": daemonset["metadata"]["name"], "namespace": kustomization["namespace"],
                "labels": {**template["metadata"].get("labels", {}), **kustomization.get("commonLabels", {})}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


def pod_from_example(example: str, name: str) -> dict:
    """The example's pod (a Job's pod template for a Job) with only its images replaced by the
    local ones and their pull policy set to Never; `name` is the pod's, so that several run."""
    source = load_example(example)
    if source["kind"] == "Pod":
        spec = copy.deepcopy(source["spec"])
    else:
        spec = copy.deepcopy(source["spec"]["template"]["spec"])
    for container in spec.get("initContainers", []) + spec["containers"]:
        container["image"] = IMAGE_FOR[container["image"]]
        container["imagePullPolicy"] = "Never"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
