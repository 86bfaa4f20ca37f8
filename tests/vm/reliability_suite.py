"""Run the reliability scenarios (tests/reliability) in a throw-away VM and write docs/reliability.md.

    python -m tests.vm.reliability_suite [--level short|full] [--only crash,faults,...] [--provisioning thick|thin|both]
    python -m tests.vm.reliability_suite --merge RESULTS.json RESULTS.json ...

Two guests side by side, each on blank disks of its own with its share of the scenarios (--order:
one guest, in that order); each writes its figures into its results dir (the VM's only way out),
and this side turns them into one report. With --provisioning both (the default) every scenario
runs twice, on a thick node and then on a thin one (its figures named NAME-thin). Exit status: non-zero if any target is
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

from tests.reliability import figures_name

from . import soak_suite
from .launch import LANE_CPUS, REPO, boot, in_lanes, make_disks, say
from .realkernel_suite import DISKS_MB

REPORT = os.path.join(REPO, "docs", "reliability.md")
SCENARIO_NAMES = ("crash", "faults", "reboot", "storm", "hostile")
# Two guests side by side (see launch.in_lanes), each on disks of its own, with about the same
# share of the work.
# The split per level, from the scenarios' seconds in one guest (short: 2026-12-02, 258 s and
# 257 s; full: docs/reliability.md's runs, about 2,900 s and 3,200 s).
LANES = {
    "short": {"a": ("crash", "hostile"), "b": ("faults", "storm", "reboot")},
    "full": {"a": ("crash", "storm", "reboot"), "b": ("faults", "hostile")},
}
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
    "In thin mode the vanishing-disk trial's first mount failed with LVM's \"Not enough space for thin pool "
    "creation\" on the 71 MiB spare disk: the pool's 64 MiB metadata and LVM's spare copy of it did not fit. On a "
    "small device the two now take at most an eighth of it (volume_group.thin_metadata_bytes).",
]

# What a hostile user of the node or a hostile pod tried (issue #14, items 1 to 3), what the
# driver and the installer did, and which test shows it; kept here because the report is
# rewritten on every run. Each entry: (what was tried, what held, the tests).
SECURITY = [
    ("An unprivileged user names a process `kubelet` (prctl PR_SET_NAME) with `--volume-plugin-dir` set to a "
     "dir it owns, and waits for root to run `install.sh` without `--plugin-dir`, as the README says: before, "
     "install.sh staged the driver there and ran the staged file for its checks, which the user could swap.",
     "Only a kubelet root runs from a file only root can change chooses the plugin dir; that one is passed over "
     "with a line naming its pid, the default dir is used, and nothing is created in the user's dir.",
     "hostile trial \"install.sh as root, no --plugin-dir, while uid 65534 runs a process named kubelet\"; "
     "tests/packaging/test_install.py (a process another user named kubelet)"),
    ("Root's own kubelet names a plugin dir another user owns (or one group-writable, under another user's dir, "
     "or a link).",
     "install.sh refuses it, naming the dir and why; the installed driver is not replaced, nothing is staged.",
     "hostile trial \"install.sh as root ... while root's kubelet names /tmp/ax-hostile-plugins\"; "
     "tests/packaging/test_install.py (a plugin dir others can change is refused)"),
    ("A config written so that a line-matching reader takes other values than the driver (a key in capitals, "
     "`key: value`, a value continued on an indented line, a section the driver refuses), then "
     "`uninstall.sh --purge`: before, sed read it, and the purge removed another volume group, log and run dir "
     "than the driver's, or purged a config the driver refuses.",
     "uninstall.sh reads the config with the driver's own parser (`ax-vol-plugin config`), runs that admin "
     "command only if root alone can change it, and stops, removing nothing, on a config the driver refuses. "
     "install.sh reads no value from the config: it writes it and checks it with `ax-vol-plugin doctor`.",
     "tests/packaging/test_install.py (purge removes what the driver reads; refuses a config the driver "
     "refuses; never runs an admin command others can change); tests/unit/admin/test_configuration.py"),
    ("The owner of the metrics dir (Debian's textfile dir lies under the prometheus user's home) plants links "
     "to a root-only file at `.ax_vol_plugin.prom.<pid>` for every coming pid; the same with a root-owned "
     "metrics dir inside a dir that user owns: before, one rejected mount truncated the linked file.",
     "The driver writes no metrics into a dir anyone but root can change: metrics are off, each call's log line "
     "says why (`metrics_error`), and the linked file is untouched; the calls' answers are unchanged.",
     "hostile trials \"metrics_dir owned by uid 65534 ...\" and \"metrics_dir root's but inside a dir uid 65534 "
     "owns\"; tests/unit/test_metrics.py; tests/packaging/test_dist_and_install.py (links planted for the log "
     "and the metrics)"),
    ("A link left at the temp name in a metrics dir only root can change, and a link where the call log, its "
     "rotations, the counters or a lock file will be.",
     "Nothing is opened through a link (O_NOFOLLOW); a temp file is always new (O_EXCL): the link is removed, "
     "not followed, and the metrics are written.",
     "hostile trial \"metrics_dir only root can change, a link left at the temp name\"; "
     "tests/unit/system/test_files.py"),
    ("A pod asks for more than the whole free space, so that every other tenant's warm slab would be evicted "
     "for it.",
     "With `max_size_mb` set, a request above it is one clean JSON Failure naming the cap: nothing is created "
     "or evicted, every free slab stays free (on a blank disk not even the volume group is made).",
     "hostile trial \"max_size_mb 128 ...\"; tests/realkernel/test_space.py (more than max_size_mb creates "
     "and evicts nothing); tests/unit/test_pool.py"),
    ("A pod supplies a 5,000-character option value (or any long value) to fill kubelet's events and the "
     "call log.",
     "An error message quotes at most 80 characters of any pod-supplied value, with its length; the call log "
     "line carries the same message.",
     "hostile trial \"max_size_mb 128 ... then one with a 5,000-character cache_scope\"; "
     "tests/unit/test_options.py (a long pod-supplied value is quoted to 80 characters)"),
    ("Many tiny slabs to fill the volume group's LVM metadata area, after which every lvcreate and tag change "
     "fails node-wide.",
     "New slabs are refused (one clean JSON Failure naming the metadata area) while LVM's text still has room "
     "for every free slab to be claimed; free slabs are evicted first, least recently used, to make room. "
     "No lvcreate or tag change fails, warm slabs are still handed out and every unmount works.",
     "tests/realkernel/test_space.py (new slabs are refused before the metadata area fills); "
     "tests/unit/test_pool.py; faults trial \"volume group with a full metadata area\""),
]


def main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", choices=("short", "full"), default="full")
    parser.add_argument("--only", default="")
    parser.add_argument("--order", default="", help="scenario names in the order to run them")
    parser.add_argument("--report", default=REPORT, help="where to write the report (default: docs/reliability.md)")
    parser.add_argument("--merge", nargs="+", metavar="RESULTS", help="write the report from these runs' results")
    parser.add_argument("--provisioning", choices=("thick", "thin", "both"), default="both")
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
    wanted = [n for n in SCENARIO_NAMES if not args.only or n in args.only.split(",")]
    order = [n for n in args.order.split(",") if n] or wanted
    started = time.monotonic()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    lanes = {name: [n for n in order if n in group] for name, group in LANES[args.level].items()}
    lanes = {name: group for name, group in lanes.items() if group}
    if args.order:
        lanes = {"a": order}  # the caller's order is one sequence: one guest
    modes = ("thick", "thin") if args.provisioning == "both" else (args.provisioning,)
    runs, missed = [], []
    for mode in modes:  # one mode after the other: two lanes are what the machine's cores hold
        outcome = in_lanes({name: lambda name, group=group, mode=mode: run_lane(name, group, args.level, stamp, mode)
                            for name, group in lanes.items()})
        for name, (rc, results) in outcome.items():
            wanted_here = [figures_name(n, mode) for n in lanes[name]]
            if results is None:
                missed += [f"{n}: did not run (lane {name}: no results, guest exit {rc})" for n in wanted_here]
                continue
            got = [s["name"] for s in results["scenarios"]]
            missed += [f"{n}: did not run (guest exit {rc})" for n in wanted_here if n not in got]
            if rc != 0 and all(n in got for n in wanted_here):
                missed.append(f"lane {name} ({mode}): guest exit {rc}")
            results.update(revision=revision)
            runs.append(results)
    elapsed = time.monotonic() - started
    missed += [f"{s['name']}: {m}" for s in merged_scenarios(runs) for m in missed_targets(s)]
    if runs:
        write_report(args.report, runs, missed, command="make reliability" if args.level == "full" else "make reliability-short")
        print(f"reliability: report written to {os.path.relpath(args.report, REPO)}")
    for line in missed:
        print(f"reliability: target missed: {line}", file=sys.stderr)
    print(f"reliability ({args.level}): {len(missed)} targets missed, {elapsed / 60:.1f} min")
    return 1 if missed or not runs else 0


def run_lane(lane: str, scenarios: list, level: str, stamp: str, provisioning: str = "thick"):
    """One guest on blank disks of its own, running `scenarios` in order on a node of that
    provisioning mode. Returns the guest's exit status and its results (None if it wrote none)."""
    workdir = os.path.join(REPO, ".vm", f"reliability-{stamp}-{provisioning}-{lane}")
    os.makedirs(workdir)
    disks = make_disks(workdir, DISKS_MB)
    results_path = os.path.join(workdir, "reliability.json")
    command = [sys.executable, "-m", "tests.reliability", "--level", level, "--out", results_path,
               "--order", ",".join(scenarios), "--provisioning", provisioning]
    started = time.monotonic()
    rc = boot(command, workdir, disks, timeout_s=TIMEOUT_S[level], lane=lane, cpus=LANE_CPUS)
    elapsed = time.monotonic() - started
    for image in disks.values():
        os.unlink(image)
    try:
        with open(results_path) as handle:
            results = json.load(handle)
    except (OSError, ValueError) as err:
        say(f"reliability: no results from the guest ({err}); guest exit {rc}", f"[{lane}] ")
        return rc, None
    results.update(level=level, minutes=round(elapsed / 60, 1), lane=lane, cpus=LANE_CPUS)
    with open(results_path, "w") as handle:  # what --merge reads later
        json.dump(results, handle, indent=1)
    say(f"reliability: {', '.join(scenarios)}: guest exit {rc}, {elapsed / 60:.1f} min", f"[{lane}] ")
    return rc, results


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


def lane_of(run: dict) -> str:
    return f" in lane {run['lane']} beside the other" if run.get("lane") else ""


def security_section() -> list:
    """The report's lines on SECURITY, from the blank line that opens them."""
    lines = ["", "## Security: what was tried, what held", "",
             "What a hostile user of the node or a hostile pod tried against root (issue #14, items 1 to 3).", "",
             "| tried | what held | shown by |", "|---|---|---|"]
    return lines + [f"| {tried} | {held} | {shown} |" for tried, held, shown in SECURITY]


def write_report(path: str, runs: list, missed: list, command: str = "") -> None:
    scenarios = merged_scenarios(runs)
    if not command:
        command = "python -m tests.vm.reliability_suite --merge " + " ".join("RESULTS" for _ in runs)

    def describe(run: dict) -> str:
        used = [s["name"] for s in scenarios if s["run"] is run]
        return (f"the run of {run['started']} ({run.get('level', 'full')} level, "
                f"{run.get('provisioning', 'thick')} provisioning, driver built from "
                f"{run.get('revision', 'unknown')}, {run.get('minutes', '?')} minutes{lane_of(run)}, kernel {run['kernel']}): "
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
        "device-mapper device without its LV, volume group free space + the extents its LVs hold (thick "
        "slabs, or a thin pool) = volume group size, no "
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
    lines += security_section()
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
    # make soak's report (docs/soak.md) is a section of this file: kept when this file is rewritten.
    soak = soak_suite.reliability_section()
    if soak:
        lines += ["", *soak]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
