"""The CSI node plugin's process: `python3 -m flexdriver.csi [options]`, or `... probe`.

It serves Identity and Node on the CSI socket, then registers with kubelet by serving kubelet's
Registration service on a second socket in kubelet's plugins_registry dir (kubelet watches that
dir, asks the new socket what it is, then dials the CSI socket and asks NodeGetInfo). The CSI
socket is served before the registration socket appears, so kubelet never finds a plugin that
cannot answer yet. On SIGTERM both sockets are removed (kubelet deregisters the plugin; mounted
volumes stay mounted: they are the kernel's, not this process's) and the process exits.

At start-up and then every --sweep-interval seconds it releases the slabs of target dirs kubelet
no longer has (their volume's vol_data.json, which kubelet writes before it publishes and removes
after it unpublishes, is gone): kubelet does not promise to unpublish again after a failure, and a
node whose kubelet lost a pod must not keep its slab forever.

Kubelet checks it over HTTP on --health-address (an httpGet probe: kubelet asks, nothing is
started in the container): /healthz answers 200 while the CSI socket accepts connections (the
liveness probe: a plugin that cannot be dialled is restarted), /readyz also wants the
configuration to load (the readiness probe: a node whose config is broken shows the pod not
ready, and is not restarted for it, since a restart cannot mend a file and a running plugin still
tells each pod what is wrong). An exec probe would start a Python with grpc in the container on
every period: on a loaded node that took longer than any sane timeout, and kubelet killed a
healthy plugin under running pods.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .. import config as config_module
from .. import journal
from ..config import Config
from ..core import Core, IdleShells
from ..errors import DriverError
from ..system.runner import Runner
from . import DRIVER_NAME

DEFAULT_ENDPOINT = "/var/lib/kubelet/plugins/vol-plugin.ax/csi.sock"
DEFAULT_REGISTRY = "/var/lib/kubelet/plugins_registry"
# Kubelet runs publishes of different pods at once; each spends most of its time in mkfs, mount
# or waiting for the node lock, not in Python.
WORKERS = 8
# The port the CSI community's livenessprobe sidecar serves on; the plugin serves it itself.
DEFAULT_HEALTH_ADDRESS = ":9808"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m flexdriver.csi", description=__doc__.split("\n")[0])
    parser.add_argument("command", nargs="?", choices=("serve", "probe"), default="serve")
    parser.add_argument("--endpoint", default=os.environ.get("CSI_ENDPOINT", DEFAULT_ENDPOINT),
                        help="the CSI socket (a path, or unix://PATH); default $CSI_ENDPOINT or %(default)s")
    parser.add_argument("--kubelet-endpoint", default="",
                        help="the CSI socket's path as kubelet sees it, if not the same path (default: --endpoint)")
    parser.add_argument("--registration-dir", default=DEFAULT_REGISTRY,
                        help="kubelet's plugins_registry dir; '' registers nothing (default %(default)s)")
    parser.add_argument("--kubelet-dir", default="/var/lib/kubelet", help="kubelet's root dir (default %(default)s)")
    parser.add_argument("--node-id", default=os.environ.get("NODE_NAME") or socket.gethostname(),
                        help="this node's name, as NodeGetInfo reports it (default $NODE_NAME or the host name)")
    parser.add_argument("--sweep-interval", type=float, default=300.0,
                        help="seconds between releases of volumes kubelet no longer has; 0: only at start-up")
    parser.add_argument("--health-address", default=DEFAULT_HEALTH_ADDRESS,
                        help="[HOST]:PORT of the HTTP /healthz and /readyz kubelet probes; '' serves none "
                             "(default %(default)s, every address of the pod's network)")
    return parser.parse_args(argv)


def health_address(value: str) -> tuple[str, int] | None:
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise SystemExit(f"{DRIVER_NAME}: --health-address must be [HOST]:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def socket_path(endpoint: str) -> str:
    path = endpoint[len("unix://"):] if endpoint.startswith("unix://") else endpoint
    if not path.startswith("/"):
        raise SystemExit(f"{DRIVER_NAME}: the endpoint must be an absolute unix socket path, got {endpoint!r}")
    return path


class Plugin:
    def __init__(self, args: argparse.Namespace, runner: Runner | None = None, load_config=None) -> None:
        # gRPC's own fork handlers, off: its children are the commands the core runs, which exec
        # at once (Runner(threaded=True)); with them on, children crashed between fork and exec.
        os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
        import grpc  # only here: the module's other users (probe, --help) do not start a server

        from . import service

        self.grpc = grpc
        self.args = args
        self.endpoint = socket_path(args.endpoint)
        self.registration_socket = (
            os.path.join(args.registration_dir, f"{DRIVER_NAME}-reg.sock") if args.registration_dir else ""
        )
        kwargs = {"load_config": load_config} if load_config else {}
        self.settings = service.Settings(args.node_id, args.kubelet_dir, args.kubelet_endpoint or self.endpoint, **kwargs)
        self.runner = runner or Runner(threaded=True)
        self.shells: IdleShells | None = None
        self.in_flight = service.InFlight()
        self.stopping = threading.Event()
        self.servers: list = []
        self.registered: tuple[bool, str] | None = None
        self.health_server: ThreadingHTTPServer | None = None
        self._service = service

    # ---- the core, per call ----------------------------------------------------------------

    def core_of(self, config: Config) -> Core:
        if self.shells is None:
            self.shells = IdleShells(self.runner, config.command_timeout_s)
        return Core(config, self.runner, self.shells)

    def ready(self) -> bool:
        try:
            self.settings.load_config()
            return True
        except DriverError:
            return False

    def unhealthy(self, want_config: bool) -> str:
        """Why kubelet's probe should fail, or '' if it should pass."""
        # A connection the gRPC server accepts, then closed: its accept loop and event engine are
        # alive. Not a Probe call: that waits for a free worker, and a burst of publishes queued
        # on the node lock behind a mkfs is busy, not dead.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dial:
            dial.settimeout(5)
            try:
                dial.connect(self.endpoint)
            except OSError as err:
                return f"the CSI socket {self.endpoint} does not accept connections: {err.strerror or err}"
        if want_config and not self.ready():
            return "its configuration does not load; see the driver log"
        return ""

    # ---- serving ---------------------------------------------------------------------------

    def start(self) -> None:
        service = self._service
        csi = self.grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="csi"))
        service.csi_grpc.add_IdentityServicer_to_server(service.Identity(self.ready), csi)
        service.csi_grpc.add_NodeServicer_to_server(service.Node(self.settings, self.core_of, self.in_flight), csi)
        self._bind(csi, self.endpoint)
        csi.start()
        self.servers.append(csi)
        self.sweep()
        if self.registration_socket:
            registration = self.grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="reg"))
            service.registration_grpc.add_RegistrationServicer_to_server(
                service.Registration(self.settings, self.on_registration), registration
            )
            self._bind(registration, self.registration_socket)
            registration.start()
            self.servers.append(registration)
        address = health_address(self.args.health_address)
        if address is not None:
            self.health_server = _HealthServer(address, self)
            threading.Thread(target=self.health_server.serve_forever, name="health", daemon=True).start()

    @property
    def health_port(self) -> int:
        return self.health_server.server_address[1] if self.health_server else 0

    def _bind(self, server, path: str) -> None:
        os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
        try:
            server.add_insecure_port(f"unix://{path}")  # grpc removes a socket a killed plugin left
        except RuntimeError as err:
            raise SystemExit(f"{DRIVER_NAME}: cannot listen on {path}: {err}") from None
        os.chmod(path, 0o600)  # root's only: whoever can speak to it can mount and unmount slabs

    def serve_forever(self) -> None:
        interval = self.args.sweep_interval
        while not self.stopping.wait(interval if interval > 0 else None):
            self.sweep()

    def stop(self, grace_s: float = 10.0) -> None:
        self.stopping.set()
        if self.health_server is not None:
            self.health_server.shutdown()
            self.health_server.server_close()
        for server in reversed(self.servers):  # registration first: kubelet stops sending calls
            server.stop(grace_s).wait()
        if self.shells is not None:
            self.shells.close()

    def on_registration(self, registered: bool, error: str) -> None:
        self.registered = (registered, error)
        record = journal.CallRecord("register")
        record.note(frontend="csi", registered=registered, error=error or None)
        outcome = "Success" if registered else "Failure"
        config = config_module.load_or_default(self.settings.load_config)
        self.core_of(config).finish(record, outcome, error or "registered with kubelet", count=False)

    def sweep(self) -> list[str]:
        """Release the slabs of CSI target dirs whose volume kubelet no longer has; what it released."""
        from . import request

        try:
            config = self.settings.load_config()
            owned = self.core_of(config).owned_dirs()
        except DriverError:
            return []  # the next publish reports what is wrong, with its pod
        released = []
        for target in owned:
            try:
                request.target_of(target, self.settings.kubelet_dir)
            except DriverError:
                continue  # not a CSI volume of this kubelet's (a FlexVolume pod's, say)
            if os.path.lexists(os.path.join(os.path.dirname(target), "vol_data.json")):
                continue  # kubelet still has it; it will unpublish it
            key = f"sweep:{target}"
            if not self.in_flight.enter(key, target):
                continue
            record = journal.CallRecord("unpublish")
            record.note(frontend="csi", sweep=True)
            core = self.core_of(config)
            try:
                message, outcome = core.release(target, record), "Success"
                released.append(target)
            except DriverError as err:
                record.note(reason=err.reason)
                message, outcome = str(err), "Failure"
            finally:
                self.in_flight.leave(key, target)
            core.finish(record, outcome, f"kubelet no longer has this volume: {message}")
        return released


def probe(args: argparse.Namespace) -> int:
    """Exit 0 if the plugin answers Probe ready on its socket (a container's liveness probe)."""
    import grpc

    from . import service

    with grpc.insecure_channel(f"unix://{socket_path(args.endpoint)}") as channel:
        try:
            answer = service.csi_grpc.IdentityStub(channel).Probe(service.csi_pb2.ProbeRequest(), timeout=10)
        except grpc.RpcError as err:
            print(f"{DRIVER_NAME}: probe failed: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    if not answer.ready.value:
        print(f"{DRIVER_NAME}: not ready (its configuration does not load; see the driver log)", file=sys.stderr)
        return 1
    return 0


class _HealthServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], plugin: Plugin) -> None:
        self.plugin = plugin
        try:
            super().__init__(address, _HealthHandler)
        except OSError as err:
            raise SystemExit(f"{DRIVER_NAME}: cannot serve the health probes on {address}: {err.strerror or err}") from None


class _HealthHandler(BaseHTTPRequestHandler):
    PATHS = {"/healthz": False, "/readyz": True}  # path: whether the configuration must load

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path not in self.PATHS:
            status, text = 404, "not found: /healthz or /readyz\n"
        else:
            why = self.server.plugin.unhealthy(want_config=self.PATHS[path])
            status, text = (503, f"{why}\n") if why else (200, "ok\n")
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format, *args) -> None:
        pass  # kubelet asks every period; its own events say when a probe failed and why


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "probe":
        return probe(args)
    plugin = Plugin(args)

    def on_signal(signum, frame) -> None:
        plugin.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    plugin.start()
    print(f"{DRIVER_NAME}: serving {plugin.endpoint}"
          + (f", registered at {plugin.registration_socket}" if plugin.registration_socket else ""), flush=True)
    plugin.serve_forever()
    plugin.stop()
    return 0
