"""The CSI Identity and Node services and kubelet's plugin Registration service, over the core.

Each NodePublishVolume is one core.acquire for its target path, each NodeUnpublishVolume one
core.release, and each is a line in the node's call log (verb publish/unpublish, frontend csi)
like a FlexVolume mount or unmount. The core's errors map onto CSI codes; whatever the failure,
the target dir this call made is removed again, so a failed publish leaves nothing: kubelet does
not promise to call NodeUnpublishVolume after a NodePublishVolume that failed.

Idempotence is the core's: a publish retried after it succeeded finds its slab mounted on the
target path and succeeds; an unpublish of a target that holds nothing succeeds. Two calls for one
volume at once (kubelet does not do that, but a retry may overlap a call that is still running)
are refused with ABORTED, as the spec says, rather than queued.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import traceback
from collections.abc import Callable

import grpc

from .. import __version__, journal
from .. import config as config_module
from ..config import Config
from ..core import Core
from ..errors import BadRequest, Busy, ConfigError, DeviceRefused, DriverError, PoolExhausted
from . import DRIVER_NAME, api, request

csi_pb2, csi_grpc, registration_pb2, registration_grpc = api.load()

# What kubelet's plugin watcher checks (pluginregistration.CSIPlugin), and the CSI versions we
# speak: kubelet takes the highest 1.x it is offered.
PLUGIN_TYPE = "CSIPlugin"
SUPPORTED_VERSIONS = ("1.0.0",)

_MODES = csi_pb2.VolumeCapability.AccessMode.Mode
SINGLE_NODE_MODES = (_MODES.SINGLE_NODE_WRITER, _MODES.SINGLE_NODE_SINGLE_WRITER, _MODES.SINGLE_NODE_MULTI_WRITER)

_CODES = (
    (BadRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (DeviceRefused, grpc.StatusCode.FAILED_PRECONDITION),
    (PoolExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Busy, grpc.StatusCode.ABORTED),
)


def code_of(err: DriverError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(err, kind):
            return code
    return grpc.StatusCode.INTERNAL


class Settings:
    def __init__(self, node_id: str, kubelet_dir: str, endpoint_for_kubelet: str,
                 load_config: Callable[[], Config] = config_module.load) -> None:
        self.node_id = node_id
        self.kubelet_dir = os.path.normpath(kubelet_dir)
        self.endpoint_for_kubelet = endpoint_for_kubelet  # the CSI socket's path as kubelet sees it
        self.load_config = load_config


class InFlight:
    """Volume ids with a call running: a second call for one of them is refused (ABORTED)."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._targets: set[str] = set()
        self._lock = threading.Lock()

    def enter(self, volume_id: str, target: str) -> bool:
        with self._lock:
            if volume_id in self._ids or target in self._targets:
                return False
            self._ids.add(volume_id)
            self._targets.add(target)
            return True

    def leave(self, volume_id: str, target: str) -> None:
        with self._lock:
            self._ids.discard(volume_id)
            self._targets.discard(target)


class _Call:
    """One publish or unpublish: its record, its core, and its end in the call log."""

    def __init__(self, verb: str, settings: Settings, core_of: Callable[[Config], Core], volume_id: str) -> None:
        self.record = journal.CallRecord(verb)
        self.record.note(frontend="csi", volume_id=volume_id[:80] or None)
        self.settings, self.core_of, self.core = settings, core_of, None

    def run(self, context, body: Callable[[Core], str]):
        """body(core) -> message; on failure the call is aborted with the error's code."""
        code, message, outcome = None, "", "Success"
        try:
            config = self.settings.load_config()
            self.core = self.core_of(config)
            message = body(self.core)
        except DriverError as err:
            self.record.note(reason=err.reason)
            code, message, outcome = code_of(err), str(err), "Failure"
        except Exception as err:  # noqa: BLE001 - kubelet gets a status, the log the traceback
            self.record.note(reason="internal", traceback=traceback.format_exc())
            code, outcome = grpc.StatusCode.INTERNAL, "Failure"
            message = f"internal error in {DRIVER_NAME} ({type(err).__name__}: {err}); see the driver log"
        core = self.core or self.core_of(config_module.load_or_default(self.settings.load_config))
        core.finish(self.record, outcome, message, count=self.core is not None)
        if code is not None:
            context.abort(code, message)
        return message


class Identity(csi_grpc.IdentityServicer):
    def __init__(self, ready: Callable[[], bool]) -> None:
        self.ready = ready

    def GetPluginInfo(self, request, context):
        return csi_pb2.GetPluginInfoResponse(name=DRIVER_NAME, vendor_version=__version__)

    def GetPluginCapabilities(self, request, context):
        # A node-only plugin: no controller service, no topology (every volume is the node's own).
        return csi_pb2.GetPluginCapabilitiesResponse()

    def Probe(self, request, context):
        from google.protobuf import wrappers_pb2

        return csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=self.ready()))


class Node(csi_grpc.NodeServicer):
    def __init__(self, settings: Settings, core_of: Callable[[Config], Core], in_flight: InFlight) -> None:
        self.settings = settings
        self.core_of = core_of
        self.in_flight = in_flight

    def NodeGetCapabilities(self, request, context):
        # Ephemeral volumes only: no staging, and no volume stats (kubelet measures the dir itself).
        return csi_pb2.NodeGetCapabilitiesResponse()

    def NodeGetInfo(self, request, context):
        return csi_pb2.NodeGetInfoResponse(node_id=self.settings.node_id)

    def NodePublishVolume(self, req, context):
        volume_id = req.volume_id
        call = _Call("publish", self.settings, self.core_of, volume_id)
        made: list[str] = []

        def publish(core: Core) -> str:
            target = self._checked(req)
            if not self.in_flight.enter(volume_id, target):
                raise Busy(f"a call for volume {volume_id} or {target} is still running; kubelet will retry")
            try:
                if _make_target(target):
                    made.append(target)
                config = core.config
                mount = request.mount_request(
                    target, dict(req.volume_context), req.volume_capability.mount.fs_type, req.readonly,
                    config.default_size_mb, config.default_cache_scope,
                )
                return core.acquire(mount, call.record)
            except BaseException:
                for path in made:
                    _remove_target(path)  # a failed publish leaves no dir of ours behind
                raise
            finally:
                self.in_flight.leave(volume_id, target)

        call.run(context, publish)
        return csi_pb2.NodePublishVolumeResponse()

    def NodeUnpublishVolume(self, req, context):
        volume_id = req.volume_id
        call = _Call("unpublish", self.settings, self.core_of, volume_id)

        def unpublish(core: Core) -> str:
            if not volume_id:
                raise BadRequest("volume_id is missing")
            target = request.target_of(req.target_path, self.settings.kubelet_dir)
            if not self.in_flight.enter(volume_id, target):
                raise Busy(f"a call for volume {volume_id} or {target} is still running; kubelet will retry")
            try:
                # Unpublished already (the dir gone, or nothing on it) is success: the spec's retry.
                message = core.release(target, call.record)
                _remove_target(target)
                return message
            finally:
                self.in_flight.leave(volume_id, target)

        call.run(context, unpublish)
        return csi_pb2.NodeUnpublishVolumeResponse()

    def _checked(self, req) -> str:
        if not req.volume_id:
            raise BadRequest("volume_id is missing")
        target = request.target_of(req.target_path, self.settings.kubelet_dir)
        capability = req.volume_capability
        if not capability.HasField("mount"):
            raise BadRequest("only filesystem volumes are served (volume_capability must be mount, not block)")
        if capability.mount.mount_flags:
            raise BadRequest(f"mount flags are not supported, got {list(capability.mount.mount_flags)[:5]}")
        if capability.access_mode.mode not in SINGLE_NODE_MODES:
            mode = csi_pb2.VolumeCapability.AccessMode.Mode.Name(capability.access_mode.mode)
            raise BadRequest(f"access mode {mode} is not served: a slab is one pod's, on one node")
        if req.staging_target_path:
            raise BadRequest("staging is not supported (ephemeral inline volumes only)")
        return target


def _make_target(path: str) -> bool:
    """Make kubelet's target dir (its parent is kubelet's); True if this call made it. An existing
    dir is a retry's; anything else there (a link, a file) is refused, never followed."""
    try:
        os.mkdir(path, 0o750)
        return True
    except FileExistsError:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise BadRequest(f"{path} exists and is not a directory") from None
        return False
    except FileNotFoundError:
        raise BadRequest(f"the parent of {path} does not exist (kubelet makes it before publishing)") from None


def _remove_target(path: str) -> None:
    """Remove the target dir if it is an empty dir that is not a mount point: the spec has the
    plugin delete what it made; kubelet removes the rest of the volume's dir."""
    try:
        if os.path.ismount(path):
            return
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EBUSY, errno.ENOTDIR):
            raise


class Registration(registration_grpc.RegistrationServicer):
    """Kubelet's plugin watcher finds our socket in its plugins_registry dir and asks it."""

    def __init__(self, settings: Settings, on_status: Callable[[bool, str], None]) -> None:
        self.settings = settings
        self.on_status = on_status

    def GetInfo(self, request, context):
        return registration_pb2.PluginInfo(
            type=PLUGIN_TYPE, name=DRIVER_NAME, endpoint=self.settings.endpoint_for_kubelet,
            supported_versions=list(SUPPORTED_VERSIONS),
        )

    def NotifyRegistrationStatus(self, status, context):
        self.on_status(status.plugin_registered, status.error)
        return registration_pb2.RegistrationStatusResponse()
