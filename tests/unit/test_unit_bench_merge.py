"""`python -m bench --only P8 --merge --out docs/benchmarks.md` updates one figure in
place: its rows and notes replaced or added in figure order, every other figure's kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import report
from bench.common import FigureResult, Row

DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
INFO = {"date": "2026-12-02 15:00 UTC", "load average (1/5/15 min)": "1.0 1.0 1.0 at end"}


def figure(key: str, label: str) -> FigureResult:
    row = Row(f"{key} {label}: a page", "p50 1.0 ms, p99 2.0 ms", "p50 1.0 ms", 2.0, "≤ 5", True)
    return FigureResult(key, label, f"How {key} is measured.", rows=[row], details=[f"{key} x"])


def table_keys(text: str) -> list[str]:
    table = text.split("### Table")[1].split("### Method")[0]
    return [k for ln in table.splitlines() if (k := report._row_key(ln))]


def test_merging_a_new_figure_keeps_every_other_figures_rows_and_notes() -> None:
    old = DOC.read_text()
    block = report.merge(old, [figure("P10", "later")], quick=False, wall_seconds=60, info=INFO)
    inside = old.split(report.BEGIN)[1].split(report.END)[0]
    before = [ln for ln in inside.splitlines() if ln.startswith("| P")]
    for line in before:
        assert line in block
    keys = table_keys(block)
    assert keys == sorted(keys, key=report._key_order) and keys[-1] == "P10"
    assert "**P10 later** (0 s). How P10 is measured." in block
    assert "- P10 x" in block and "**P7 schedules**" in block
    in_file = sorted({k for ln in before if (k := report._row_key(ln))}, key=report._key_order)
    assert f"Figures: {', '.join([*in_file, 'P10'])}." in block
    assert "Updated in place: P10 ran on 2026-12-02 15:00 UTC" in block
    assert block.startswith(report.BEGIN) and block.rstrip().endswith(report.END)


def test_merging_a_figure_again_replaces_its_rows_and_notes() -> None:
    once = report.merge(
        DOC.read_text(), [figure("P8", "dashboard")], quick=False, wall_seconds=60, info=INFO
    )
    text = DOC.read_text().split(report.BEGIN)[0] + once
    twice = report.merge(text, [figure("P5", "history")], quick=False, wall_seconds=6, info=INFO)
    assert table_keys(twice).count("P5") == 1 and table_keys(twice).count("P8") == 1
    assert "| P5 history: a page |" in twice and "list first page (1,000,000 runs)" not in twice
    assert twice.count("**P5 history**") == 1 and "How P5 is measured." in twice
    assert "**P8 dashboard** (0 s). How P8 is measured." in twice


def test_a_quick_run_is_not_merged_into_a_full_runs_file() -> None:
    with pytest.raises(ValueError, match="other mode"):
        report.check_mergeable(DOC.read_text(), quick=True)
    with pytest.raises(ValueError, match="no generated block"):
        report.check_mergeable("# nothing generated here\n", quick=False)


def test_merging_a_figure_again_replaces_its_updated_in_place_line_and_keeps_others() -> None:
    text = DOC.read_text()
    for key, date in (("P8", "2026-12-02 15:00 UTC"), ("P10", "2026-12-02 16:00 UTC")):
        info = {**INFO, "date": date}
        block = report.merge(text, [figure(key, key)], quick=False, wall_seconds=6, info=info)
        text = text.split(report.BEGIN)[0] + block
    again = {**INFO, "date": "2026-12-02 17:00 UTC"}
    block = report.merge(text, [figure("P8", "P8")], quick=False, wall_seconds=6, info=again)
    updates = [
        ln
        for ln in block.splitlines()
        if ln.startswith(("Updated in place: P8", "Updated in place: P10"))
    ]
    assert [u.split(" against")[0].split(" (")[0] for u in updates] == [
        "Updated in place: P8 ran on 2026-12-02 17:00 UTC",
        "Updated in place: P10 ran on 2026-12-02 16:00 UTC",
    ]
