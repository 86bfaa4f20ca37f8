"""Run the end-to-end suite: the real kubelet (tests/e2e/build.py) with Debian's containerd and
pods made from examples/, in one guest on blank disks; the reboot scenario's guest is then
booted again on the same disks. Exit status: non-zero if anything failed.

One guest with both vCPUs (not two lanes): the pods' daemons, containerd and kubelet all run at
once in it, and nothing else runs beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.e2e import build, images
from tests.e2e.conftest import VERSIONS
from tests.e2e.scenario import FIGURES

from .launch import REPO, boot, make_disks, say
from .realkernel_suite import NO_TESTS_SELECTED, counts, pytest_in_guest

DISKS_MB = {
    # Sparse: the examples ask for 10 GiB slabs, and scenario 2 runs eight pods at once. Odd
    # sizes, as in the real-kernel suite: the guest checks each device's exact size before use.
    "scratch": 9 * 10240 + 1024 + 3,
    "node": 4096 + 5,
}
MEMORY = "6G"
CPUS = 2
# The guests, each a pytest selection in tests/e2e: the FlexVolume scenarios on a standalone
# kubelet, the reboot's second half on the same disks, then the CSI scenarios (test names with
# `csi`) on blank disks with a control plane of their own (tests/e2e/cluster.py's ControlPlane).
BOOTS = (
    ("boot1", "not after_reboot and not csi", False),
    ("boot2", "after_reboot and not csi", False),
    ("csi", "csi", True),
)


def _read_json(path: str) -> dict:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def main(argv) -> int:
    subprocess.run([os.path.join(REPO, "packaging", "build")], check=True)
    build.main(list(build.SUITE_PROGRAMS))
    tarballs = images.build_all(build.IMAGES_DIR)
    started = time.monotonic()
    workdir = os.path.join(REPO, ".vm", f"e2e-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(workdir)
    env = {"AX_E2E_KUBELET": build.binary("kubelet"), "AX_E2E_IMAGES": json.dumps(tarballs),
           "AX_E2E_ETCD": build.binary("etcd"), "AX_E2E_APISERVER": build.binary("kube-apiserver")}
    bad = False
    totals = [0, 0]
    disks = {}
    for name, selection, control_plane in BOOTS:
        if name != "boot2":  # the reboot scenario's second half boots on the first's disks
            for image in disks.values():
                os.unlink(image)
            disks = make_disks(workdir, DISKS_MB)
        say(f"=== e2e: {name} ({selection}) ===")
        rc = boot(pytest_in_guest(workdir, name, selection, ["tests/e2e"], argv), workdir, disks,
                  memory=MEMORY, cpus=CPUS, env={**env, "AX_E2E_CONTROL_PLANE": "1" if control_plane else "0"})
        if rc == NO_TESTS_SELECTED:
            rc = 0  # a -k selection with nothing in this boot
        passed, failed, _ = counts(os.path.join(workdir, f"{name}.xml"))
        say(f"=== {name}: exit {rc}, {passed} passed, {failed} failed ===")
        totals[0] += passed
        totals[1] += failed
        bad = bad or rc != 0
    for image in disks.values():
        os.unlink(image)
    for name, value in sorted(_read_json(os.path.join(workdir, FIGURES)).items()):
        print(f"e2e figure: {name} = {value}")
    ran = _read_json(os.path.join(workdir, VERSIONS))
    what = f"{ran['kubelet']}, containerd {ran['containerd']}" if ran else f"kubelet {build.KUBERNETES} did not start"
    print(f"e2e ({what}): {totals[0]} passed, {totals[1]} failed, "
          f"{(time.monotonic() - started) / 60:.1f} min; logs in {workdir}")
    return 1 if bad or totals[1] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
