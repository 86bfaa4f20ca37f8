"""A CI pod's dind sidecar, for real: dockerd with its data root on the pod's slab.

No registry is reachable, so images are built offline: a tarball of a tiny root filesystem
(static busybox plus a payload that stands in for a toolchain's layers), `docker import`ed. The
import plays the part of the pull a cold CI pod would do.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tarfile
import time
from typing import List

DOCKERD = "/usr/sbin/dockerd"
CONTAINERD = "/usr/bin/containerd"
DOCKER = "/usr/bin/docker"  # the client that matches Debian's dockerd
BUSYBOX = "/bin/busybox"
IMAGE = "ci/toolchain:1"
DAEMON_LOG = "/tmp/dind-{name}.log"  # one per pod's daemons (containerd and dockerd)


def build_image_tarball(path: str, payload_mb: int = 64) -> str:
    """A root filesystem tarball: busybox as /bin/sh and friends, and `payload_mb` of data."""
    root = path + ".d"
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(f"{root}/bin")
    os.makedirs(f"{root}/opt/toolchain")
    shutil.copy(BUSYBOX, f"{root}/bin/busybox")
    for applet in ("sh", "cat", "echo", "ls", "du", "sleep"):
        os.symlink("busybox", f"{root}/bin/{applet}")
    chunk = os.urandom(1 << 20)
    with open(f"{root}/opt/toolchain/blob", "wb") as handle:
        for _ in range(payload_mb):
            handle.write(chunk)
    with tarfile.open(path, "w") as tar:
        tar.add(root, arcname=".")
    shutil.rmtree(root)
    return path


class InnerDocker:
    """One pod's dockerd, with every path of its own so several run side by side."""

    def __init__(self, data_root: str, name: str) -> None:
        self.data_root = data_root
        self.name = name
        self.socket = f"/tmp/dind-{name}.sock"
        self.exec_root = f"/tmp/dind-{name}-exec"
        self.log = DAEMON_LOG.format(name=name)
        self.containerd_socket = f"/tmp/dind-{name}-containerd.sock"
        self.containerd = None
        self.proc = None

    def start(self, timeout_s: float = 240) -> float:
        """Start containerd, then dockerd on it; returns the seconds until the API answered.

        containerd is started here rather than by dockerd because dockerd gives its own child a
        fixed minute to come up, which a loaded emulated machine can exceed; here the wait is ours.
        It keeps its root on the slab, where dockerd would have put it."""
        started = time.monotonic()
        config = f"{self.exec_root}-containerd.toml"
        with open(config, "w") as handle:
            handle.write(
                "version = 2\n"
                f'root = "{self.data_root}/containerd/daemon"\n'
                f'state = "{self.exec_root}/containerd/daemon"\n'
                'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                f'[grpc]\n  address = "{self.containerd_socket}"\n'
            )
        try:
            self.containerd = self._spawn([CONTAINERD, "--config", config])
            self._wait(self.containerd, "containerd", lambda: os.path.exists(self.containerd_socket), started, timeout_s)
            self.proc = self._spawn(
                [
                    DOCKERD, "--data-root", self.data_root, "--exec-root", self.exec_root,
                    "--pidfile", f"{self.exec_root}.pid", "--host", f"unix://{self.socket}",
                    "--containerd", self.containerd_socket,
                    "--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver=overlay2",
                ]
            )
            self._wait(self.proc, "dockerd", lambda: self.docker("version", check=False).returncode == 0, started, timeout_s)
        except BaseException:
            self.stop()  # a daemon left running would keep the slab busy for the tests after this one
            raise
        return time.monotonic() - started

    def _spawn(self, argv: List[str]) -> subprocess.Popen:
        with open(self.log, "ab") as log:
            return subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def _wait(self, proc: subprocess.Popen, what: str, ready, started: float, timeout_s: float) -> None:
        while time.monotonic() - started < timeout_s:
            if proc.poll() is not None:
                raise AssertionError(f"{what} for {self.name} exited: {self.tail()}")
            if ready():
                return
            time.sleep(0.5)
        raise AssertionError(f"{what} for {self.name} not ready after {timeout_s} s: {self.tail()}")

    def docker(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        out = subprocess.run(
            [DOCKER, "-H", f"unix://{self.socket}", *args], capture_output=True, text=True, timeout=timeout
        )
        if check and out.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {out.stderr.strip()}")
        return out

    def images(self) -> List[str]:
        return self.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()

    def info(self, field: str) -> str:
        return self.docker("info", "--format", "{{." + field + "}}").stdout.strip()

    def run(self, *command: str) -> str:
        return self.docker("run", "--rm", "--network", "none", IMAGE, *command).stdout

    def stop(self, timeout_s: float = 120) -> None:
        """What happens when the pod ends: the sidecar's daemons are stopped before kubelet unmounts."""
        for proc in (self.proc, self.containerd):  # dockerd first: it still talks to containerd
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        # Leftover shims of stopped containers would keep the slab busy.
        subprocess.run(["umount", "-R", self.exec_root], capture_output=True)

    def tail(self) -> str:
        try:
            with open(self.log) as handle:
                return handle.read()[-1500:]
        except OSError:
            return ""


@dataclasses.dataclass(frozen=True)
class JobResult:
    name: str
    slab: str
    cache_hit: bool
    seconds_to_container: float  # from kubelet's mount call to the container's first output
    mount_s: float
    unmount_s: float
    kept: bool  # the unmount put the slab back in the pool (else it deleted it), as the driver said


def run_ci_job(kubelet, pod, tarball: str, name: str, fill_to: float = None) -> JobResult:
    """One DinD CI job as a pod lives it: kubelet mounts the slab, the sidecar's dockerd starts
    on it, the job makes sure its image is there (importing it on a cold slab, as a pull would)
    and runs a container; dockerd stops, kubelet unmounts."""
    from . import node

    started = time.monotonic()
    mounted = kubelet.mount(pod)
    assert mounted.ok, mounted.message
    slab = node.slab_at(pod)
    daemon = InnerDocker(pod.dir, name)
    daemon.start()
    try:
        hit = IMAGE in daemon.images()
        if not hit:
            daemon.docker("import", tarball, IMAGE)
        assert daemon.run("echo", name).strip() == name
        to_container = time.monotonic() - started
    finally:
        daemon.stop()
    if fill_to is not None:
        node.fill(pod, fill_to)  # a build that left big layers behind
    unmounted = kubelet.unmount(pod)
    assert unmounted.ok, unmounted.message
    # From the driver's answer: in thin mode a kept slab may be deleted a moment later as the
    # surplus of another pod's unmount, so the pool afterwards does not tell.
    kept = "kept for the next pod" in unmounted.message
    return JobResult(name, slab, hit, to_container, mounted.seconds, unmounted.seconds, kept)
