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
import sys

from ..system import files
from . import API_PACKAGE, default_api_dir

DIR_ENV = "AX_CSI_API_DIR"


class MissingAPI(ImportError):
    pass


def _candidates() -> list[str]:
    named = os.environ.get(DIR_ENV)
    return [named] if named else [default_api_dir()]


def load():
    """(csi_pb2, csi_pb2_grpc, pluginregistration_pb2, pluginregistration_pb2_grpc)."""
    if importlib.util.find_spec(API_PACKAGE) is None:
        tried = []
        for directory in _candidates():
            if not os.path.isdir(os.path.join(directory, API_PACKAGE)):
                tried.append(f"{directory}: no {API_PACKAGE} package")
                continue
            # root's, or this user's (a developer's own cache dir), and writable by no one else
            why = files.untrusted_dir(os.path.join(directory, API_PACKAGE), owners=(0, os.geteuid()))
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
