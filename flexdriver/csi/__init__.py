"""The CSI front-end: a resident node plugin serving ephemeral inline volumes from the same pool.

Kubelet calls NodePublishVolume when a pod with a `csi:` inline volume starts and
NodeUnpublishVolume when it ends; each becomes one call of the core (flexdriver.core), exactly as
a FlexVolume mount or unmount does, under the same node lock, tags, usage rule and call log.

  api.py       the CSI and plugin-registration messages, generated at build time from the
               spec's own .proto files (packaging/csi-api), loaded from outside the tree
  request.py   a NodePublishVolumeRequest turned into the core's MountRequest, or a BadRequest
  service.py   the Identity, Node and Registration services over the core
  server.py    the process: its two sockets, registration with kubelet, the periodic release of
               volumes kubelet no longer has

Nothing here is imported by the FlexVolume executable: kubelet starts that for every call, and
grpc's import alone would cost it more than the rest of a warm mount.
"""

# The CSI driver name (CSIDriver object, GetPluginInfo, registration). CSI asks for domain-name
# form and Kubernetes for a DNS subdomain of at most 63 characters: "ax/vol_plugin" is neither.
DRIVER_NAME = "vol-plugin.ax"

# The .proto sources, as the Go module proxy publishes them (packaging/csi-api fetches them).
CSI_SPEC_MODULE = "github.com/container-storage-interface/spec"
CSI_SPEC_VERSION = "v1.14.0"
KUBELET_MODULE = "k8s.io/kubelet"
KUBELET_VERSION = "v0.37.2"  # the kubelet release the end-to-end suite builds and runs
KUBELET_REGISTRATION_PROTO = "pkg/apis/pluginregistration/v1/api.proto"

# The generated package's name, and the dir under the cache dir that holds it.
API_PACKAGE = "ax_csi_api"
API_DIR_NAME = f"csi-api-{CSI_SPEC_VERSION}-kubelet-{KUBELET_VERSION}"


def default_api_dir() -> str:
    """Where packaging/csi-api writes the generated package, and the plugin looks for it: the
    build's cache dir ($AX_CACHE_DIR, as the Makefile sets it)."""
    import os

    cache = os.environ.get("AX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ax-vol-plugin")
    return os.path.join(cache, API_DIR_NAME)
