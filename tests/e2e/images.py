"""Container images for the end-to-end suite, built offline from the host's own binaries.

No registry is reachable from these machines, and the examples' images (docker:27-dind,
docker:27-cli, alpine) come from one. Each image here is one layer holding static busybox and
whatever Debian binaries it needs (with the shared libraries `ldd` names for them), written as a
docker-archive tarball that both `ctr images import` (kubelet's containerd) and `docker load`
(the pod's own dockerd) accept. Pods use them with `imagePullPolicy: Never`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from typing import Dict, Iterable, List, Optional, Tuple

BUSYBOX = "/bin/busybox"
REGISTRY = "ax-e2e.local"  # a name no registry answers: a missing image can only fail, never be pulled
PAUSE_IMAGE = f"{REGISTRY}/pause:1"
DIND_IMAGE = f"{REGISTRY}/dind:1"
CLI_IMAGE = f"{REGISTRY}/docker-cli:1"
# What the examples' build containers run inside the pod's dockerd: the name they ask for, so the
# example command runs as written; loaded into the pod's daemon by the test, as a pull would.
JOB_IMAGE = "alpine:3.20"
APPLETS = (
    "sh", "cat", "echo", "ls", "sleep", "mkdir", "rm", "kill", "mount", "umount", "grep", "sed", "tr",
    "xargs", "wc", "du", "df", "ps", "test", "[", "true", "false", "env", "date", "touch", "head", "tail",
)
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The DinD sidecar's entrypoint. Three things the upstream docker:dind image's entrypoint also
# does, for the same reasons: (1) cgroup v2 lets a cgroup either hold processes or delegate
# controllers, not both, so this container's processes move to a child cgroup before the inner
# runc asks for controllers; (2) containerd is started here, its state on the slab as dockerd
# would put it, because dockerd gives a containerd of its own a fixed minute to come up, which a
# loaded emulated guest can exceed; (3) SIGTERM from kubelet stops dockerd, then containerd, so
# nothing holds the slab when kubelet unmounts it. The pod has no routes out and the image no
# iptables, so dockerd keeps its bridge but makes no NAT rules.
DIND_ENTRYPOINT = """#!/bin/sh
set -e
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  mkdir -p /sys/fs/cgroup/init
  xargs -rn1 < /sys/fs/cgroup/cgroup.procs > /sys/fs/cgroup/init/cgroup.procs 2>/dev/null || :
  sed -e 's/ / +/g' -e 's/^/+/' < /sys/fs/cgroup/cgroup.controllers > /sys/fs/cgroup/cgroup.subtree_control || :
fi
mkdir -p /var/lib/docker/containerd/daemon /run/docker/containerd/daemon
containerd --root /var/lib/docker/containerd/daemon --state /run/docker/containerd/daemon \\
  --address /run/docker/containerd/containerd.sock &
containerd_pid=$!
while [ ! -S /run/docker/containerd/containerd.sock ]; do sleep 0.2; done
dockerd --containerd /run/docker/containerd/containerd.sock --iptables=false --ip6tables=false "$@" &
dockerd_pid=$!
stop() {
  kill -TERM "$dockerd_pid" 2>/dev/null || :
  wait "$dockerd_pid" || :
  kill -TERM "$containerd_pid" 2>/dev/null || :
  wait "$containerd_pid" || :
  exit 0
}
trap stop TERM INT
wait "$dockerd_pid"
"""

PAUSE_SCRIPT = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"


@dataclasses.dataclass
class Layer:
    """One image layer being put together: paths inside the image mapped to what goes there."""

    files: Dict[str, Tuple[str, object]] = dataclasses.field(default_factory=dict)

    def copy(self, host_path: str, path: Optional[str] = None, mode: int = 0o755) -> None:
        self.files[path or host_path] = ("file", (host_path, mode))

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        self.files[path] = ("data", (text.encode(), mode))

    def link(self, path: str, target: str) -> None:
        self.files[path] = ("link", target)

    def directory(self, path: str, mode: int = 0o755) -> None:
        self.files[path] = ("dir", mode)

    def binary(self, host_path: str) -> None:
        """A dynamically linked program, at its own path, with the libraries it loads."""
        self.copy(host_path)
        for library in shared_libraries(host_path):
            self.copy(library, mode=0o755)

    def busybox(self) -> None:
        self.copy(BUSYBOX, "/bin/busybox")
        for applet in APPLETS:
            self.link(f"/bin/{applet}", "busybox")
        for path in ("/tmp", "/run", "/var", "/etc", "/proc", "/sys", "/dev"):
            self.directory(path, 0o1777 if path == "/tmp" else 0o755)
        self.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
        self.write("/etc/group", "root:x:0:\n")

    def tar(self) -> bytes:
        """The layer as an uncompressed tar, the same bytes for the same inputs (fixed times,
        owners, order), so its digest only changes when a binary does."""
        parents = set()
        for path in self.files:
            parts = path.strip("/").split("/")[:-1]
            parents.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for parent in sorted(parents):
                if "/" + parent not in self.files:
                    tar.addfile(_info(parent, tarfile.DIRTYPE, 0o755))
            for path in sorted(self.files):
                kind, value = self.files[path]
                name = path.strip("/")
                if kind == "dir":
                    tar.addfile(_info(name, tarfile.DIRTYPE, value))
                elif kind == "link":
                    info = _info(name, tarfile.SYMTYPE, 0o777)
                    info.linkname = value
                    tar.addfile(info)
                else:
                    if kind == "file":
                        host_path, mode = value
                        with open(host_path, "rb") as handle:
                            data = handle.read()
                    else:
                        data, mode = value
                    info = _info(name, tarfile.REGTYPE, mode)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return out.getvalue()


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def shared_libraries(program: str) -> List[str]:
    """The files the dynamic loader maps for `program` (the loader itself included)."""
    out = subprocess.run(["ldd", program], capture_output=True, text=True)
    if out.returncode != 0:
        return []  # "not a dynamic executable"
    found = []
    for line in out.stdout.splitlines():
        words = line.split()
        if "=>" in words and len(words) > words.index("=>") + 1 and words[words.index("=>") + 1].startswith("/"):
            found.append(words[words.index("=>") + 1])
        elif words and words[0].startswith("/"):
            found.append(words[0])
    return found


def write_archive(path: str, name: str, layer: Layer, entrypoint: Iterable[str] = (), cmd: Iterable[str] = (),
                  env: Iterable[str] = (PATH_ENV,)) -> str:
    """A docker-archive (what `docker save` writes) of one image: manifest.json, the config, the layer."""
    blob = layer.tar()
    diff_id = "sha256:" + hashlib.sha256(blob).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": list(entrypoint) or None, "Cmd": list(cmd) or None, "Env": list(env)},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff_id.split(":")[1] + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [name], "Layers": [layer_name]}]
    temporary = path + ".partial"
    with tarfile.open(temporary, "w") as tar:
        for member, data in (("manifest.json", json.dumps(manifest).encode()), (config_name, config_bytes), (layer_name, blob)):
            info = _info(member, tarfile.REGTYPE, 0o644)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    os.replace(temporary, path)
    return path


def pause_image(path: str) -> str:
    layer = Layer()
    layer.busybox()
    return write_archive(path, PAUSE_IMAGE, layer, entrypoint=["/bin/sh", "-c", PAUSE_SCRIPT])


def dind_image(path: str) -> str:
    layer = Layer()
    layer.busybox()
    for program in ("/usr/sbin/dockerd", "/usr/bin/containerd", "/usr/bin/containerd-shim-runc-v2", "/usr/sbin/runc",
                    "/usr/sbin/docker-proxy"):
        layer.binary(program)
    layer.directory("/var/lib/docker")
    layer.write("/usr/local/bin/dind-entrypoint", DIND_ENTRYPOINT, 0o755)
    return write_archive(path, DIND_IMAGE, layer, entrypoint=["/usr/local/bin/dind-entrypoint"])


def cli_image(path: str) -> str:
    layer = Layer()
    layer.busybox()
    layer.binary("/usr/bin/docker")
    return write_archive(path, CLI_IMAGE, layer, cmd=["sh"])


def job_image(path: str, payload_mb: int = 64, name: str = JOB_IMAGE) -> str:
    """What a CI job pulls: busybox, and `payload_mb` of incompressible data standing in for a
    toolchain's layers (so a cache hit saves real bytes)."""
    layer = Layer()
    layer.busybox()
    payload = path + ".payload"
    chunk = os.urandom(1 << 20)
    with open(payload, "wb") as handle:
        for _ in range(payload_mb):
            handle.write(chunk)
    layer.copy(payload, "/opt/toolchain/blob", 0o644)
    try:
        return write_archive(path, name, layer, cmd=["sh"])
    finally:
        os.unlink(payload)


BUILDERS = {"pause": pause_image, "dind": dind_image, "docker-cli": cli_image, "job": job_image}
# The tarballs kubelet's containerd imports, by their image names (the job's goes into pods' dockerds).
CONTAINERD_IMAGES = {"pause": PAUSE_IMAGE, "dind": DIND_IMAGE, "docker-cli": CLI_IMAGE}


def build_all(directory: str) -> Dict[str, str]:
    os.makedirs(directory, exist_ok=True)
    return {name: build(os.path.join(directory, f"{name}.tar")) for name, build in BUILDERS.items()}


if __name__ == "__main__":
    for name, path in build_all(sys.argv[1]).items():
        print(f"{name}: {path} ({os.path.getsize(path) >> 20} MiB)")
