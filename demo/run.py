"""`make demo`: boot a real kernel with a blank scratch disk, install the driver, and play
kubelet for a series of CI pods; print what happened to each slab and how long each call took."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.vm.launch import REPO, boot, make_disks


def main() -> int:
    subprocess.run([os.path.join(REPO, "packaging", "build")], check=True, stdout=subprocess.DEVNULL)
    workdir = os.path.join(REPO, ".vm", time.strftime("demo-%Y%m%d-%H%M%S"))
    os.makedirs(workdir)
    # An 8 GiB slab disk and a small disk for kubelet's dir (sizes checked by the guest).
    disks = make_disks(workdir, {"scratch": 8192 + 3, "node": 512 + 5})
    print("booting a VM (Debian kernel under qemu) with a blank 8 GiB slab disk...", flush=True)
    rc = boot([sys.executable, "-m", "demo.guest"], workdir, disks)
    for image in disks.values():
        os.unlink(image)
    return rc


if __name__ == "__main__":
    sys.exit(main())
