"""`make bench`: build the driver, time `init` natively, boot a VM with its own blank disks for
everything else (bench/guest.py), then print the table and write it into docs/benchmarks.md.

  python -m bench.host [--quick] [--only SECTION,...] [--no-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from bench.stats import figure, timed
from tests.vm.launch import REPO, boot, make_disks

DRIVER = os.path.join(REPO, "dist", "vol_plugin")
DOCS = os.path.join(REPO, "docs", "benchmarks.md")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
# The slab disk holds 8 concurrent 10 GiB slabs at once; sparse, so only what is written counts.
# Sizes are odd on purpose: the guest checks each device's exact size before touching it.
DISKS_MB = {"scratch": 120 * 1024 + 3, "node": 1024 + 5}
HOST_INIT_REPS = 50


def host_init(baseline: str, baseline_name: str) -> tuple:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    driver, floor, before = [], [], []
    for _ in range(HOST_INIT_REPS):
        driver.append(timed([DRIVER, "init"], env=env))
        floor.append(timed(["python3", "-I", "-S", "-c", "pass"], env=env))
        if baseline:
            before.append(timed([baseline, "init"], env=env))
    gain = figure("init (host)", driver, before, float("inf"), f"driver at {baseline_name}") if baseline else None
    return figure("init (host, native)", driver, floor, 1.5, "python3 -I -S -c pass"), gain


def build_baseline(revision: str, workdir: str) -> str:
    """The driver as built at `revision`, for before/after figures from this same run."""
    tree = os.path.join(workdir, "baseline-tree")
    os.makedirs(tree)
    archive = subprocess.run(["git", "-C", REPO, "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
    out = os.path.join(workdir, "baseline", "vol_plugin")
    subprocess.run([os.path.join(tree, "packaging", "build"), "--out", out, "--admin-out", os.path.join(tree, "admin")],
                   check=True, capture_output=True)
    return out


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def table(figures) -> str:
    rows = ["| figure | measured, median [min-max] | floor, median | ratio [spread] | target | met |",
            "|---|---|---|---|---|---|"]
    for f in figures:
        m, fl = f["measured"], f["floor"]
        spread = f" [{f['ratio_min']:.2f}-{f['ratio_max']:.2f}]" if f["paired"] else ""
        target = "-" if f["target"] == float("inf") else f"<= {f['target']:g}x{' every pair' if f.get('every') else ''}"
        met = "-" if f["target"] == float("inf") else ("yes" if f["met"] else "**no**")
        rows.append(
            f"| {f['name']} (n={m['n']}) | {fmt_s(m['median'])} [{fmt_s(m['min'])}-{fmt_s(m['max'])}] | "
            f"{fmt_s(fl['median'])} ({f['floor_name']}) | {f['ratio']:.2f}x{spread} | {target} | {met} |"
        )
    return "\n".join(rows)


def bursts(rows_in) -> str:
    """The burst of CI pods after one warm job, a row per provisioning mode."""
    rows = ["| burst of pods after one warm job | image cached | target | disk held after it, against one pod's cache | "
            "target | met | pod to first container, min-max |",
            "|---|---|---|---|---|---|---|"]
    for b in rows_in:
        ratio = b["held_bytes"] / b["one_cache_bytes"]
        targets = (b["target_cached"], b["target_held"])
        met = "-" if targets == (None, None) else (
            "yes" if b["cached"] >= b["target_cached"] and ratio <= b["target_held"] else "**no**")
        seconds = b["seconds_to_container"]
        held_target = "-" if b["target_held"] is None else f"<= {b['target_held']:g}x"
        rows.append(
            f"| {b['pods']} pods, {b['mode']} ({b['image_mb']:.0f} MB image) | {b['cached']} of {b['pods']} | "
            f"{'-' if b['target_cached'] is None else b['target_cached']} | "
            f"{b['held_bytes'] / (1 << 20):.0f} MiB / {b['one_cache_bytes'] / (1 << 20):.0f} MiB = {ratio:.2f}x | "
            f"{held_target} | {met} | "
            f"{fmt_s(seconds[0])}-{fmt_s(seconds[-1])} |"
        )
    return "\n".join(rows)


def commands(counted: dict) -> str:
    rows = ["| call | external commands | LVM processes |", "|---|---|---|"]
    for call, found in counted.items():
        rows.append(f"| {call} | {', '.join(found['programs'])} | {found['lvm']} |")
    return "\n".join(rows)


def render(results: dict, stamp: str) -> str:
    env = results["environment"]
    parts = [
        BEGIN,
        f"Run of {stamp}{' (quick: smaller and fewer, not for the record)' if results.get('quick') else ''}: "
        f"host python {platform.python_version()}, {os.cpu_count()} cores (shared); guest kernel "
        f"{env['kernel']} under qemu (software emulation, {env['cpus']} vCPUs), LVM {env['lvm']}, "
        f"python {env['python']}. Section wall times: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in results.get("timings", {}).items()) + ".",
        "",
        table(results["figures"]),
        "",
    ]
    if results.get("bursts"):
        parts += [bursts(results["bursts"]), ""]
    if results.get("space_returned"):
        given = {way: sorted(b)[len(b) // 2] / (1 << 20) for way, b in results["space_returned"].items()}
        parts += ["Of 128 MiB of files deleted in a thin volume, given back to the thin pool (median): "
                  + ", ".join(f"{way} {mib:.0f} MiB" for way, mib in given.items()) + ".", ""]
    if results.get("gains"):
        parts += [
            f"What the changes since {results['baseline']} bought: this driver against the one built at "
            f"{results['baseline']}, measured alternately in this run (ratio < 1: faster now).",
            "",
            table(results["gains"]),
            "",
        ]
    parts += [
        "External commands per call (strace -f -e trace=execve on the installed driver):",
        "",
        commands(results["commands"]),
        "",
    ]
    for name, text in results["profiles"].items():
        parts += [f"<details><summary>cProfile: {name}</summary>", "", "```", text, "```", "", "</details>", ""]
    parts.append(END)
    return "\n".join(parts)


def write_docs(section: str) -> None:
    try:
        with open(DOCS) as handle:
            text = handle.read()
    except FileNotFoundError:
        text = f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    os.makedirs(os.path.dirname(DOCS), exist_ok=True)
    with open(DOCS + ".tmp", "w") as handle:
        handle.write(head + section + tail)
    os.replace(DOCS + ".tmp", DOCS)


def main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer repetitions, smaller slabs")
    parser.add_argument("--only", default="", help="comma-separated guest sections (init,warm,csi,cold,scale,parallel,dind,thin)")
    parser.add_argument("--no-docs", action="store_true", help="print the table only")
    parser.add_argument("--baseline", default="af74e4c",
                        help="git revision whose driver is measured beside this one (before/after); '' for none")
    args = parser.parse_args(argv)
    subprocess.run([os.path.join(REPO, "packaging", "build")], check=True, stdout=subprocess.DEVNULL)
    started = time.monotonic()
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    workdir = os.path.join(REPO, ".vm", time.strftime("bench-%Y%m%d-%H%M%S"))
    os.makedirs(workdir)
    baseline = build_baseline(args.baseline, workdir) if args.baseline else ""
    print("bench: init on the host...", flush=True)
    native, native_gain = host_init(baseline, args.baseline)
    disks = make_disks(workdir, DISKS_MB)
    env = {"BENCH_QUICK": "1" if args.quick else "0", "BENCH_ONLY": args.only,
           "BENCH_BASELINE": baseline, "BENCH_BASELINE_NAME": args.baseline}
    try:
        rc = boot([sys.executable, "-m", "bench.guest"], workdir, disks, memory="4G", env=env, timeout_s=3600)
    finally:
        for image in disks.values():
            os.unlink(image)
    try:
        with open(os.path.join(workdir, "bench.json")) as handle:
            results = json.load(handle)
    except (OSError, ValueError):
        print(f"bench: the guest wrote no results (exit {rc})", file=sys.stderr)
        return 1
    results["figures"].insert(0, native)
    if native_gain:
        results.setdefault("gains", []).insert(0, native_gain)
    results.setdefault("timings", {})["total"] = time.monotonic() - started
    with open(os.path.join(workdir, "bench.json"), "w") as handle:
        json.dump(results, handle, indent=1)
    section = render(results, stamp)
    print(table(results["figures"]))
    print()
    if results.get("bursts"):
        print(bursts(results["bursts"]))
        print()
    if results.get("gains"):
        print(table(results["gains"]))
        print()
    print(commands(results["commands"]))
    if not args.no_docs:
        write_docs(section)
        print(f"bench: wrote {os.path.relpath(DOCS, REPO)}")
    if rc != 0:
        print(f"bench: the guest exited {rc}; the table holds what it finished", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
