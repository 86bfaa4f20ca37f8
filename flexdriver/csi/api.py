"""The generated CSI and plugin-registration modules (packaging/csi-api writes them).

They are found, in this order: installed as the package ax_csi_api (the plugin's image installs
them into its site-packages at build time), or in the dir $AX_CSI_API_DIR names, or in the build's
cache dir. A dir is put on sys.path only if no other user could have written into it: this process
runs as root and imports from there.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import stat
import sys

from . import API_DIR_NAME, API_PACKAGE

DIR_ENV = "AX_CSI_API_DIR"


class MissingAPI(ImportError):
    pass


def _candidates() -> list[str]:
    named = os.environ.get(DIR_ENV)
    if named:
        return [named]
    cache = os.environ.get("AX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ax-vol-plugin")
    return [os.path.join(cache, API_DIR_NAME)]


def _writable_by_others(path: str) -> str | None:
    """Why `path` (and each dir above it) could have been written by a user other than this one."""
    me = os.geteuid()
    current = os.path.realpath(path)
    while True:
        st = os.stat(current)
        if st.st_uid not in (0, me):
            return f"{current} is owned by uid {st.st_uid}"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            return f"{current} is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def load():
    """(csi_pb2, csi_pb2_grpc, pluginregistration_pb2, pluginregistration_pb2_grpc)."""
    if importlib.util.find_spec(API_PACKAGE) is None:
        tried = []
        for directory in _candidates():
            if not os.path.isdir(os.path.join(directory, API_PACKAGE)):
                tried.append(f"{directory}: no {API_PACKAGE} package")
                continue
            why = _writable_by_others(os.path.join(directory, API_PACKAGE))
            if why:
                tried.append(f"{directory}: refused, {why}")
                continue
            sys.path.insert(0, directory)
            break
        else:
            raise MissingAPI(
                f"the generated CSI modules ({API_PACKAGE}) are not installed ({'; '.join(tried)}); "
                "run packaging/csi-api"
            )
    return tuple(
        importlib.import_module(f"{API_PACKAGE}.{name}")
        for name in ("csi_pb2", "csi_pb2_grpc", "pluginregistration_pb2", "pluginregistration_pb2_grpc")
    )
