"""The benchmark suite's quick mode runs end to end, so `python -m bench` never rots.

No timing is asserted (this machine is shared and noisy): only that every figure
P1–P8 ran and produced a numeric ratio in the table it writes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIGURES = [f"P{i}" for i in range(1, 9)]
RATIO = re.compile(r"^\d+(\.\d+)?×$")


@pytest.mark.bench
@pytest.mark.timeout(420)
def test_bench_quick_mode_writes_a_ratio_for_every_figure(
    tmp_path: Path, docker_engine: str
) -> None:
    out = tmp_path / "benchmarks.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=360,
    )
    log = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0, log

    text = out.read_text()
    assert "Docker engine" in text and "### Machine" in text, text
    ratios: dict[str, list[str]] = {f: [] for f in FIGURES}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not re.match(r"^P\d\b", cells[0]):
            continue
        ratios[cells[0][:2]].append(cells[3])
    for figure in FIGURES:
        assert ratios[figure], f"no row for {figure} in the table:\n{text}"
        assert any(RATIO.match(r) for r in ratios[figure]), (
            f"{figure} has no numeric ratio: {ratios[figure]}\n{text}"
        )
    # the printed table carries the same figures
    for figure in FIGURES:
        assert re.search(rf"^{figure} ", proc.stdout, re.M), proc.stdout
