"""A NodePublishVolumeRequest turned into the core's MountRequest, or a BadRequest.

The pod's `volumeAttributes` use the FlexVolume options' names (size_mb, fsType, ax_vol_type,
cache_scope), so a pod spec changes only its volume source; they are mapped onto the FlexVolume
names and checked by the same code (options.request_from_options). What kubelet adds itself
(with the CSIDriver's podInfoOnMount) is under csi.storage.k8s.io/ and merged over the pod's
attributes by kubelet, so a pod cannot forge its namespace there. Anything else is refused with
the list of what is known: a misspelt size would otherwise give a pod the default size, silently.
"""

from __future__ import annotations

import os
import re

from .. import options
from ..errors import BadRequest
from ..options import MountRequest, shown

ATTRIBUTES = ("size_mb", "fsType", "ax_vol_type", "cache_scope")
KUBELET_PREFIX = "csi.storage.k8s.io/"
POD_NAMESPACE = KUBELET_PREFIX + "pod.namespace"
EPHEMERAL = KUBELET_PREFIX + "ephemeral"

# kubelet's own name for a pod's volume dir (a DNS label: nothing to escape).
_VOLUME_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def target_of(raw: str, kubelet_dir: str) -> str:
    """The target path, normalised, if it is where kubelet puts a CSI volume of a pod:
    `<kubelet dir>/pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount`. The plugin makes and
    removes that last dir itself, as root: it must never be anywhere else."""
    path = options.parse_mount_dir(raw)
    root = os.path.normpath(kubelet_dir)
    parts = path[len(root):].split("/") if path.startswith(root + "/") else []
    if not (len(parts) == 7 and parts[0] == "" and parts[1] == "pods" and options.POD_UID.fullmatch(parts[2])
            and parts[3] == "volumes" and parts[4] == options.CSI_PLUGIN_DIR and _VOLUME_NAME.fullmatch(parts[5])
            and parts[6] == "mount"):
        raise BadRequest(
            f"target path {shown(path)} is not kubelet's dir for a pod's CSI volume "
            f"({root}/pods/<pod uid>/volumes/{options.CSI_PLUGIN_DIR}/<volume>/mount)"
        )
    return path


def mount_request(
    target_path: str,
    volume_context: dict,
    fs_type: str,
    read_only: bool,
    default_size_mb: int,
    default_cache_scope: str,
) -> MountRequest:
    """`target_path` from target_of; `fs_type` the capability's (the pod's csi.fsType, may be '')."""
    unknown = sorted(key for key in volume_context if key not in ATTRIBUTES and not key.startswith(KUBELET_PREFIX))
    if unknown:
        raise BadRequest(
            f"unknown volumeAttributes {', '.join(shown(key) for key in unknown[:5])}; "
            f"supported: {', '.join(ATTRIBUTES)}"
        )
    if volume_context.get(EPHEMERAL, "true") != "true":
        raise BadRequest("vol-plugin.ax serves only ephemeral inline volumes (a pod's csi: volume), not PersistentVolumes")
    attribute_fs = volume_context.get("fsType", "")
    if fs_type and attribute_fs and fs_type != attribute_fs:
        raise BadRequest(f"csi.fsType {shown(fs_type)} and volumeAttributes fsType {shown(attribute_fs)} differ")
    flex = {
        "kubernetes.io/fsType": fs_type or attribute_fs,
        "kubernetes.io/readwrite": "ro" if read_only else "rw",
        "kubernetes.io/pod.namespace": volume_context.get(POD_NAMESPACE, ""),
    }
    for name in ("size_mb", "ax_vol_type", "cache_scope"):
        if name in volume_context:
            flex[name] = volume_context[name]
    return options.request_from_options(target_path, flex, default_size_mb, default_cache_scope)
