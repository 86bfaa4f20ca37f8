"""Kubelet's mount arguments turned into a validated MountRequest, or a BadRequest.

Every value here comes from a pod spec (kubelet merges the spec's options last, so a pod author
controls all of them): nothing is trusted, and nothing reaches a command line unchecked.
"""

from __future__ import annotations

import json
import os
import re

from .errors import BadRequest
from .record import record

GRAPH = "ax-docker-graph-storage"
ANONYMOUS = "ax-anonymous"
VOLUME_TYPES = (GRAPH, ANONYMOUS)
FS_TYPES = ("ext4", "xfs")
# mkfs.xfs (xfsprogs 5.19 and later) refuses filesystems under 300 MB; refused here, with a
# message that says so, on every node alike, rather than by mkfs after an lvcreate.
MIN_SIZE_MB = {"xfs": 300}

# 1 PiB: larger than any disk this runs on, small enough that arithmetic on it never
# surprises; the real limit (the volume group's size) is checked later.
MAX_SIZE_MB = 1 << 30
_SIZE = re.compile(r"[1-9][0-9]{0,9}")
POD_UID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
MAX_DIR_BYTES = 700  # base64 of the dir's UTF-8 bytes must fit in a 1024-character LVM tag

# cache_scope: which earlier pods' slabs a pod may inherit. `node`: any pod's on this node;
# `namespace`: only pods of the same namespace; any other name: only pods that give that name.
SCOPE_NODE = "node"
SCOPE_NAMESPACE = "namespace"
_SCOPE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_NAMESPACE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


@record
class MountRequest:
    mount_dir: str
    volume_type: str
    size_mb: int
    fs_type: str
    read_only: bool
    pod_uid: str
    cache_scope: str = SCOPE_NODE  # resolved: "node", "ns.<namespace>" or "key.<name>"



SHOWN_CHARS = 80


def shown(value: str) -> str:
    """A pod-supplied value as an error message quotes it: at most SHOWN_CHARS of it, so that a
    pod cannot fill kubelet's events and the call log with a value of its own choosing."""
    if len(value) <= SHOWN_CHARS:
        return repr(value)
    return f"{value[:SHOWN_CHARS]!r}... ({len(value)} characters)"


def parse_mount_dir(raw: str) -> str:
    if not raw or "\0" in raw or "\n" in raw:
        raise BadRequest("mount dir must be a non-empty path")
    if not raw.startswith("/"):
        raise BadRequest(f"mount dir must be an absolute path, got {shown(raw)}")
    # normpath keeps POSIX's two leading slashes ("//x"); one is what the mount table shows.
    path = "/" + os.path.normpath(raw).lstrip("/")
    if path == "/":
        raise BadRequest("mount dir must not be /")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadRequest("mount dir must be valid UTF-8") from None
    if size > MAX_DIR_BYTES:
        raise BadRequest(f"mount dir is longer than {MAX_DIR_BYTES} bytes")
    return path


def parse_mount(
    mount_dir: str, options_json: str, default_size_mb: int, default_cache_scope: str = SCOPE_NODE
) -> MountRequest:
    path = parse_mount_dir(mount_dir)
    try:
        options = json.loads(options_json)
    except (ValueError, RecursionError) as err:
        raise BadRequest(f"mount options are not valid JSON: {err}") from err
    if not isinstance(options, dict):
        raise BadRequest(f"mount options must be a JSON object, got {type(options).__name__}")
    for key, value in options.items():
        if not isinstance(value, str):
            raise BadRequest(f"mount option {shown(key)} must be a string, got {shown(json.dumps(value))}")
    return request_from_options(path, options, default_size_mb, default_cache_scope)


def request_from_options(
    path: str, options: dict, default_size_mb: int, default_cache_scope: str = SCOPE_NODE
) -> MountRequest:
    """The request for mount dir `path` (already through parse_mount_dir) from string options under
    the FlexVolume names; the CSI front-end maps its volume attributes onto the same names."""
    volume_type = options.get("ax_vol_type", "") or GRAPH
    if volume_type not in VOLUME_TYPES:
        raise BadRequest(f"unknown ax_vol_type {shown(volume_type)}; supported: {', '.join(VOLUME_TYPES)}")

    fs_type = options.get("kubernetes.io/fsType", "") or "ext4"
    if fs_type not in FS_TYPES:
        raise BadRequest(f"unsupported fsType {shown(fs_type)}; supported: {', '.join(FS_TYPES)} ('' means ext4)")

    raw_size = options.get("size_mb")
    size_mb = default_size_mb if raw_size is None else parse_size_mb(raw_size)
    if size_mb < MIN_SIZE_MB.get(fs_type, 1):
        raise BadRequest(f"size_mb must be at least {MIN_SIZE_MB[fs_type]} for {fs_type} "
                         f"(mkfs.{fs_type} refuses smaller), got {size_mb}")

    access = options.get("kubernetes.io/readwrite", "rw") or "rw"
    if access not in ("rw", "ro"):
        raise BadRequest(f"kubernetes.io/readwrite must be 'rw' or 'ro', got {shown(access)}")

    raw_scope = options.get("cache_scope", "") or default_cache_scope
    try:
        scope_name = parse_cache_scope_name(raw_scope)
    except ValueError as err:
        raise BadRequest(f"cache_scope: {err}") from None

    return MountRequest(
        mount_dir=path,
        volume_type=volume_type,
        size_mb=size_mb,
        fs_type=fs_type,
        read_only=access == "ro",
        pod_uid=pod_uid_of(path, options.get("kubernetes.io/pod.uid")) or "",
        cache_scope=resolve_cache_scope(scope_name, options.get("kubernetes.io/pod.namespace", "")),
    )


def parse_cache_scope_name(raw: str) -> str:
    """`node`, `namespace` or an explicit key (letters, digits, '_', '.', '-'; up to 63)."""
    if raw in (SCOPE_NODE, SCOPE_NAMESPACE) or _SCOPE_KEY.fullmatch(raw):
        return raw
    raise ValueError(
        f"must be 'node', 'namespace' or a key of up to 63 letters, digits, '_', '.', '-', got {shown(raw)}"
    )


def resolve_cache_scope(name: str, namespace: str) -> str:
    """The value stored in a slab's ax.scope tag: slabs are handed on only within one value."""
    if name == SCOPE_NODE:
        return SCOPE_NODE
    if name == SCOPE_NAMESPACE:
        if not _NAMESPACE.fullmatch(namespace or ""):
            raise BadRequest(
                f"cache_scope 'namespace' needs kubernetes.io/pod.namespace to be a namespace name, got {shown(namespace)}"
            )
        return f"ns.{namespace}"
    return f"key.{name}"


def parse_size_mb(raw: str) -> int:
    if not _SIZE.fullmatch(raw) or int(raw) > MAX_SIZE_MB:
        raise BadRequest(f"size_mb must be a positive whole number of MiB (1..{MAX_SIZE_MB}), got {shown(raw)}")
    return int(raw)


CSI_PLUGIN_DIR = "kubernetes.io~csi"


def pod_dir_of(mount_dir: str) -> str | None:
    """`<root>/pods/<uid>` for kubelet's layouts: `<root>/pods/<uid>/volumes/<plugin>/<volume>` for
    a FlexVolume, `<root>/pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount` for a CSI volume."""
    parts = mount_dir.split("/")
    if len(parts) >= 7 and parts[-1] == "mount" and parts[-3] == CSI_PLUGIN_DIR and parts[-4] == "volumes" \
            and parts[-6] == "pods":
        return "/".join(parts[:-4])
    if len(parts) >= 6 and parts[-3] == "volumes" and parts[-5] == "pods":
        return "/".join(parts[:-3])
    return None


def pod_uid_of(mount_dir: str, claimed: str | None = None) -> str | None:
    """The pod uid, from kubelet's own path when it has the usual layout (a pod cannot fake that),
    else from the option a pod may set; None when neither is a plausible uid."""
    pod_dir = pod_dir_of(mount_dir)
    candidate = os.path.basename(pod_dir) if pod_dir else claimed
    if candidate and POD_UID.fullmatch(candidate):
        return candidate
    return None
