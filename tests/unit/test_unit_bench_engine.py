"""`python -m bench --engine podman` measures runnerd on Podman: every side (runnerd's
daemons, the aiodocker baseline, the docker CLI) is pointed at the same socket, the
baseline containers get Podman's log config, and its figures are keyed `P4 (Podman)`
so merging them into docs/benchmarks.md adds them beside Docker's."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench import common, report
from bench.common import FigureResult, Row
from runnerd.engine import EngineKind

DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
PODMAN = EngineKind("podman", "4.3.1", "1.41", rootless=False, cgroup_version="1")
DOCKER = EngineKind("docker", "20.10.24+dfsg1", "1.41")
INFO = {
    "Podman engine": "4.3.1 (rootful, API 1.41, cgroup v1) at unix:///tmp/podman.sock",
    "date": "2026-12-02 17:30 UTC",
    "load average (1/5/15 min)": "1.0 1.0 1.0 at end",
}


def p4_on_podman(runnerd: str = "12.0 MiB/s") -> FigureResult:
    row = Row("P4 big logs (256.0 MiB, byte-exact: yes)", runnerd, "15 MiB/s", 0.8, "≥ 0.9×", False)
    result = FigureResult("P4", "big logs", "How P4 is measured on Podman.", rows=[row])
    result.details.append("podman detail")
    report.qualify(result, "Podman")
    return result


def table_keys(text: str) -> list[str]:
    table = text.split("### Table")[1].split("### Method")[0]
    return [k for ln in table.splitlines() if (k := report._row_key(ln))]


def test_a_figure_run_on_podman_is_keyed_by_its_engine() -> None:
    result = p4_on_podman()
    assert result.key == "P4 (Podman)"
    assert result.rows[0].figure == "P4 (Podman) big logs (256.0 MiB, byte-exact: yes)"
    assert report._row_key("| P4 (Podman) big logs (256.0 MiB) | 1 | 2 |") == "P4 (Podman)"
    assert report._row_key("**P4 (Podman) big logs** (48 s). How …") == "P4 (Podman)"
    # Docker's rows whose title holds parentheses keep their plain key
    assert report._row_key("| P1 per-run overhead (follow logs) | 1 |") == "P1"
    keys = ["P5", "P4 (Podman)", "P10", "P4"]
    assert sorted(keys, key=report._key_order) == ["P4", "P4 (Podman)", "P5", "P10"]


def test_merging_podmans_p4_adds_it_beside_dockers_and_keeps_every_other_row() -> None:
    old = DOC.read_text()
    block = report.merge(old, [p4_on_podman()], quick=False, wall_seconds=50, info=INFO)
    inside = old.split(report.BEGIN)[1].split(report.END)[0]
    for line in inside.splitlines():
        if line.startswith("| P") and report._row_key(line) != "P4 (Podman)":
            assert line in block  # Docker's P4 among them (an older Podman row is replaced)
    keys = table_keys(block)
    assert keys.count("P4") >= 1 and keys.count("P4 (Podman)") == 1
    assert keys.index("P4 (Podman)") == max(i for i, k in enumerate(keys) if k == "P4") + 1
    assert "**P4 (Podman) big logs** (0 s). How P4 is measured on Podman." in block
    assert block.index("**P4 big logs**") < block.index("**P4 (Podman) big logs**")
    assert block.index("**P4 (Podman) big logs**") < block.index("**P5 history**")
    assert "- podman detail" in block
    assert "Figures: P1, P2, P3, P4, P4 (Podman), P5, P6, P7, P8, P9, P10, P11." in block
    assert (
        "Updated in place: P4 (Podman) ran on 2026-12-02 17:30 UTC against Podman engine "
        "4.3.1 (rootful, API 1.41, cgroup v1) at unix:///tmp/podman.sock"
    ) in block

    # merged again, it replaces only itself
    text = old.split(report.BEGIN)[0] + block
    again = report.merge(
        text, [p4_on_podman("20.0 MiB/s")], quick=False, wall_seconds=50, info=INFO
    )
    assert table_keys(again).count("P4 (Podman)") == 1
    assert "| 20.0 MiB/s |" in again and "| 12.0 MiB/s |" not in again
    assert again.count("**P4 (Podman) big logs**") == 1
    docker_p4 = [ln for ln in inside.splitlines() if report._row_key(ln) == "P4"]
    assert docker_p4 and all(ln in again for ln in docker_p4)


def test_a_podman_run_names_its_engine_in_the_mode_line_and_the_machine_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(common, "_engine", PODMAN)
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/podman.sock")
    assert report.engine_row() == (
        "Podman engine",
        "4.3.1 (rootful, API 1.41, cgroup v1) at unix:///tmp/podman.sock",
    )
    text = report.markdown(
        [p4_on_podman()], quick=False, wall_seconds=60, info=INFO, flags=" --engine podman"
    )
    assert "Mode: full (`python -m bench --engine podman`). Figures: P4 (Podman)." in text
    report.check_mergeable(text, quick=False)  # a file of Podman figures merges too


def test_baseline_containers_get_the_engines_log_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "_engine", PODMAN)
    podman = common.container_config(["true"], log_max_size="600m", log_max_file="1")
    # runnerd's own choice for Podman: k8s-file, never rotated, so no sizes
    assert podman["HostConfig"]["LogConfig"] == PODMAN.log_config(0) == {"Type": "k8s-file"}
    monkeypatch.setattr(common, "_engine", DOCKER)
    docker = common.container_config(["true"], log_max_size="600m", log_max_file="1")
    assert docker["HostConfig"]["LogConfig"] == {
        "Type": "local",
        "Config": {"max-size": "600m", "max-file": "1", "compress": "false"},
    }
    assert {k: v for k, v in podman.items() if k != "HostConfig"} == {
        k: v for k, v in docker.items() if k != "HostConfig"
    }


def test_the_podman_socket_comes_from_the_option_then_the_environment_then_the_test_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///before.sock")
    monkeypatch.delenv(common.PODMAN_HOST_ENV, raising=False)
    monkeypatch.delenv(common.TEST_PODMAN_HOST_ENV, raising=False)
    # Docker: DOCKER_HOST as it was
    assert common.use_engine("docker") == "unix:///before.sock"
    assert common.use_engine("podman") == common.DEFAULT_PODMAN_HOST
    monkeypatch.setenv(common.TEST_PODMAN_HOST_ENV, "unix:///suite.sock")
    assert common.use_engine("podman") == "unix:///suite.sock"
    monkeypatch.setenv(common.PODMAN_HOST_ENV, "unix:///bench.sock")
    assert common.use_engine("podman") == "unix:///bench.sock"
    assert common.use_engine("podman", "unix:///given.sock") == "unix:///given.sock"
    # everything the bench starts reads DOCKER_HOST: the daemons, aiodocker, the CLI
    assert common.os.environ["DOCKER_HOST"] == "unix:///given.sock"
    with pytest.raises(ValueError, match="unknown engine 'lxc'"):
        common.use_engine("lxc")


def test_the_bench_stops_before_any_figure_when_the_chosen_engine_does_not_answer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///before.sock")  # restored after the test
    nowhere = f"unix://{tmp_path}/no-podman.sock"
    code = bench_main.main(
        ["--quick", "--only", "P4", "--engine", "podman", "--podman-host", nowhere]
    )
    assert code == 2
    assert f"bench: no engine answers at {nowhere}" in capsys.readouterr().err


def test_podman_host_without_engine_podman_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench_main.main(["--quick", "--podman-host", "unix:///x.sock"])
    assert exit_.value.code == 2
    assert "--podman-host is for --engine podman" in capsys.readouterr().err
