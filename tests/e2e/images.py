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
import importlib.metadata
import io
import json
import os
import py_compile
import re
import subprocess
import sys
import tarfile
import tempfile
from typing import Dict, Iterable, List, Optional, Tuple

BUSYBOX = "/bin/busybox"
REGISTRY = "ax-e2e.local"  # a name no registry answers: a missing image can only fail, never be pulled
PAUSE_IMAGE = f"{REGISTRY}/pause:1"
DIND_IMAGE = f"{REGISTRY}/dind:1"
CLI_IMAGE = f"{REGISTRY}/docker-cli:1"
CSI_PLUGIN_IMAGE = f"{REGISTRY}/vol-plugin-csi:1"
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

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout

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


# ---- the CSI node plugin's image ------------------------------------------------------------
# What packaging/Containerfile.csi builds from a registry's python:3.11-slim-bookworm, made here
# from this Debian 12 machine's own files: its Python 3.11 and stdlib, the tools the driver runs
# (LVM with thin-provisioning-tools, e2fsprogs, xfsprogs, util-linux) with their libraries, the
# grpcio and protobuf the tests run with, the generated CSI modules, the driver's package, and
# LVM configured as the Containerfile configures it (packaging/lvmlocal-csi.conf).
PLUGIN_PYTHON = "/usr/bin/python3.11"
PLUGIN_STDLIB = "/usr/lib/python3.11"
# __pycache__ too: Debian's bytecode is checked against the sources' times, which the layer fixes
# (_add_bytecode puts in bytecode that is not).
STDLIB_LEFT_OUT = ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "unittest",
                   "__pycache__")
PLUGIN_SITE = "/usr/local/lib/python3.11/dist-packages"  # on Debian's python's own sys.path
PLUGIN_HOME = "/opt/ax-vol-plugin"
PLUGIN_PROGRAMS = (
    "/usr/sbin/lvm", "/usr/sbin/lvs", "/usr/sbin/vgs", "/usr/sbin/pvs", "/usr/sbin/vgcreate", "/usr/sbin/lvcreate",
    "/usr/sbin/lvchange", "/usr/sbin/lvremove", "/usr/sbin/dmsetup",
    "/usr/sbin/thin_check", "/usr/sbin/thin_repair", "/usr/sbin/thin_dump", "/usr/sbin/thin_restore",
    "/usr/sbin/mke2fs", "/usr/sbin/mkfs.ext4", "/usr/sbin/e2fsck", "/usr/sbin/tune2fs",
    "/usr/sbin/mkfs.xfs", "/usr/sbin/xfs_admin", "/usr/sbin/xfs_db", "/usr/sbin/xfs_repair",
    "/usr/bin/mount", "/usr/bin/umount", "/usr/sbin/blkid", "/usr/bin/setpriv", "/usr/sbin/fstrim",
    "/usr/bin/sync", "/usr/sbin/modprobe", "/usr/bin/dash", "/usr/bin/expr",
)
PLUGIN_FILES = ("/etc/lvm/lvm.conf", "/etc/mke2fs.conf")
# Debian 12 has merged /usr: what its programs and ldd name under /bin, /sbin, /lib, /lib64 is here.
MERGED = {"/bin": "usr/bin", "/sbin": "usr/sbin", "/lib": "usr/lib", "/lib64": "usr/lib64"}


def _canonical(path: str) -> str:
    """`path` with its dir resolved (/lib/x/libc.so.6 is /usr/lib/x/libc.so.6), its name kept."""
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def _is_elf(path: str) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"\x7fELF"


def _add_program(layer: Layer, path: str) -> None:
    """A program at its canonical path: a link as a link (and what it names), a file with the
    libraries it loads."""
    where = _canonical(path)
    if os.path.islink(path):
        target = os.readlink(path)
        layer.link(where, target)
        _add_program(layer, os.path.join(os.path.dirname(where), target) if not target.startswith("/") else target)
        return
    layer.copy(path, where)
    if _is_elf(path):
        _add_libraries(layer, path)


def _add_libraries(layer: Layer, path: str) -> None:
    for library in shared_libraries(path):
        layer.copy(library, _canonical(library), 0o755)


def _add_tree(layer: Layer, source: str, target: str, left_out: Iterable[str] = ()) -> None:
    """A dir's files (links kept) but the subdirs named in `left_out`, at any depth, with the
    libraries its shared objects load."""
    left_out = set(left_out)
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in left_out)
        for name in sorted(names):
            host_path = os.path.join(root, name)
            path = os.path.join(target, os.path.relpath(host_path, source))
            if os.path.islink(host_path):
                layer.link(path, os.readlink(host_path))
                continue
            layer.copy(host_path, path, os.stat(host_path).st_mode & 0o755 | 0o644)
            if name.endswith(".so") or ".so." in name:
                _add_libraries(layer, host_path)


# The plugin's runtime distributions (requirements-csi.txt less grpcio-tools, a build tool), and
# with them whatever they require unconditionally, as installed here.
PLUGIN_DISTRIBUTIONS = ("grpcio", "protobuf")


def _add_distributions(layer: Layer, names: Iterable[str], target: str) -> None:
    seen, todo = set(), list(names)
    while todo:
        name = re.sub(r"[-_.]+", "_", todo.pop()).lower()
        if name in seen:
            continue
        seen.add(name)
        distribution = importlib.metadata.distribution(name)
        for requirement in distribution.requires or ():
            if ";" not in requirement:  # extras and markers: not what the plugin runs
                todo.append(re.match(r"[A-Za-z0-9_.-]+", requirement).group(0))
        for file in distribution.files:
            host_path = str(distribution.locate_file(file))
            if "__pycache__" in file.parts or file.parts[0].endswith(".dist-info") and file.name == "RECORD":
                continue
            if os.path.isfile(host_path):
                layer.copy(host_path, os.path.join(target, *file.parts), 0o755 if os.access(host_path, os.X_OK) else 0o644)
                if file.name.endswith(".so"):
                    _add_libraries(layer, host_path)


def _add_bytecode(layer: Layer, cache_tag: str) -> None:
    """Bytecode for every Python source in the layer, not checked against the source (an image's
    files never change, and the layer's times are fixed). Without it every process in the
    container compiled the stdlib, grpc and the plugin from source: in the guest the plugin took
    a minute to start, and its exec probe ran past 20 s."""
    if sys.implementation.cache_tag != cache_tag:
        raise SystemExit(f"the image's python is {cache_tag}, this one {sys.implementation.cache_tag}: "
                         "its bytecode would be refused")
    sources = [(path, value[0]) for path, (kind, value) in layer.files.items() if kind == "file" and path.endswith(".py")]
    with tempfile.TemporaryDirectory() as scratch:
        compiled = os.path.join(scratch, "out.pyc")
        for path, host_path in sources:
            py_compile.compile(host_path, cfile=compiled, dfile=path, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
            with open(compiled, "rb") as handle:
                name = os.path.basename(path)[: -len(".py")]
                layer.files[os.path.join(os.path.dirname(path), "__pycache__", f"{name}.{cache_tag}.pyc")] = (
                    "data", (handle.read(), 0o644))


def csi_plugin_image(path: str) -> str:
    from flexdriver.csi import API_PACKAGE, default_api_dir

    layer = Layer()
    for link, target in MERGED.items():
        layer.link(link, target)
    for directory in ("/tmp", "/run", "/run/lock", "/var", "/var/log", "/etc", "/proc", "/sys", "/dev", "/root"):
        layer.directory(directory, 0o1777 if directory == "/tmp" else 0o755)
    layer.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    layer.write("/etc/group", "root:x:0:\n")
    layer.link("/bin/sh", "dash")
    layer.link("/usr/bin/python3", "python3.11")
    _add_program(layer, PLUGIN_PYTHON)
    _add_tree(layer, PLUGIN_STDLIB, PLUGIN_STDLIB, STDLIB_LEFT_OUT)
    for program in PLUGIN_PROGRAMS:
        _add_program(layer, program)
    for name in PLUGIN_FILES:
        layer.copy(name, name, 0o644)
    layer.copy(os.path.join(REPO, "packaging", "lvmlocal-csi.conf"), "/etc/lvm/lvmlocal.conf", 0o644)
    _add_distributions(layer, PLUGIN_DISTRIBUTIONS, PLUGIN_SITE)
    _add_tree(layer, os.path.join(default_api_dir(), API_PACKAGE), os.path.join(PLUGIN_SITE, API_PACKAGE), ("__pycache__",))
    _add_tree(layer, os.path.join(REPO, "flexdriver"), os.path.join(PLUGIN_HOME, "flexdriver"), ("__pycache__",))
    _add_bytecode(layer, "cpython-" + os.path.basename(PLUGIN_PYTHON).removeprefix("python").replace(".", ""))
    env = (PATH_ENV, f"PYTHONPATH={PLUGIN_HOME}", "PYTHONDONTWRITEBYTECODE=1")
    return write_archive(path, CSI_PLUGIN_IMAGE, layer, entrypoint=["/usr/bin/python3", "-m", "flexdriver.csi"], env=env)


BUILDERS = {"pause": pause_image, "dind": dind_image, "docker-cli": cli_image, "job": job_image,
            "csi-plugin": csi_plugin_image}
# The tarballs kubelet's containerd imports, by their image names (the job's goes into pods' dockerds).
CONTAINERD_IMAGES = {"pause": PAUSE_IMAGE, "dind": DIND_IMAGE, "docker-cli": CLI_IMAGE, "csi-plugin": CSI_PLUGIN_IMAGE}


def build_all(directory: str) -> Dict[str, str]:
    os.makedirs(directory, exist_ok=True)
    return {name: build(os.path.join(directory, f"{name}.tar")) for name, build in BUILDERS.items()}


if __name__ == "__main__":
    for name, path in build_all(sys.argv[1]).items():
        print(f"{name}: {path} ({os.path.getsize(path) >> 20} MiB)")
