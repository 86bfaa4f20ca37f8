"""Run the real-kernel suite: build the driver, then in two guests side by side (each on blank
disks of its own) run tests/realkernel split between them by file; the guest that has the reboot
scenario is powered off with pods still running and booted again on the same disks for the
after-reboot half. Exit status: non-zero if anything failed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

from .launch import LANE_CPUS, REPO, boot, in_lanes, make_disks, say

# Their first halves leave pods running for a second boot on the same disks: one node's pool per
# lane, so each file goes to a lane of its own (thick, then thin).
REBOOT_FILES = ("test_reboot.py", "test_reboot_thin.py")
# Minutes each file took in one guest of two running side by side (junit times, 2026-12-03,
# virtiofs root); only their proportions matter. A new file counts as DEFAULT_WEIGHT until it is
# measured.
FILE_MINUTES = {
    "test_dind.py": 11.2, "test_thin.py": 11.4, "test_crash.py": 7.8, "test_space.py": 7.7,
    "test_prewarm.py": 5.7, "test_admin.py": 4.1, "test_install.py": 4.0, "test_mount.py": 3.7,
    "test_bad_input.py": 3.6, "test_release.py": 2.7, "test_csi.py": 2.5, "test_concurrency.py": 2.3,
    "test_scope.py": 1.5, "test_protocol.py": 1.4, "test_metrics.py": 1.2, "test_udev.py": 1.0,
    "test_reboot_thin.py": 0.7, "test_busy.py": 0.6, "test_reboot.py": 0.4, "test_vm.py": 0.1,
}
DEFAULT_WEIGHT = 2.0
NO_TESTS_SELECTED = 5  # pytest's exit status when a selection leaves nothing to run

DISKS_MB = {
    # Sizes are deliberately odd: the guest checks each device's exact size before wiping it.
    "scratch": 2051 + 3,
    "node": 512 + 5,
    "spare": 64 + 7,
}


def pytest_in_guest(workdir: str, name: str, selection: str, files: list, extra) -> list:
    junit = os.path.join(workdir, f"{name}.xml")
    return [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
        "-o", "console_output_style=classic", "-rfE", "-v", "--durations=15", "--junitxml", junit,
        "-m", selection, *files, *extra,
    ]


def plan_lanes(files: list, weights: dict, lanes: int = 2) -> list:
    """Split the test files over `lanes` guests so that each lane's measured minutes come out
    about even (longest first, each to the lightest lane so far). Each reboot scenario's file
    goes to a lane of its own (the first, then the next), whose disks its second boot reuses."""
    plan = [[] for _ in range(lanes)]
    load = [0.0] * lanes
    for i, name in enumerate(n for n in REBOOT_FILES if n in files):
        plan[i % lanes].append(name)
        load[i % lanes] += weights.get(name, DEFAULT_WEIGHT)
    rest = sorted((f for f in files if f not in REBOOT_FILES), key=lambda f: (-weights.get(f, DEFAULT_WEIGHT), f))
    for name in rest:
        lightest = load.index(min(load))
        plan[lightest].append(name)
        load[lightest] += weights.get(name, DEFAULT_WEIGHT)
    return [sorted(lane) for lane in plan if lane]


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


def run_lane(lane: str, files: list, stamp: str, argv: list) -> list:
    """One guest's share: a boot on blank disks of its own for `files`; then, on a lane that
    has a reboot scenario, a second boot on the same disks for its after-reboot half."""
    workdir = os.path.join(REPO, ".vm", f"run-{stamp}-{lane}")
    os.makedirs(workdir)
    disks = make_disks(workdir, DISKS_MB)
    boots = [("boot1", "not after_reboot", files)]
    rebooted = [f for f in files if os.path.basename(f) in REBOOT_FILES]
    if rebooted:
        boots.append(("boot2", "after_reboot", rebooted))
    results = []
    for name, selection, selected in boots:
        started = time.monotonic()
        say(f"=== real kernel: {name} ({selection}): {' '.join(os.path.basename(f) for f in selected)} ===", f"[{lane}] ")
        rc = boot(pytest_in_guest(workdir, name, selection, selected, argv), workdir, disks, lane=lane, cpus=LANE_CPUS)
        if rc == NO_TESTS_SELECTED and argv:
            rc = 0  # a -k/-m selection of the caller's that has nothing in this boot
        passed, failed, skipped = counts(os.path.join(workdir, f"{name}.xml"))
        say(f"=== {name}: exit {rc}, {passed} passed, {failed} failed, {time.monotonic() - started:.0f} s ===", f"[{lane}] ")
        results.append((rc, passed, failed, skipped))
    for image in disks.values():
        os.unlink(image)  # sparse, but the slabs written into them add up over runs
    return results


def main(argv) -> int:
    subprocess.run([os.path.join(REPO, "packaging", "build")], check=True)
    started = time.monotonic()
    here = os.path.join(REPO, "tests", "realkernel")
    files = sorted(n for n in os.listdir(here) if n.startswith("test_") and n.endswith(".py"))
    plan = plan_lanes(files, FILE_MINUTES)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    lanes = {
        chr(ord("a") + i): (lambda name, lane_files=lane_files: run_lane(
            name, [f"tests/realkernel/{f}" for f in lane_files], stamp, argv))
        for i, lane_files in enumerate(plan)
    }
    results = [r for lane in in_lanes(lanes).values() for r in lane]
    passed = sum(r[1] for r in results)
    failed = sum(r[2] for r in results)
    bad = any(r[0] != 0 for r in results)
    print(f"real-kernel: {passed} passed, {failed} failed, {(time.monotonic() - started) / 60:.1f} min")
    return 1 if bad or failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
