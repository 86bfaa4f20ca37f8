"""Steps the scenarios share: start a pod and wait for its daemon, load the job's image into it
the way a pull would, wait for the build's output, delete the pod and wait for kubelet's cleanup."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Optional

from tests.realkernel import node as pool

from .cluster import Node, pod_dir, wait_for


@dataclasses.dataclass
class RunningPod:
    name: str
    uid: str
    started_at: datetime.datetime  # kubelet's status.startTime: when kubelet began the pod


def _time(text: str) -> datetime.datetime:
    # RFC 3339 from kubelet (seconds) and from the CRI log (nanoseconds): microseconds are plenty.
    text = text.rstrip("Z")
    if "." in text:
        whole, fraction = text.split(".", 1)
        text = f"{whole}.{fraction[:6]}"
    return datetime.datetime.fromisoformat(text)


def start(node: Node, pod: Optional[dict], daemon: bool = True, timeout_s: float = 900, existing: str = "") -> RunningPod:
    """Hand kubelet the pod (or take the one named `existing`, already handed); wait until its
    dind container runs and (with `daemon`) answers."""
    name = existing or node.create(pod)
    uid = node.uid(name)
    running = node.wait_running(name, ("dind",), timeout_s)
    started = RunningPod(name, uid, _time(running["status"]["startTime"]))
    if daemon:
        wait_for(f"the dockerd of {name}", lambda: node.pod_docker(uid, "version", check=False).returncode == 0,
                 timeout_s, every_s=2, detail=lambda: node.container_log(uid, name, "dind")[-3000:])
    return started


def slab_of(pod: RunningPod) -> str:
    """The one slab mounted in the pod's volume dirs: its FlexVolume dir (volume_dir), or its CSI
    volume's target dir (csi_target_dir)."""
    mounted = pool.slab_mounts()
    prefix = pod_dir(pod.uid) + "/volumes/"
    found = sorted({slab for where, slab in mounted.items() if where.startswith(prefix)})
    assert len(found) == 1, f"not one slab mounted under {prefix}: {found}; mounts: {mounted}"
    return found[0]


def mark(pod: RunningPod, where: str) -> None:
    """Leave the pod's uid in its volume (mounted on `where`), for `unchanged` to find."""
    with open(os.path.join(where, "marker"), "w") as handle:
        handle.write(pod.uid)


def unchanged(node: Node, pod: RunningPod, slab: str, where: str) -> None:
    """The pod runs as before: same uid, same slab, its data (`mark`) and its dockerd."""
    node.wait_running(pod.name, ("dind",))
    assert node.uid(pod.name) == pod.uid
    assert slab_of(pod) == slab
    with open(os.path.join(where, "marker")) as handle:
        assert handle.read() == pod.uid
    assert node.pod_docker(pod.uid, "version", check=False).returncode == 0, f"the dockerd of {pod.name} did not survive"


def load_job_image(node: Node, pod: RunningPod) -> None:
    tarball = json.loads(os.environ["AX_E2E_IMAGES"])["job"]
    node.pod_docker(pod.uid, "load", "-i", tarball, timeout=900)


def hello_at(node: Node, pod: RunningPod, container: str = "build") -> Optional[datetime.datetime]:
    """When the build container first printed its `hello` (the CRI log's own timestamp)."""
    for line in node.container_log(pod.uid, pod.name, container).splitlines():
        stamp, _, rest = line.partition(" ")
        if rest.split(" ", 2)[-1] == "hello":
            return _time(stamp)
    return None


def wait_for_hello(node: Node, pod: RunningPod, timeout_s: float = 900) -> datetime.datetime:
    return wait_for(f"the build container of {pod.name} to print hello", lambda: hello_at(node, pod), timeout_s, every_s=2,
                    detail=lambda: node.describe(pod.name) + node.container_log(pod.uid, pod.name, "build")[-2000:])


def first_hello_s(node: Node, pod: RunningPod) -> float:
    return (hello_at(node, pod) - pod.started_at).total_seconds()


def delete_and_wait(node: Node, pod: RunningPod, timeout_s: float = 600) -> None:
    node.delete(pod.name)
    node.wait_gone(pod.name, pod.uid, timeout_s)


def driver_calls() -> list:
    """Every call kubelet made of the driver, as the driver's log recorded it (verb, dir, outcome)."""
    return pool.log_lines()


FIGURES = "figures.json"  # in the results dir: the host suite prints them, docs/e2e.md quotes them


def record_figure(node: Node, name: str, value) -> None:
    path = os.path.join(node.results, FIGURES)
    try:
        with open(path) as handle:
            figures = json.load(handle)
    except (OSError, ValueError):
        figures = {}
    figures[name] = value
    with open(path, "w") as handle:
        json.dump(figures, handle, indent=1, sort_keys=True)
