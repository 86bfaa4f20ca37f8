"""make test's phase runner (tests/phases.py): every phase runs, each is timed, failures show."""

from __future__ import annotations

import importlib.util
import os
import sys
import time

import pytest

_SPEC = importlib.util.spec_from_file_location("phases", os.path.join(os.path.dirname(__file__), "..", "phases.py"))
phases = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(phases)


@pytest.fixture
def records(tmp_path, monkeypatch):
    path = tmp_path / "phases.json"
    monkeypatch.setattr(phases, "RECORDS", str(path))
    return path


def test_a_phase_is_timed_and_its_exit_status_kept(records, capsys):
    assert phases.run("lint", [sys.executable, "-c", "import time; time.sleep(0.2); raise SystemExit(3)"]) == 3
    record = phases._load()["lint"]
    assert record["rc"] == 3 and record["seconds"] >= 0.2
    assert "lint: FAILED (exit 3)" in capsys.readouterr().out


def test_every_phase_runs_after_a_failure_and_the_table_names_each(records, tmp_path, monkeypatch, capsys):
    make = tmp_path / "make"
    ran = tmp_path / "ran"
    make.write_text(f'#!/bin/sh\necho "$2" >> {ran}\n[ "$2" != unit ]\n')
    make.chmod(0o755)
    monkeypatch.setenv("MAKE", str(make))
    assert phases.test(["lint", "unit", "realkernel"]) == 1
    assert ran.read_text().split() == ["lint", "unit", "realkernel"]
    out = capsys.readouterr().out
    table = out[out.index("phase "):]
    rows = {line.split()[0]: line for line in table.splitlines()}
    assert "ok" in rows["lint"] and "FAILED (exit 1)" in rows["unit"] and "ok" in rows["realkernel"]
    assert "total" in rows and "make test: failed: unit" in out


def test_deps_of_an_earlier_run_is_shown_with_its_date_and_left_out_of_the_total(records):
    phases._save({"deps": {"seconds": 600.0, "rc": 0, "started": time.time() - 86400},
                  "lint": {"seconds": 60.0, "rc": 0, "started": time.time()}})
    table = phases.table(["lint"], phases._load(), since=time.time() - 10)
    rows = {line.split()[0]: line for line in table.splitlines()}
    assert "an earlier run" in rows["deps"] and rows["deps"].split()[1] == "10.0"
    assert rows["total"].split()[1] == "1.0"


def test_deps_just_before_make_test_counts_in_its_total(records, tmp_path, monkeypatch, capsys):
    phases._save({"deps": {"seconds": 120.0, "rc": 0, "started": time.time() - 125}})
    make = tmp_path / "make"
    make.write_text("#!/bin/sh\nexit 0\n")
    make.chmod(0o755)
    monkeypatch.setenv("MAKE", str(make))
    assert phases.test(["lint"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "earlier" not in rows["deps"] and rows["total"].split()[1] == "2.0"
