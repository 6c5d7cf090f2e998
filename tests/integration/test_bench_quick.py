"""The benchmark suite's quick mode runs end to end, so `python -m bench` never rots:
on Docker every figure, on Podman (`--engine podman`) the big-logs figure P4, whose
row docs/benchmarks.md quotes for Podman.

No timing is asserted (this machine is shared and noisy): only that every figure
ran and produced a numeric ratio in the table it writes, and that P4's capture on
Podman was byte-exact.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import podman_host
from tests.harness import TEST_IMAGE

ROOT = Path(__file__).resolve().parents[2]
# Every figure a plain run has: all but the opt-in P9 (its swarm has its own test).
FIGURES = [f"P{i}" for i in range(1, 12) if i != 9]
RATIO = re.compile(r"^\d+(\.\d+)?×$")
# The engines the suite runs against (tests/run.sh exports it; RUNNERD_TEST_ENGINES=docker
# leaves Podman out, and then its bench test below is not collected at all).
TEST_ENGINES = os.environ.get("RUNNERD_TEST_ENGINES", "docker,podman").split(",")


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=360,
        env={**os.environ, **(env or {})},
    )


def table_rows(text: str) -> list[list[str]]:
    """The cells of every figure row of a written table."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and re.match(r"^P\d+\b", cells[0]):
            rows.append(cells)
    return rows


@pytest.mark.bench
@pytest.mark.timeout(420)
@pytest.mark.docker_only("bench's default engine is Docker; Podman's figure has its own test below")
def test_bench_quick_mode_writes_a_ratio_for_every_figure(
    tmp_path: Path, docker_engine: str
) -> None:
    out = tmp_path / "benchmarks.md"
    proc = bench("--quick", "--out", str(out))
    log = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0, log

    text = out.read_text()
    assert "Docker engine" in text and "### Machine" in text, text
    ratios: dict[str, list[str]] = {f: [] for f in FIGURES}
    for cells in table_rows(text):
        figure = re.match(r"P\d+", cells[0])
        assert figure is not None and figure[0] in ratios, cells
        ratios[figure[0]].append(cells[3])
    for figure in FIGURES:
        assert ratios[figure], f"no row for {figure} in the table:\n{text}"
        assert any(RATIO.match(r) for r in ratios[figure]), (
            f"{figure} has no numeric ratio: {ratios[figure]}\n{text}"
        )
    # the printed table carries the same figures
    for figure in FIGURES:
        assert re.search(rf"^{figure}\b", proc.stdout, re.M), proc.stdout


@pytest.mark.docker_only("it points bench's --engine podman at Docker's socket")
def test_bench_refuses_an_engine_other_than_the_one_asked_for(docker_engine: str) -> None:
    """A figure labelled Podman but measured on Docker would be worse than none."""
    docker = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    proc = bench("--quick", "--only", "P4", "--engine", "podman", "--podman-host", docker)
    assert proc.returncode == 2, proc.stderr
    assert f"--engine podman, but Docker {docker_engine} answers at {docker}" in proc.stderr
    assert "--engine docker measures it" in proc.stderr


if "podman" in TEST_ENGINES:

    @pytest.fixture(scope="module")
    def podman() -> str:
        """Podman's socket (as bench finds it: RUNNERD_BENCH_PODMAN_HOST, else the
        suite's RUNNERD_TEST_PODMAN_HOST), answering and with the test image, or
        the test fails loudly."""
        host = podman_host()
        env = {**os.environ, "DOCKER_HOST": host}
        for args in (["version"], ["image", "inspect", TEST_IMAGE]):
            proc = subprocess.run(
                ["docker", *args], capture_output=True, text=True, env=env, timeout=60
            )
            if proc.returncode != 0:
                pytest.fail(
                    f"`docker {' '.join(args)}` fails against Podman at {host} (tests/run.sh "
                    f"starts it; RUNNERD_TEST_ENGINES=docker leaves it out):\n{proc.stderr}"
                )
        return host

    @pytest.mark.bench
    @pytest.mark.timeout(420)
    def test_bench_on_podman_measures_big_logs_byte_exact_against_podmans_plain_read(
        tmp_path: Path, podman: str
    ) -> None:
        out = tmp_path / "benchmarks.md"
        proc = bench(
            "--quick",
            "--engine",
            "podman",
            "--podman-host",
            podman,
            "--only",
            "P4",
            "--out",
            str(out),
        )
        log = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-6000:]}"
        assert proc.returncode == 0, log
        assert "on Podman " in proc.stderr and f"at {podman}" in proc.stderr, log

        text = out.read_text()
        assert re.search(
            rf"^\| Podman engine \| \S+ \(root\w+, API .*\) at {re.escape(podman)} \|$", text, re.M
        ), text
        assert "Mode: quick (`python -m bench --quick --engine podman`" in text, text
        rows = table_rows(text)
        assert [cells[0] for cells in rows] == [
            "P4 (Podman) big logs (32.0 MiB, byte-exact: yes; runnerd reads it twice: "
            "live follow, then a check against a plain read)"
        ], text
        assert RATIO.match(rows[0][3]), rows
        assert "**P4 (Podman) big logs**" in text and "podman service" in text, text
        assert "Byte-exact: the followed stream, the plain GET and `docker logs` each gave" in text

    def test_bench_on_docker_refuses_a_podman_socket(podman: str) -> None:
        proc = bench("--quick", "--only", "P4", env={"DOCKER_HOST": podman})
        assert proc.returncode == 2, proc.stderr
        assert "--engine docker, but Podman " in proc.stderr, proc.stderr
        assert f"answers at {podman} (--engine podman measures it)" in proc.stderr
