"""Run the reliability scenarios (tests/reliability) in a throw-away VM and write docs/reliability.md.

    python -m tests.vm.reliability_suite [--level short|full] [--only crash,faults,...]
    python -m tests.vm.reliability_suite --merge RESULTS.json RESULTS.json ...

One boot on blank disks; the guest writes its figures into the run's results dir (the VM's only
way out), and this side turns them into the report. Exit status: non-zero if any target is
missed (a failure, a leaked slab, a double mount, a data-loss event, more than two retries to
recover), if the guest could not run, or if a scenario is missing from the results.

--merge writes one report from several runs' results (each run's dir under .vm keeps its
reliability.json): a scenario re-run later replaces the earlier run's figures for it, and the
report names every run it draws on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from .launch import REPO, boot, make_disks
from .realkernel_suite import DISKS_MB

REPORT = os.path.join(REPO, "docs", "reliability.md")
# Generous for a shared machine; short must leave make test inside CI's 90 minutes.
TIMEOUT_S = {"short": 1800, "full": 7200}
COLUMNS = [
    ("trials", "trials"), ("failures", "failures (target 0)"), ("leaked", "leaked slabs (0)"),
    ("double_mounts", "double mounts (0)"), ("max_retries", "most kubelet retries to recover (<= 2)"),
    ("data_loss", "data-loss events (0)"), ("seconds", "seconds"),
]


# Problems runs of these scenarios found in the driver (or in the scenarios themselves), and what
# was changed; kept here because the report is rewritten on every run.
FINDINGS = [
    "A hung `lvm` shell was killed alone: what it had started (a hung child holding its pipes) lived on. "
    "The shell now runs in its own process group, and a timed-out shell is killed with the whole group, "
    "as single commands already were.",
    "An xfs slab under 300 MiB got as far as `lvcreate`, then `mkfs.xfs` refused it (xfsprogs 5.19 and "
    "later). Such a mount is now refused before anything is created, saying why.",
    "A disk that had dropped off made mounts fail with \"device ... is not blank (LVM2_member)\", which read "
    "as a config error. The message now says the PV is not visible to LVM and what that can mean.",
    "The fault scenarios replaced single LVM commands only, so faults in the reads and tag changes the "
    "driver sends through the `lvm` shell went untested (\"lvchange fails\" trials succeeded). Faults now "
    "reach the shell too (tests/reliability/faults.py, LVM_WRAPPER).",
    "The vanishing-disk trial's own set-up failed: a device-mapper map over the whole spare disk showed "
    "LVM the same PV twice, and LVM refuses to change a VG with duplicate PVs. The map now starts 1 MiB in.",
    "One failed trial used to be blamed again in every trial after it (a pod it lost, a process it left); "
    "after a failure the harness now counts what broke once and resynchronises with the node.",
    "Trials whose refused call must change nothing were failed by a legitimate eviction (free slabs left by "
    "earlier trials filled the volume group); they now give that space back first with "
    "`ax-vol-plugin evict --keep 0 --yes`.",
    "The full-metadata trial could not make its volume group (LVM's smallest metadata area is 32 KiB), and then "
    "ran out of extents before metadata; it now uses 1 MiB extents and 1 MiB slabs.",
    "The storm's drain mounted every pod still waiting for room at once, more than the volume group holds; "
    "each now runs and ends in turn, as pods on a full node do.",
]


def main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", choices=("short", "full"), default="full")
    parser.add_argument("--only", default="")
    parser.add_argument("--order", default="", help="scenario names in the order to run them")
    parser.add_argument("--report", default=REPORT, help="where to write the report (default: docs/reliability.md)")
    parser.add_argument("--merge", nargs="+", metavar="RESULTS", help="write the report from these runs' results")
    args = parser.parse_args(argv)
    if args.merge:
        runs = []
        for path in args.merge:
            with open(path) as handle:
                runs.append(json.load(handle))
        missed = [f"{s['name']}: {m}" for s in merged_scenarios(runs) for m in missed_targets(s)]
        write_report(args.report, runs, missed)
        print(f"reliability: report written to {os.path.relpath(args.report, REPO)}")
        return 1 if missed else 0

    revision = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"], capture_output=True,
                              text=True).stdout.strip() or "unknown"
    subprocess.run([os.path.join(REPO, "packaging", "build")], check=True)
    workdir = os.path.join(REPO, ".vm", time.strftime("reliability-%Y%m%d-%H%M%S"))
    os.makedirs(workdir)
    disks = make_disks(workdir, DISKS_MB)
    results_path = os.path.join(workdir, "reliability.json")
    command = [sys.executable, "-m", "tests.reliability", "--level", args.level, "--out", results_path]
    if args.only:
        command += ["--only", args.only]
    if args.order:
        command += ["--order", args.order]
    started = time.monotonic()
    rc = boot(command, workdir, disks, timeout_s=TIMEOUT_S[args.level])
    elapsed = time.monotonic() - started
    for image in disks.values():
        os.unlink(image)
    try:
        with open(results_path) as handle:
            results = json.load(handle)
    except (OSError, ValueError) as err:
        print(f"reliability: no results from the guest ({err}); guest exit {rc}", file=sys.stderr)
        return 1
    expected = [n for n in ("crash", "faults", "reboot", "storm", "hostile") if not args.only or n in args.only.split(",")]
    got = [s["name"] for s in results["scenarios"]]
    missing = [n for n in expected if n not in got]
    missed = [f"{s['name']}: {m}" for s in results["scenarios"] for m in missed_targets(s)]
    missed += [f"{n}: did not run (guest exit {rc})" for n in missing]
    results.update(revision=revision, level=args.level, minutes=round(elapsed / 60, 1))
    with open(results_path, "w") as handle:  # what --merge reads later
        json.dump(results, handle, indent=1)
    write_report(args.report, [results], missed)
    print(f"reliability: report written to {os.path.relpath(args.report, REPO)}")
    for line in missed:
        print(f"reliability: target missed: {line}", file=sys.stderr)
    return 1 if missed or rc != 0 else 0


def missed_targets(s: dict) -> list:
    missed = []
    if s["trials"] == 0:
        missed.append("no trials ran")
    for key, label in (("failures", "failures"), ("leaked", "leaked slabs"), ("double_mounts", "double mounts"),
                       ("data_loss", "data-loss events")):
        if s[key]:
            missed.append(f"{s[key]} {label}")
    if not s.get("complete", True):
        missed.append(f"interrupted after {s['trials']} trials")
    if s["max_retries"] > 2:
        missed.append(f"{s['max_retries']} kubelet retries needed")
    return missed


def merged_scenarios(runs: list) -> list:
    """Each scenario's figures from the last run that has it, in the order they first ran."""
    order, latest = [], {}
    for run in runs:
        for scenario in run["scenarios"]:
            if scenario["name"] not in latest:
                order.append(scenario["name"])
            latest[scenario["name"]] = dict(scenario, run=run)
    return [latest[name] for name in order]


def write_report(path: str, runs: list, missed: list) -> None:
    scenarios = merged_scenarios(runs)
    level = runs[-1].get("level", "full")
    command = "make reliability" if level == "full" else "make reliability-short"
    if len(runs) > 1:
        command = "python -m tests.vm.reliability_suite --merge " + " ".join("RESULTS" for _ in runs)

    def describe(run: dict) -> str:
        used = [s["name"] for s in scenarios if s["run"] is run]
        return (f"the run of {run['started']} ({run.get('level', 'full')} level, driver built from "
                f"{run.get('revision', 'unknown')}, {run.get('minutes', '?')} minutes, kernel {run['kernel']}): "
                f"{', '.join(used) or 'nothing used'}")

    lines = [
        "# Reliability: what was tried on a real kernel, and what held",
        "",
        f"Written by `{command}`. Each run is one VM boot (qemu software emulation, blank disk images); "
        "the driver is the built `dist/vol_plugin`, installed as the docs say and called exactly as kubelet "
        "calls it (`tests/realkernel/node.py`). The figures below are from:",
        "",
        *[f"- {describe(run)}" for run in runs if any(s["run"] is run for s in scenarios)],
        "",
        "Every trial ends with the same invariant checker (`tests/reliability/invariants.py`), which looks from "
        "outside, at LVM's report, the kernel's mount and device-mapper tables, the process list and the pods' "
        "files: each slab is free, in use by exactly one mounted dir, or gone; no slab is mounted twice or on a dir "
        "it is not recorded for; nothing leaked (no slab left half-made or doomed, no LV that is not a slab, no "
        "device-mapper device without its LV, volume group free space + slab sizes = volume group size, no "
        "command the driver started still running); every running pod still has its slab and reads back the "
        "marker file last written into it. Kubelet's retries are counted as calls until Success after the call "
        "that was killed or failed (1 = the first retry worked).",
        "",
        "| scenario | " + " | ".join(label for _, label in COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for s in scenarios:
        cut = "" if s.get("complete", True) else " (interrupted)"
        lines.append(f"| {s['name']}: {s['title']}{cut} | " + " | ".join(str(s[key]) for key, _ in COLUMNS) + " |")
    lines += ["", "**Result: every target met.**" if not missed else "**Targets missed:**", ""]
    lines += [f"- {m}" for m in missed]
    lines += ["", "## What these scenarios found, and what was changed", ""]
    lines += [f"- {finding}" for finding in FINDINGS]
    for s in scenarios:
        lines += ["", f"## {s['name']}: {s['title']}", ""]
        lines.append(f"{s['trials']} trials, {s['recoveries']} recoveries by kubelet's retry "
                     f"({s['retries_total']} calls in all, at most {s['max_retries']} for one).")
        lines += ["", "Tried:", ""]
        lines += [f"- {label}" for label in s["tried"]]
        if s["notes"]:
            lines += ["", "Observed:", ""]
            lines += [f"- {note}" for note in s["notes"]]
        if s["problems"]:
            lines += ["", "Problems found:", ""]
            lines += [f"- {problem}".replace("\n", " ") for problem in s["problems"]]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
