"""Node configuration: built-in defaults, overridden by an optional INI file.

The defaults match the 2017 driver (device /dev/xvdz, volume group vg-ax, delete above 50% used,
10240 MiB slabs) so that this driver is a drop-in replacement with no file at all.
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Mapping

from .errors import ConfigError
from .pool import Provisioning
from .record import record

DEFAULT_PATH = "/etc/ax-vol-plugin/vol_plugin.conf"
PATH_ENV = "AX_VOL_PLUGIN_CONFIG"
SECTION = "vol_plugin"

# LVM's own rule for VG names: these characters, not starting with '-', not '.' or '..'.
_VG_NAME = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}")


@record
class Config:
    device: str = "/dev/xvdz"
    volume_group: str = "vg-ax"
    usage_threshold: float = 0.5
    default_size_mb: int = 10240
    # The largest slab one pod may ask for; 0: no cap beyond the volume group's size.
    max_size_mb: int = 0
    log_file: str = "/var/log/ax-vol-plugin.log"
    run_dir: str = "/run/ax-vol-plugin"
    lock_timeout_s: float = 300.0
    # A hung LVM command, mount or umount is killed after this long and the call fails
    # (kubelet retries); mkfs gets six times as long, as it scales with the slab.
    command_timeout_s: float = 120.0
    # node_exporter's textfile collector dir; metrics are written there only if it exists.
    # Empty: no metrics file.
    metrics_dir: str = "/var/lib/prometheus/node-exporter"
    # The log is rotated (log_file.1 ... log_file.N) once it is larger than this; 0: never.
    log_max_bytes: int = 10 << 20
    log_keep: int = 5
    # Which earlier pods' slabs a pod may inherit when its options name no cache_scope.
    default_cache_scope: str = "node"
    # thick: each slab is its own LV; a warm slab goes to one pod at a time. thin: slabs live in
    # one thin pool and every pod gets a copy-on-write snapshot of the warmest slab of its key.
    provisioning: Provisioning = Provisioning.THICK
    # Thin mode: free slabs kept per key (size, filesystem, scope); older ones are deleted.
    thin_keep_free: int = 2
    # Thin mode: above this fraction of the thin pool's data used, free slabs are evicted and,
    # with none left, new mounts are refused (headroom for the pods already running).
    thin_high_water: float = 0.8


_PARSERS = {
    "device": "device",
    "volume_group": "vg",
    "usage_threshold": "fraction",
    "default_size_mb": "size",
    "max_size_mb": "size_or_zero",
    "log_file": "path",
    "run_dir": "path",
    "lock_timeout_s": "seconds",
    "command_timeout_s": "seconds",
    "metrics_dir": "optional_path",
    "log_max_bytes": "bytes",
    "log_keep": "count",
    "default_cache_scope": "scope",
    "provisioning": "provisioning",
    "thin_keep_free": "positive_count",
    "thin_high_water": "fraction",
}


def load(environ: Mapping[str, str] = os.environ) -> Config:
    """Read the file named by $AX_VOL_PLUGIN_CONFIG, else DEFAULT_PATH if it exists."""
    path = environ.get(PATH_ENV)
    if path is None:
        if not os.path.exists(DEFAULT_PATH):
            return Config()
        path = DEFAULT_PATH
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        # A file written by hand in another encoding: name it, and where it stops being text.
        bad = err.object[err.start:err.start + 1]
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {err.start}: {bad!r})") from None
    return parse(text, path)


def load_or_default(load_config=None) -> Config:
    """The node's config (from `load_config`, default load) for a call's log line and metrics,
    even when the config is what is broken: then the built-in defaults, whose log file is the
    usual one."""
    try:
        return (load_config or load)()
    except ConfigError:
        return Config()


def parse(text: str, origin: str = "<config>") -> Config:
    # Comments may follow a value after whitespace, as in the README's own example; without
    # inline_comment_prefixes configparser keeps them as part of the value.
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    try:
        parser.read_string(text, source=origin)
    except configparser.Error as err:
        raise ConfigError(f"config file {origin} is not valid INI: {err}") from err
    extra = [name for name in parser.sections() if name != SECTION]
    if extra:
        raise ConfigError(f"config file {origin}: unknown section [{extra[0]}], expected [{SECTION}]")
    if not parser.has_section(SECTION):
        return Config()
    values = {}
    for key, raw in parser.items(SECTION):
        kind = _PARSERS.get(key)
        if kind is None:
            known = ", ".join(sorted(_PARSERS))
            raise ConfigError(f"config file {origin}: unknown key '{key}' (known: {known})")
        values[key] = _convert(kind, key, raw.strip(), origin)
    return Config(**values)


def _convert(kind: str, key: str, raw: str, origin: str):
    where = f"config file {origin}: {key} = {raw!r}"
    if kind == "device" and raw.startswith("udev:"):
        from .system.udev import parse_match

        try:
            parse_match(raw)
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
        return raw
    if kind == "device":
        kind = "path"
    if kind == "optional_path" and raw == "":
        return ""
    if kind in ("path", "optional_path"):
        if not raw.startswith("/") or "\0" in raw:
            raise ConfigError(f"{where}: must be an absolute path" + (" or empty" if kind == "optional_path" else ""))
        return os.path.normpath(raw)
    if kind == "scope":
        from .options import parse_cache_scope_name

        try:
            return parse_cache_scope_name(raw)
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
    if kind == "provisioning":
        try:
            return Provisioning(raw)
        except ValueError:
            raise ConfigError(f"{where}: must be thick or thin") from None
    if kind == "positive_count":
        if not re.fullmatch(r"[1-9][0-9]?|100", raw):
            raise ConfigError(f"{where}: must be a whole number from 1 to 100")
        return int(raw)
    if kind in ("bytes", "count"):
        if not re.fullmatch(r"0|[1-9][0-9]{0,12}", raw) or (kind == "count" and int(raw) > 100):
            raise ConfigError(f"{where}: must be a whole number" + (" from 0 to 100" if kind == "count" else " of bytes"))
        return int(raw)
    if kind == "vg":
        if not _VG_NAME.fullmatch(raw) or raw in (".", ".."):
            raise ConfigError(f"{where}: not a valid volume group name")
        return raw
    if kind == "size_or_zero":
        if not re.fullmatch(r"0|[1-9][0-9]{0,9}", raw):
            raise ConfigError(f"{where}: must be a whole number of MiB, or 0 for no cap")
        return int(raw)
    if kind == "size":
        if not re.fullmatch(r"[1-9][0-9]{0,9}", raw):
            raise ConfigError(f"{where}: must be a positive whole number of MiB")
        return int(raw)
    try:
        number = float(raw)
    except ValueError:
        number = float("nan")
    if kind == "fraction" and 0.0 < number <= 1.0:
        return number
    if kind == "seconds" and 0.0 < number <= 86400.0:
        return number
    limits = "between 0 (exclusive) and 1" if kind == "fraction" else "seconds, above 0"
    raise ConfigError(f"{where}: must be a number {limits}")
