"""Run the real-kernel suite: build the driver, boot a VM with blank disks, run
tests/realkernel inside it, power it off with pods still running, boot again on the same
disks and run the after-reboot half. Exit status: non-zero if anything failed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

from .launch import REPO, boot, make_disks

NO_TESTS_SELECTED = 5  # pytest's exit status when a selection leaves nothing to run

DISKS_MB = {
    # Sizes are deliberately odd: the guest checks each device's exact size before wiping it.
    "scratch": 2051 + 3,
    "node": 512 + 5,
    "spare": 64 + 7,
}


def pytest_in_guest(workdir: str, name: str, selection: str, extra) -> list:
    junit = os.path.join(workdir, f"{name}.xml")
    return [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
        "-o", "console_output_style=classic", "-rfE", "-v", "--junitxml", junit, "-m", selection, "tests/realkernel", *extra,
    ]


def counts(path: str) -> tuple:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return (0, 1, 0)
    suites = [root] if root.tag == "testsuite" else list(root)
    total = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    return (total - failed - skipped, failed, skipped)


def main(argv) -> int:
    subprocess.run([os.path.join(REPO, "packaging", "build")], check=True)
    workdir = os.path.join(REPO, ".vm", time.strftime("run-%Y%m%d-%H%M%S"))
    os.makedirs(workdir)
    disks = make_disks(workdir, DISKS_MB)
    results = []
    for name, selection in (("boot1", "not after_reboot"), ("boot2", "after_reboot")):
        started = time.monotonic()
        print(f"=== real kernel: {name} ({selection}) ===", flush=True)
        rc = boot(pytest_in_guest(workdir, name, selection, argv), workdir, disks)
        if rc == NO_TESTS_SELECTED and argv:
            rc = 0  # a -k/-m selection of the caller's that has nothing in this boot
        passed, failed, skipped = counts(os.path.join(workdir, f"{name}.xml"))
        print(f"=== {name}: exit {rc}, {passed} passed, {failed} failed, {time.monotonic() - started:.0f} s ===", flush=True)
        results.append((rc, passed, failed, skipped))
    for image in disks.values():
        os.unlink(image)  # sparse, but the slabs written into them add up over runs
    passed = sum(r[1] for r in results)
    failed = sum(r[2] for r in results)
    bad = any(r[0] != 0 for r in results)
    print(f"real-kernel: {passed} passed, {failed} failed")
    return 1 if bad or failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
