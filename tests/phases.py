"""Run `make test`'s phases one after another, time each, and end with a table of their minutes.

    python3 tests/phases.py run NAME -- COMMAND...   time one command, record it as phase NAME
    python3 tests/phases.py test PHASE...           `make PHASE` for each, then the table

Every phase runs even when one before it failed, so one run shows every failure; the exit status
is non-zero if any failed. The records go to .vm/phases.json: `make deps` records its own phase
there (it runs before `make test` in CI), and the table shows it with when it ran.

Standard library only: it runs before `make deps` has made the venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDS = os.path.join(REPO, ".vm", "phases.json")


def _load() -> dict:
    try:
        with open(RECORDS) as handle:
            records = json.load(handle)
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def _save(records: dict) -> None:
    os.makedirs(os.path.dirname(RECORDS), exist_ok=True)
    with open(RECORDS + ".part", "w") as handle:
        json.dump(records, handle, indent=1)
    os.replace(RECORDS + ".part", RECORDS)


def run(name: str, argv: list) -> int:
    """Run argv, print and record its wall time under `name`."""
    print(f"=== {name} ===", flush=True)
    started_at = time.time()
    started = time.monotonic()
    rc = subprocess.call(argv)
    seconds = time.monotonic() - started
    records = _load()
    records[name] = {"seconds": round(seconds, 1), "rc": rc, "started": started_at}
    _save(records)
    print(f"=== {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {seconds / 60:.1f} min ===", flush=True)
    return rc


def table(names: list, records: dict, since: float) -> str:
    """The phases in `names`, with deps first when it has a record; a record older than `since`
    (this `make test`'s start) is one of an earlier run and says when it was made."""
    rows = [("phase", "minutes", "result")]
    total = 0.0
    for name in (["deps"] if "deps" in records and "deps" not in names else []) + names:
        record = records.get(name)
        if record is None:
            rows.append((name, "-", "did not run"))
            continue
        result = "ok" if record["rc"] == 0 else f"FAILED (exit {record['rc']})"
        if record["started"] < since:
            result += time.strftime(" (an earlier run, %Y-%m-%d %H:%M)", time.localtime(record["started"]))
        else:
            total += record["seconds"]
        rows.append((name, f"{record['seconds'] / 60:.1f}", result))
    rows.append(("total", f"{total / 60:.1f}", "this run"))
    width = max(len(row[0]) for row in rows)
    return "\n".join(f"{row[0]:<{width}}  {row[1]:>7}  {row[2]}" for row in rows)


def test(phases: list) -> int:
    since = time.time()
    make = os.environ.get("MAKE", "make")
    failed = [name for name in phases if run(name, [make, "--no-print-directory", name]) != 0]
    records = _load()
    # deps ran just before this `make test` if CI's `make deps` did: count it with this run.
    deps = records.get("deps")
    if deps and since - (deps["started"] + deps["seconds"]) < 60:
        since = min(since, deps["started"])
    print("\n" + table(phases, records, since), flush=True)
    if failed:
        print(f"make test: failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


def main(argv: list) -> int:
    if len(argv) >= 3 and argv[0] == "run" and argv[2] == "--":
        return run(argv[1], argv[3:])
    if len(argv) >= 2 and argv[0] == "test":
        return test(argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
