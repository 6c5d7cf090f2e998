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
    block = report.merge(old, [figure("P99", "later")], quick=False, wall_seconds=60, info=INFO)
    inside = old.split(report.BEGIN)[1].split(report.END)[0]
    before = [ln for ln in inside.splitlines() if ln.startswith("| P")]
    for line in before:
        assert line in block
    keys = table_keys(block)
    assert keys == sorted(keys, key=report._key_order) and keys[-1] == "P99"
    assert "**P99 later** (0 s). How P99 is measured." in block
    assert "- P99 x" in block and "**P7 schedules**" in block
    in_file = sorted({k for ln in before if (k := report._row_key(ln))}, key=report._key_order)
    assert f"Figures: {', '.join([*in_file, 'P99'])}." in block
    assert "Updated in place: P99 ran on 2026-12-02 15:00 UTC" in block
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


def test_merging_a_whole_run_takes_its_machine_and_keeps_only_other_figures_merges() -> None:
    """`python -m bench --merge`: the default figures ran, so the block is theirs (mode
    line, machine table), and P9's row and its "Updated in place" line stay."""
    text = DOC.read_text()
    for key in ("P9", "P8"):  # earlier merges: one of a figure the whole run has, one not
        block = report.merge(text, [figure(key, key)], quick=False, wall_seconds=6, info=INFO)
        text = text.split(report.BEGIN)[0] + block
    info = {**INFO, "CPU": "a test CPU", "date": "2026-12-09 09:00 UTC"}
    results = [figure("P1", "overhead"), figure("P8", "dashboard")]
    block = report.merge(text, results, quick=False, wall_seconds=600, info=info, whole=True)
    assert "| CPU | a test CPU |" in block and "| date | 2026-12-09 09:00 UTC |" in block
    assert "Wall time: 10.0 min." in block
    updates = [ln for ln in block.splitlines() if ln.startswith("Updated in place: ")]
    assert [u.split(" ran on ")[0] for u in updates if "P8" in u.split(" ran on ")[0]] == []
    assert any(u.startswith("Updated in place: P9 ran on") for u in updates), updates
    assert "| P9 P9: a page |" in block and "| P8 dashboard: a page |" in block
    keys = table_keys(block)
    assert f"Figures: {', '.join(sorted(set(keys), key=report._key_order))}." in block
