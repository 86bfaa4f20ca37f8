"""A node as the real-kernel suite sees it: kubelet's side of the FlexVolume protocol, played
exactly as kubelet plays it, and read-only views of the pool (LVM tags, the mount table).

Nothing here imports the driver: the suite checks the driver from outside, through what kubelet
and an admin can see.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import json
import os
import shutil
import subprocess
import time
import uuid
from typing import Dict, Iterable, List, Optional

KUBELET_ROOT = "/var/lib/kubelet"
PLUGIN_DIR = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec"
DRIVER_DIR = f"{PLUGIN_DIR}/ax~vol_plugin"
DRIVER = f"{DRIVER_DIR}/vol_plugin"
VOLUME_GROUP = "vg-ax"
LOG_FILE = "/var/log/ax-vol-plugin.log"
# What systemd gives kubelet: a PATH, and no HOME.
KUBELET_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


class NotOneJSONObject(AssertionError):
    pass


@dataclasses.dataclass(frozen=True)
class Reply:
    status: str
    message: str
    rc: int
    raw: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == "Success"


@dataclasses.dataclass(frozen=True)
class Pod:
    uid: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    size_mb: int = 256
    fs_type: str = "ext4"
    volume_type: str = "ax-docker-graph-storage"
    volume: str = "docker-graph-storage"
    extra: tuple = ()

    @property
    def pod_dir(self) -> str:
        return f"{KUBELET_ROOT}/pods/{self.uid}"

    @property
    def dir(self) -> str:
        return f"{self.pod_dir}/volumes/ax~vol_plugin/{self.volume}"

    def options(self) -> str:
        # The keys kubelet itself sets, then the pod spec's options merged last.
        options = {
            "kubernetes.io/fsType": "" if self.fs_type == "ext4-default" else self.fs_type,
            "kubernetes.io/readwrite": "rw",
            "kubernetes.io/pvOrVolumeName": self.volume,
            "kubernetes.io/pod.name": f"ci-job-{self.uid[:8]}",
            "kubernetes.io/pod.namespace": "ci",
            "kubernetes.io/pod.uid": self.uid,
            "kubernetes.io/serviceAccount.name": "default",
            "size_mb": str(self.size_mb),
            "ax_vol_type": self.volume_type,
        }
        options.update(dict(self.extra))
        return json.dumps(options)


def parse_reply(raw: str, rc: int, seconds: float) -> Reply:
    """Kubelet json.Unmarshal()s stdout+stderr together: anything but one object is a failure."""
    try:
        answer = json.loads(raw)
    except ValueError as err:
        raise NotOneJSONObject(f"driver output is not one JSON object ({err}): {raw!r}") from None
    if not isinstance(answer, dict) or answer.get("status") not in ("Success", "Failure", "Not supported"):
        raise NotOneJSONObject(f"driver output is not a FlexVolume response: {raw!r}")
    if answer["status"] == "Success" and rc != 0:
        raise AssertionError(f"Success with exit code {rc}: kubelet treats that as a failure")
    return Reply(answer["status"], answer.get("message", ""), rc, raw, seconds)


class Kubelet:
    def __init__(self, env: Optional[Dict[str, str]] = None) -> None:
        self.env = dict(KUBELET_ENV, **(env or {}))
        self.calls: List[Reply] = []

    def start(self, *argv: str, env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
        """Start a call in its own process group (so a test can SIGKILL it and its children)."""
        return subprocess.Popen(
            [DRIVER, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(self.env, **(env or {})),
            cwd="/",
            start_new_session=True,
        )

    def call(self, *argv: str, env: Optional[Dict[str, str]] = None, timeout: float = 900) -> Reply:
        started = time.monotonic()
        proc = self.start(*argv, env=env)
        out, _ = proc.communicate(timeout=timeout)
        reply = parse_reply(out.decode(errors="replace"), proc.returncode, time.monotonic() - started)
        self.calls.append(reply)
        return reply

    def mount(self, pod: Pod, env: Optional[Dict[str, str]] = None) -> Reply:
        os.makedirs(pod.dir, mode=0o750, exist_ok=True)  # kubelet's MkdirAll
        if likely_mount_point(pod.dir):
            # Kubelet's SetUpAt mounts only once: on a dir that already is a mount point it
            # reports success without calling the driver (read in kubelet's source, seen under
            # the real one in tests/e2e). So a call killed after its mount(2) is never retried.
            return Reply("Success", "", 0, "", 0.0)
        reply = self.call("mount", pod.dir, pod.options(), env=env)
        if not reply.ok and not os.path.ismount(pod.dir):
            os.rmdir(pod.dir)  # kubelet removes the dir after a failed mount, then retries
        return reply

    def mount_retrying(self, pod: Pod, attempts: int = 4, pause_s: float = 0.5) -> Reply:
        """Kubelet's retry loop: the same call again until it succeeds."""
        for attempt in range(attempts):
            reply = self.mount(pod)
            if reply.ok:
                return reply
            time.sleep(pause_s * (attempt + 1))
        raise AssertionError(f"mount of {pod.dir} still failing after {attempts} attempts: {reply.message}")

    def unmount(self, pod: Pod, env: Optional[Dict[str, str]] = None) -> Reply:
        if not os.path.isdir(pod.dir):
            raise AssertionError("kubelet only calls unmount for a dir that exists")
        reply = self.call("unmount", pod.dir, env=env)
        if reply.ok:
            os.rmdir(pod.dir)  # must work: a dir left mounted or non-empty orphans the pod
        return reply

    def delete_pod(self, pod: Pod) -> None:
        """Kubelet's cleanup of a deleted pod's dir, once no volume is mounted in it."""
        assert not os.path.ismount(pod.dir), f"{pod.dir} still mounted"
        shutil.rmtree(pod.pod_dir, ignore_errors=True)


# ---- the pool, as LVM and the kernel see it --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SlabView:
    name: str
    size_bytes: int
    tags: Dict[str, str]

    @property
    def state(self) -> str:
        return self.tags.get("ax.state", "?")

    @property
    def dir(self) -> Optional[str]:
        encoded = self.tags.get("ax.dir")
        return base64.urlsafe_b64decode(encoded).decode() if encoded else None

    @property
    def device(self) -> str:
        return "/dev/mapper/{}-{}".format(VOLUME_GROUP.replace("-", "--"), self.name.replace("-", "--"))


def likely_mount_point(path: str) -> bool:
    """Kubelet's IsLikelyNotMountPoint, negated: the dir's device differs from its parent's."""
    return os.stat(path).st_dev != os.stat(os.path.dirname(path.rstrip("/"))).st_dev


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1"}
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, env=env)


def volume_group_exists() -> bool:
    report = json.loads(run("vgs", "--reportformat", "json", "-o", "vg_name").stdout)
    return any(row["vg_name"] == VOLUME_GROUP for row in report["report"][0]["vg"])


def slabs() -> Dict[str, SlabView]:
    # One LVM process when the volume group exists (each costs ~0.3 s under emulation, and the
    # suites read the pool after nearly every call); a second only to tell a missing one.
    listed = run("lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "lv_name,lv_size,lv_tags",
                 VOLUME_GROUP, check=False)
    if listed.returncode != 0:
        if not volume_group_exists():
            return {}
        raise subprocess.CalledProcessError(listed.returncode, listed.args, listed.stdout, listed.stderr)
    out = listed.stdout
    views = {}
    for row in json.loads(out)["report"][0]["lv"]:
        tags = {}
        for tag in filter(None, row["lv_tags"].split(",")):
            key, _, value = tag.partition("=")
            tags[key] = value
        if "ax.thinpool" in tags:
            continue  # thin mode: the pool the slabs live in (thin_pool_figures), not a slab
        views[row["lv_name"]] = SlabView(row["lv_name"], int(row["lv_size"]), tags)
    return views


def thin_pool_figures() -> Dict[str, float]:
    """Thin mode: the thin pool's size and use, as LVM reports them."""
    out = run("lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o",
              "lv_name,lv_size,lv_tags,data_percent,metadata_percent,lv_when_full", VOLUME_GROUP).stdout
    (row,) = [r for r in json.loads(out)["report"][0]["lv"] if "ax.thinpool" in r["lv_tags"].split(",")]
    size = int(row["lv_size"])
    return {
        "size_bytes": size,
        "data_used_bytes": size * float(row["data_percent"]) / 100,
        "metadata_percent": float(row["metadata_percent"]),
        "error_when_full": row["lv_when_full"] == "error",
    }


def filesystem_uuid(device: str) -> str:
    return run("blkid", "-p", "-s", "UUID", "-o", "value", device).stdout.strip()


def volume_group_free_bytes() -> int:
    out = run("vgs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "vg_free,vg_size", VOLUME_GROUP).stdout
    return int(json.loads(out)["report"][0]["vg"][0]["vg_free"])


def mounts() -> List[tuple]:
    """(mount point, source, fs type) for every mount, in mount-table order."""
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            sep = fields.index("-")
            found.append((fields[4].replace("\\040", " "), fields[sep + 2], fields[sep + 1]))
    return found


def slab_mounts() -> Dict[str, str]:
    """mount point -> slab name, for every mounted slab."""
    prefix = "/dev/mapper/{}-".format(VOLUME_GROUP.replace("-", "--"))
    return {point: source[len(prefix):].replace("--", "-") for point, source, _ in mounts() if source.startswith(prefix)}


def slab_at(pod: Pod) -> Optional[str]:
    return slab_mounts().get(pod.dir)


def in_use(slab: SlabView, mounted: Dict[str, str]) -> bool:
    """Used; or claimed and mounted on the dir it was claimed for: the call that mounted it died
    before its last tag, and kubelet does not call mount again on a mount point, so the claim
    stands until the pod's unmount (which measures and releases it as any other)."""
    return slab.state == "used" or (slab.state == "claimed" and mounted.get(slab.dir) == slab.name)


def check_pool(running: Iterable[Pod] = ()) -> Dict[str, SlabView]:
    """The invariant every scenario ends with: each slab is free (and unmounted), or in use and
    mounted on exactly its own dir (`in_use`); no slab is mounted twice; every running pod has
    its slab."""
    pool = slabs()
    mounted = slab_mounts()
    times = collections.Counter(mounted.values())
    doubled = [name for name, count in times.items() if count > 1]
    assert not doubled, f"slabs mounted more than once: {doubled}"
    for slab in pool.values():
        assert "ax.slab" in slab.tags, f"{slab.name} is in the volume group but is not a slab"
        used = in_use(slab, mounted)
        assert used or slab.state == "free", f"{slab.name} leaked in state {slab.state!r}"
        if used:
            assert mounted.get(slab.dir) == slab.name, f"{slab.name} is in use by {slab.dir} but not mounted there"
        else:
            assert slab.name not in times, f"free slab {slab.name} is mounted"
    for point, name in mounted.items():
        assert name in pool and pool[name].dir == point, f"{name} mounted on {point}, which it is not recorded for"
    for pod in running:
        name = mounted.get(pod.dir)
        assert name is not None, f"running pod {pod.uid} lost its slab"
    return pool


def write_marker(pod: Pod, text: str) -> None:
    with open(os.path.join(pod.dir, "marker"), "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def read_marker(pod: Pod) -> Optional[str]:
    try:
        with open(os.path.join(pod.dir, "marker")) as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def fill(pod: Pod, fraction: float) -> None:
    """Write real data until the slab's filesystem is about `fraction` full (as df counts)."""
    vfs = os.statvfs(pod.dir)
    total = (vfs.f_blocks - vfs.f_bfree + vfs.f_bavail) * vfs.f_frsize
    used = (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize
    want = int(total * fraction) - used
    chunk = os.urandom(1 << 20)
    with open(os.path.join(pod.dir, "ballast"), "wb") as handle:
        while want > 0:
            handle.write(chunk[: min(len(chunk), want)])
            want -= len(chunk)
        handle.flush()
        os.fsync(handle.fileno())


def log_lines() -> List[dict]:
    try:
        with open(LOG_FILE) as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


# ---- a whole node, for the demo and the bench ------------------------------------------------

SCRATCH_DISK, NODE_DISK = "/dev/vda", "/dev/vdb"


def set_up_blank_node(manifest: dict, purpose: str, driver: str = "") -> str:
    """The admin's steps on a fresh node in the VM: kubelet's dir on its own disk, the config
    naming the slab disk, the driver installed as the docs say. Refuses unless both disks are the
    blank images the host made for this run (by exact size). `driver`: another build than
    dist/vol_plugin (an earlier revision's, for before/after figures). Returns what the installer said."""
    import sys

    for device in (SCRATCH_DISK, NODE_DISK):
        with open(f"/sys/block/{os.path.basename(device)}/size") as handle:
            if int(handle.read()) * 512 != manifest["disks"][device]["bytes"]:
                sys.exit(f"refusing: {device} is not the {purpose}'s blank disk")
    run("mkfs.ext4", "-q", NODE_DISK)
    os.makedirs(KUBELET_ROOT, exist_ok=True)
    run("mount", NODE_DISK, KUBELET_ROOT)
    os.makedirs("/etc/ax-vol-plugin", exist_ok=True)
    with open("/etc/ax-vol-plugin/vol_plugin.conf", "w") as handle:
        handle.write(f"[vol_plugin]\ndevice = {SCRATCH_DISK}\n")
    repo = os.getcwd()
    driver = driver or f"{repo}/dist/vol_plugin"
    return run(f"{repo}/install/install.sh", "--plugin-dir", PLUGIN_DIR, "--driver", driver).stdout.strip()
