"""Inside the VM: run the scenarios and write their figures as JSON into the run's results dir.

    python -m tests.reliability --level short|full --out RESULTS.json [--only NAME,...] [--provisioning thin]

Refuses to start unless it is in the run's VM with the run's disks (the checks of
tests/realkernel/conftest.py), since it wipes them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

import pytest

from . import figures_name


def main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", choices=("short", "full"), required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--order", default="", help="comma-separated scenario names, in the order to run them")
    parser.add_argument("--provisioning", choices=("thick", "thin"), default="thick",
                        help="the node's provisioning mode; a thin run's scenarios are named NAME-thin")
    args = parser.parse_args(argv)
    # Read by tests.realkernel.conftest on import: every config the scenarios write names the mode.
    os.environ["AX_TEST_PROVISIONING"] = args.provisioning

    from tests.realkernel import conftest

    try:
        conftest.prepare_node()
    except pytest.exit.Exception as refusal:
        print(f"reliability: {refusal}", file=sys.stderr)
        return 3

    from .harness import run_scenario
    from .scenarios import LEVELS, SCENARIOS

    level = LEVELS[args.level]
    only = {name for name in args.only.split(",") if name}
    results = {
        "level": args.level,
        "kernel": platform.release(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "provisioning": args.provisioning,
        "scenarios": [],
    }
    def save(current=None):
        done = list(results["scenarios"]) + ([dataclasses.asdict(current)] if current is not None else [])
        with open(args.out + ".part", "w") as handle:
            json.dump(dict(results, scenarios=done), handle, indent=1)
        os.replace(args.out + ".part", args.out)

    order = [n for n in args.order.split(",") if n] or [name for name, _, _ in SCENARIOS]
    by_name = {name: (title, body) for name, title, body in SCENARIOS}
    for name in order:
        if only and name not in only:
            continue
        title, body = by_name[name]
        if args.provisioning == "thin":
            name, title = figures_name(name, args.provisioning), f"{title} (thin provisioning)"
        figures = run_scenario(name, title, lambda s, body=body: body(s, level), progress=save)
        results["scenarios"].append(dataclasses.asdict(figures))
        save()
    missed = [f"{s['name']}: {m}" for s in results["scenarios"] for m in _missed(s)]
    for line in missed:
        print(f"reliability: target missed: {line}", file=sys.stderr)
    return 1 if missed else 0


def _missed(figures: dict) -> list:
    from .harness import Figures

    return Figures(**figures).missed()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
