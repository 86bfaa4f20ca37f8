"""Small statistics for benchmark samples: medians and spreads, paired ratios."""

from __future__ import annotations

import statistics
import subprocess
import time
from typing import Dict, List, Sequence


def timed(argv: Sequence[str], env: Dict[str, str] = None, check: bool = True) -> float:
    """Wall seconds of one command, its output captured (as kubelet captures the driver's)."""
    started = time.perf_counter()
    done = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, env=env)
    seconds = time.perf_counter() - started
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {(done.stdout + done.stderr)[-800:]!r}")
    return seconds


def summary(samples: Sequence[float]) -> dict:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "samples": list(samples),
    }


def figure(name: str, measured: List[float], floor: List[float], target: float, floor_name: str, paired: bool = True,
           unit: str = "s", note: str = "", every: bool = False) -> dict:
    """A benchmark figure: the measured samples against their floor's samples.

    Paired samples (taken alternately) give one ratio per pair, so a burst of load on the shared
    machine moves both sides of a pair; the figure is the median of those ratios and the spread
    their range. Unpaired ones give the ratio of the medians. `every`: the target holds for every
    pair (its worst ratio), not for the median one."""
    m, f = summary(measured), summary(floor)
    if paired and len(measured) == len(floor):
        ratios = [a / b for a, b in zip(measured, floor)]
    else:
        ratios = [m["median"] / f["median"]]
    r = summary(ratios)
    return {
        "name": name, "measured": m, "floor": f, "floor_name": floor_name, "unit": unit,
        "ratio": r["median"], "ratio_min": r["min"], "ratio_max": r["max"], "paired": paired and len(ratios) > 1,
        "target": target, "met": (r["max"] if every else r["median"]) <= target, "note": note, "every": every,
    }
