"""journal.py: the call log, rotated by the calls themselves while many of them write at once.

These run real processes on a real filesystem: rotation is about what the kernel does with
concurrent O_APPEND writers and renames, which no fake would show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from flexdriver import journal
from flexdriver.journal import CallRecord, Rotation

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WRITER = """
import sys
from flexdriver import journal
path, lock, max_bytes, keep, writer, count = sys.argv[1:]
rotation = journal.Rotation(int(max_bytes), int(keep), lock)
for n in range(int(count)):
    journal.append(path, '{"writer": %s, "n": %d, "pad": "%s"}\\n' % (writer, n, "x" * 150), rotation)
"""


def write_concurrently(tmp_path, writers: int, lines: int, max_bytes: int, keep: int) -> str:
    path = str(tmp_path / "driver.log")
    lock = str(tmp_path / "run" / "log.lock")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, path, lock, str(max_bytes), str(keep), str(w), str(lines)], cwd=REPO
        )
        for w in range(writers)
    ]
    assert [p.wait() for p in procs] == [0] * writers
    return path


def log_files(path: str) -> list:
    directory, name = os.path.split(path)
    return sorted(os.path.join(directory, f) for f in os.listdir(directory) if f == name or f.startswith(name + "."))


def test_many_writers_rotating_lose_and_tear_no_line(tmp_path):
    writers, lines, max_bytes = 12, 150, 16 * 1024
    path = write_concurrently(tmp_path, writers, lines, max_bytes, keep=100)
    seen = []
    files = log_files(path)
    assert len(files) > 10, "the log must have been rotated many times"
    for name in files:
        with open(name) as handle:
            text = handle.read()
        assert text.endswith("\n")
        seen += [json.loads(line) for line in text.splitlines()]  # a torn line would not parse
        # Over the limit by at most what the writers that raced the rotation added.
        assert os.path.getsize(name) <= max_bytes + writers * 200
    assert sorted((r["writer"], r["n"]) for r in seen) == [(w, n) for w in range(writers) for n in range(lines)]


def test_only_keep_rotated_files_are_kept(tmp_path):
    path = write_concurrently(tmp_path, writers=4, lines=200, max_bytes=8 * 1024, keep=3)
    assert [os.path.basename(f) for f in log_files(path)] == ["driver.log", "driver.log.1", "driver.log.2", "driver.log.3"]


def test_no_limit_never_rotates(tmp_path):
    path = write_concurrently(tmp_path, writers=2, lines=100, max_bytes=0, keep=5)
    assert log_files(path) == [path]


def test_an_unwritable_log_drops_the_line_without_raising(tmp_path):
    journal.append(str(tmp_path / "missing-dir" / "driver.log"), "x\n", Rotation(10, 1, str(tmp_path / "lock")))
    assert not (tmp_path / "missing-dir").exists()


def test_call_record_line_carries_fields_outcome_and_duration():
    record = CallRecord("mount")
    record.note(pod="p", slab=None, decision="created new slab")
    line = json.loads(record.line("Success", "ok"))
    assert (line["verb"], line["pod"], line["decision"], line["outcome"], line["message"]) == (
        "mount", "p", "created new slab", "Success", "ok",
    )
    assert "slab" not in line and line["duration_s"] >= 0
