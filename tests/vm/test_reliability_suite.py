"""The reliability report's writer: what it keeps across runs (findings, the security section)."""

from __future__ import annotations

from tests.vm import reliability_suite

SCENARIO = dict(name="hostile", title="hostile input", trials=1, failures=0, leaked=0, double_mounts=0, max_retries=0,
                data_loss=0, seconds=1.0, recoveries=0, retries_total=0, tried=["a trial"], notes=[], problems=[],
                complete=True)


def between(text: str, start: str, end: str) -> str:
    return text[text.index(start):text.index(end)]


def test_every_security_entry_is_a_row_of_the_written_report(tmp_path):
    path = tmp_path / "reliability.md"
    reliability_suite.write_report(str(path), [dict(started="now", kernel="k", scenarios=[SCENARIO])], [])
    section = between(path.read_text(), "## Security: what was tried, what held", "## hostile: ")
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| tried")]
    assert rows == [f"| {tried} | {held} | {shown} |" for tried, held, shown in reliability_suite.SECURITY]
    assert all("|" not in "".join(entry) for entry in reliability_suite.SECURITY), "a | would split a table cell"


def test_the_committed_report_has_the_section_a_run_would_write(tmp_path):
    # docs/reliability.md is only rewritten by a full run; its security section must not drift
    # from the one the next run will write.
    path = tmp_path / "reliability.md"
    reliability_suite.write_report(str(path), [dict(started="now", kernel="k", scenarios=[SCENARIO])], [])
    with open(reliability_suite.REPORT) as handle:
        committed = handle.read()
    start, end = "## What these scenarios found", "\n## crash: "
    assert between(committed, start, end) == between(path.read_text(), start, "\n## hostile: ")
