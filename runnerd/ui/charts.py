"""The Runner page's chart of its last runs, as inline SVG built here (no script, no
style attribute: the CSP forbids both; the colours are ui.css's, by class).

A pure function of the bars it is given, so its shape is unit-tested without a page."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from .views import duration

BAR_WIDTH = 10
BAR_GAP = 2
HEIGHT = 60
MIN_BAR = 2  # a run with no duration yet (pending) still shows as a sliver


@dataclass(frozen=True)
class Bar:
    """One run: its outcome (its status: succeeded, failed, running, pending), how
    long it took (None while it has not started) and where its page is."""

    run_id: str
    status: str
    duration_ms: int | None
    href: str


def runs_chart(bars: Sequence[Bar]) -> Markup:
    """`svg#runs-chart`: a bar per run in the order given (oldest first), height in
    proportion to the longest duration among them, class the run's status, each with
    a `<title>` (id, status, duration) and a link to the run's page."""
    width = max(1, len(bars)) * (BAR_WIDTH + BAR_GAP)
    longest = max((b.duration_ms or 0 for b in bars), default=0)
    parts = [
        f'<svg id="runs-chart" class="chart" role="img" width="{width}" height="{HEIGHT}"'
        f' viewBox="0 0 {width} {HEIGHT}" aria-label="Duration of the last {len(bars)} runs">'
    ]
    for i, bar in enumerate(bars):
        ms = bar.duration_ms or 0
        height = max(MIN_BAR, round(HEIGHT * ms / longest)) if longest else MIN_BAR
        x = i * (BAR_WIDTH + BAR_GAP)
        title = f"{bar.run_id}: {bar.status}, {duration(bar.duration_ms)}"
        parts.append(
            f'<a href="{escape(bar.href)}">'
            f'<rect class="bar {escape(bar.status)}" data-run-id="{escape(bar.run_id)}"'
            f' x="{x}" y="{HEIGHT - height}" width="{BAR_WIDTH}" height="{height}">'
            f"<title>{escape(title)}</title></rect></a>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
