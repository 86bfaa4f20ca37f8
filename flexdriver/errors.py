"""One error tree. Every DriverError becomes a kubelet Failure whose message is str(error)."""

from __future__ import annotations

from collections.abc import Sequence


class DriverError(Exception):
    """A failure reported to kubelet; the message is written for a person."""

    reason = "error"


class BadRequest(DriverError):
    """Input from kubelet (argv or options) that is refused before anything is touched."""

    reason = "bad_request"


class ConfigError(DriverError):
    """The node's configuration file is unreadable or invalid."""

    reason = "config"


class PoolExhausted(DriverError):
    """The volume group cannot hold the requested slab even after evicting every free slab."""

    reason = "no_space"


class DeviceRefused(DriverError):
    """The configured device is missing or carries data, so no volume group is made on it."""

    reason = "device"


class Busy(DriverError):
    """Another live call holds what this call needs; kubelet's retry will succeed later."""

    reason = "busy"


class CommandFailed(DriverError):
    """An external command exited non-zero (or could not be run)."""

    reason = "command"

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str, note: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        detail = _last_line(stderr) or note or "no message"
        super().__init__(f"{' '.join(self.argv)} failed (exit {returncode}): {detail}")


class CommandTimedOut(CommandFailed):
    reason = "timeout"


def _last_line(text: str) -> str:
    # LVM prints warnings before the real error; the last non-empty line is the one that matters.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
