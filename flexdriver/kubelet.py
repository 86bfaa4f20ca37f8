"""The FlexVolume protocol as kubelet runs it: argv in, exactly one JSON object out.

Kubelet reads stdout and stderr together and parses the whole of it as one JSON object, so
before anything else runs, fds 1 and 2 are pointed at an in-memory file. Whatever ends up
there (a Python warning, a traceback, a library's print) is kept in the log line of a mount,
an unmount or a failed call, and the response is written to the saved original stdout, alone.
"""

from __future__ import annotations

import json
import os
import sys

from . import INIT_RESPONSE, journal
from .errors import BadRequest, DriverError

USAGE = "usage: vol_plugin init | mount <mount dir> <json options> | unmount <mount dir>"

SUCCESS = "Success"
FAILURE = "Failure"
NOT_SUPPORTED = "Not supported"


Response = dict[str, object]


def respond(status: str, message: str = "") -> Response:
    response: Response = {"status": status}
    if message:
        response["message"] = message
    return response


def handle(argv: list[str], record: journal.CallRecord, config_box: list) -> Response:
    if not argv:
        raise BadRequest(f"no verb given; {USAGE}")
    verb, args = argv[0], argv[1:]
    if verb == "init":
        return json.loads(INIT_RESPONSE)
    if verb not in ("mount", "unmount"):
        # Cached by kubelet until the next probe: only for verbs we never implement.
        return respond(NOT_SUPPORTED, f"{verb} is not supported by ax/vol_plugin")

    expected = 2 if verb == "mount" else 1
    if len(args) != expected:
        raise BadRequest(f"{verb} takes {expected} argument(s), got {len(args)}; {USAGE}")

    from . import config as config_module
    from .core import Core
    from .options import parse_mount

    config = config_module.load()
    config_box.append(config)
    core = Core(config)
    if verb == "mount":
        request = parse_mount(args[0], args[1], config.default_size_mb, config.default_cache_scope)
        message = core.acquire(request, record)
    else:
        message = core.release(args[0], record)
    return respond(SUCCESS, message)


def run(argv: list[str]) -> tuple[Response, journal.CallRecord, object | None]:
    """Answer one call; never raises."""
    record = journal.CallRecord(argv[0] if argv else "")
    config_box: list = []
    try:
        response = handle(argv, record, config_box)
    except DriverError as err:
        record.note(reason=err.reason)
        response = respond(FAILURE, str(err))
    except BaseException as err:  # noqa: BLE001 - kubelet must get JSON even for our own bugs
        import traceback  # only on this path: most calls never need it

        record.note(reason="internal", traceback=traceback.format_exc())
        response = respond(FAILURE, f"internal error in ax/vol_plugin ({type(err).__name__}: {err}); see the driver log")
    return response, record, (config_box[0] if config_box else None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    kubelet_out = os.dup(1)
    capture = _capture_stdio()
    response, record, config = run(argv)
    stray = _drain(capture)
    if stray:
        record.note(stray_output=stray[-4000:])
    if argv[:1] in (["mount"], ["unmount"]) or "reason" in record.fields:
        try:
            from .config import load_or_default
            from .core import Core

            # The configured log file even for calls that failed before loading the config.
            Core(config or load_or_default()).finish(
                record, str(response["status"]), str(response.get("message", "")),
                count=argv[:1] in (["mount"], ["unmount"]),
            )
        except Exception:  # noqa: BLE001 - the call is done: a log that cannot be written must not hide its answer
            pass
    _write_all(kubelet_out, json.dumps(response).encode())
    return 1 if response["status"] == FAILURE else 0


def _capture_stdio() -> int:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    try:
        fd = os.memfd_create("vol_plugin-stdio", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    return fd


def _drain(fd: int) -> str:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, min(size, 1 << 20), 0).decode("utf-8", errors="replace") if size else ""
    except OSError:
        return ""


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            written = os.write(fd, data)
            data = data[written:]
    except OSError:
        pass  # kubelet went away; nothing left to tell it
