"""The Runner page's chart (runnerd/ui/charts.py): a bar per run, classed by outcome,
height in proportion to duration, titled and linked, and nothing unescaped."""

from __future__ import annotations

import re

from runnerd.ui.charts import HEIGHT, MIN_BAR, Bar, runs_chart


def heights(svg: str) -> list[int]:
    return [int(h) for h in re.findall(r'<rect [^>]*height="(\d+)"', svg)]


def test_a_bar_per_run_in_order_classed_by_its_status() -> None:
    svg = runs_chart(
        [
            Bar("a", "succeeded", 1000, "/ui/runners/r/runs/a"),
            Bar("b", "failed", 500, "/ui/runners/r/runs/b"),
            Bar("c", "running", 250, "/ui/runners/r/runs/c"),
            Bar("d", "pending", None, "/ui/runners/r/runs/d"),
        ]
    )
    assert svg.startswith('<svg id="runs-chart"') and svg.endswith("</svg>")
    assert re.findall(r'<rect class="bar (\w+)" data-run-id="(\w)"', svg) == [
        ("succeeded", "a"),
        ("failed", "b"),
        ("running", "c"),
        ("pending", "d"),
    ]


def test_heights_are_in_proportion_to_the_longest_and_a_pending_run_is_a_sliver() -> None:
    svg = runs_chart(
        [
            Bar("a", "succeeded", 1000, "/a"),
            Bar("b", "failed", 500, "/b"),
            Bar("c", "pending", None, "/c"),
        ]
    )
    assert heights(svg) == [HEIGHT, HEIGHT // 2, MIN_BAR]


def test_each_bar_has_a_title_and_links_to_its_run() -> None:
    svg = runs_chart([Bar("a1", "failed", 12_400, "/ui/runners/r/runs/a1")])
    assert '<a href="/ui/runners/r/runs/a1"><rect' in svg
    assert "<title>a1: failed, 12.4 s</title>" in svg


def test_no_runs_is_an_empty_chart() -> None:
    svg = runs_chart([])
    assert "<rect" not in svg and 'id="runs-chart"' in svg


def test_no_style_attribute_and_values_are_escaped() -> None:
    svg = runs_chart([Bar('"><script>', "<b>", 1, '/x"><script>')])
    assert "style=" not in svg and "<script>" not in svg and "<b>" not in svg
