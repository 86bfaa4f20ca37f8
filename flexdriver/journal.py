"""The call log: one JSON line per driver call, appended to the configured log file.

Each line is written with a single write(2) on an O_APPEND descriptor, so lines from concurrent
calls never interleave. Logging must never break a call: if the file cannot be written, the
line is dropped.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict


class CallRecord:
    def __init__(self, verb: str) -> None:
        self.started = time.monotonic()
        self.fields: Dict[str, Any] = {"verb": verb}

    def note(self, **fields: Any) -> None:
        self.fields.update({k: v for k, v in fields.items() if v is not None})

    def line(self, outcome: str, message: str) -> str:
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "pid": os.getpid(),
            **self.fields,
            "outcome": outcome,
            "message": message,
            "duration_s": round(time.monotonic() - self.started, 3),
        }
        return json.dumps(record, sort_keys=False, default=str) + "\n"


def append(path: str, line: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except OSError:
        return
    try:
        os.write(fd, line.encode("utf-8", errors="replace"))
    except OSError:
        pass
    finally:
        os.close(fd)
