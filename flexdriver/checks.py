"""Findings about a node, shared by the installer's prerequisite checks and `ax-vol-plugin doctor`.

A Check is one question with one answer: what was looked at, whether it is fine, what was seen,
and (when it is not fine) what the admin should do about it.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Check:
    name: str  # short and stable, e.g. "lvm2 tools"; tools match on it
    ok: bool
    detail: str  # what was seen, in a person's words
    fix: str = ""  # what to do when not ok

    def line(self) -> str:
        mark = "ok " if self.ok else "FAIL"
        text = f"{mark} {self.name}: {self.detail}"
        return text if self.ok or not self.fix else f"{text} -> {self.fix}"
