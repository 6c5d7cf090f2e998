"""`python -m bench [--quick] [--only P1,P3] [--engine docker|podman] [--podman-host URL]
[--out docs/benchmarks.md] [--merge] [--profile DIR] [--profile-gil] [--keep]`

Runs runnerd's benchmark figures against a real engine (Docker, or Podman through
its Docker-compatible socket), each next to a baseline measured in the same run on
the same engine, prints the table and writes it (with the machine and a note on
each figure's method) to a Markdown file.

P9 (the swarm backend) is opt-in: it brings up a three-node swarm of its own (root,
three extra dockerds), so it runs only when named (`--only P9`), never by default
and not in a plain `--quick` run.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType

from runnerd.engine import DOCKER

from . import (
    p1_overhead,
    p2_drain,
    p3_trigger,
    p4_logs,
    p5_history,
    p6_queue,
    p7_schedules,
    p8_dashboard,
    p9_swarm,
    p10_scale,
    p11_started,
    report,
)
from .common import (
    DEFAULT_PODMAN_HOST,
    ENGINES,
    PODMAN_HOST_ENV,
    TEST_PODMAN_HOST_ENV,
    Context,
    FigureResult,
    Row,
    check_engine,
    engine_title,
    remove_bench_containers,
    use_engine,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"

# Each module has TITLE, GOAL (as shown when the figure fails), METHOD and `run(ctx)`.
FIGURES: dict[str, ModuleType] = {
    "P1": p1_overhead,
    "P2": p2_drain,
    "P3": p3_trigger,
    "P4": p4_logs,
    "P5": p5_history,
    "P6": p6_queue,
    "P7": p7_schedules,
    "P8": p8_dashboard,
    "P9": p9_swarm,
    "P10": p10_scale,
    "P11": p11_started,
}
# Figures that run only when --only names them: P9 starts a swarm of its own.
OPT_IN = frozenset({"P9"})
# A figure that runs past this is stopped and reported as an error.
FIGURE_TIMEOUT = {"quick": 240.0, "full": 1800.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (a couple of minutes): checks the suite works; "
        "the figures are not worth quoting",
    )
    parser.add_argument(
        "--only",
        metavar="P1,P3",
        help="comma-separated figures to run (default: all but the opt-in P9, the swarm "
        "backend on a three-node swarm it starts itself, which needs root and runs only "
        "when named here: `--only P9`)",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=DOCKER,
        help="the engine every figure and its baseline run on (default: docker, at "
        "DOCKER_HOST or the local socket). A figure run on another engine than Docker is "
        "keyed by it, e.g. `P4 (Podman)`, so --merge adds it beside Docker's instead of "
        "replacing it",
    )
    parser.add_argument(
        "--podman-host",
        metavar="URL",
        help=f"with --engine podman: its socket (default: ${PODMAN_HOST_ENV}, else "
        f"${TEST_PODMAN_HOST_ENV}, else {DEFAULT_PODMAN_HOST}: where tests/run.sh starts it)",
    )
    parser.add_argument(
        "--out",
        metavar="PATH",
        help="Markdown file to write the table to (default: "
        "docs/benchmarks.md for a full run of the default figures on Docker; a --quick, "
        "--only or --engine podman run writes no file unless --out is given). Text "
        "outside the generated block of an existing file is kept; without --merge the "
        "block holds only the figures run (add P9 back with `--only P9 --merge`).",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="with --out: replace only the rows and notes of the figures run in the "
        "file's generated block, keeping every other figure's (update one figure in "
        "place: `--only P8 --merge --out docs/benchmarks.md`)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="record every daemon with py-spy: collapsed stacks in DIR/<daemon>-<n>.folded; "
        "summarise them with `python -m bench.profile_top FILE`",
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only threads holding the GIL (CPU use rather than waits)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir with every daemon's log and config"
    )
    args = parser.parse_args(argv)

    keys = [k for k in FIGURES if k not in OPT_IN]
    if args.only:
        keys = [k.strip().upper() for k in args.only.split(",") if k.strip()]
        unknown = [k for k in keys if k not in FIGURES]
        if unknown:
            parser.error(f"unknown figure(s) {', '.join(unknown)}; known: {', '.join(FIGURES)}")
    if args.podman_host and args.engine != "podman":
        parser.error("--podman-host is for --engine podman")
    if (args.profile or args.profile_gil) and shutil.which("py-spy") is None:
        parser.error(
            "--profile needs py-spy on PATH (`pip install py-spy` in the bench's venv, "
            "and that venv's bin on PATH)"
        )
    out: Path | None = Path(args.out) if args.out else None
    if out is None and not args.quick and not args.only and args.engine == DOCKER:
        out = DEFAULT_OUT
    if args.merge:
        if out is None:
            parser.error("--merge needs --out: the file whose block it updates")
        try:
            report.check_mergeable(out.read_text(), quick=args.quick)
        except (OSError, ValueError) as e:
            parser.error(f"--merge into {out}: {e}")

    try:
        host = use_engine(args.engine, args.podman_host)
        kind = check_engine(args.engine)
    except Exception as e:  # noqa: BLE001
        print(f"bench: {e}", file=sys.stderr)
        return 2
    mode = "quick" if args.quick else "full"
    print(
        f"bench: {mode} run of {', '.join(keys)} on {kind.label} "
        f"(API {kind.api_version}) at {host or 'the local socket'}",
        file=sys.stderr,
        flush=True,
    )

    workdir = Path(tempfile.mkdtemp(prefix="runnerd-bench-"))
    ctx = Context(
        quick=args.quick,
        workdir=workdir,
        keep=args.keep,
        profile_gil=args.profile_gil,
        profile_dir=Path(args.profile).resolve() if args.profile else None,
    )
    results: list[FigureResult] = []
    load_at_start = report.loadavg()
    started = time.monotonic()
    try:
        for key in keys:
            result = run_figure(ctx, key, FIGURES[key], FIGURE_TIMEOUT[mode])
            if kind.name != DOCKER:
                report.qualify(result, engine_title(kind))
            results.append(result)
    finally:
        remove_bench_containers()
        if args.keep:
            print(f"bench: kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    wall = time.monotonic() - started

    print()
    print(report.text_table(results))
    if out is not None:
        info = report.machine(load_at_start)
        flags = "" if kind.name == DOCKER else f" --engine {kind.name}"
        if args.merge:
            generated = report.merge(
                out.read_text(),
                results,
                quick=args.quick,
                wall_seconds=wall,
                info=info,
                whole=not args.only and kind.name == DOCKER,
            )
        else:
            generated = report.markdown(
                results, quick=args.quick, wall_seconds=wall, info=info, flags=flags
            )
        report.write(out, generated)
        print(f"\nwritten to {out}", file=sys.stderr)
    failed = [r.figure for res in results for r in res.rows if r.error]
    return 1 if failed else 0


def run_figure(ctx: Context, key: str, module: ModuleType, timeout: float) -> FigureResult:
    title = module.TITLE
    ctx.log(f"bench: {key} {title} …")
    t0 = time.monotonic()
    try:
        result = asyncio.run(asyncio.wait_for(module.run(ctx), timeout))
    except BaseException as e:  # noqa: BLE001 - one figure's failure is a table row
        if isinstance(e, KeyboardInterrupt):
            raise
        detail = "".join(traceback.format_exception_only(type(e), e)).strip()
        if isinstance(e, TimeoutError):
            detail = f"did not finish within {timeout:.0f} s"
        ctx.log(f"bench: {key} failed:\n{traceback.format_exc()}")
        result = FigureResult(
            key,
            title,
            module.METHOD,
            rows=[
                Row(
                    f"{key} {title}",
                    "",
                    "",
                    None,
                    module.GOAL,
                    None,
                    error=detail.splitlines()[-1][:300],
                )
            ],
        )
    result.seconds = time.monotonic() - t0
    ctx.log(f"bench: {key} done in {result.seconds:.0f} s")
    for row in result.rows:
        ctx.log(
            f"    {row.figure}: {row.runnerd} vs {row.baseline} → "
            f"{'error' if row.error else row.ratio}"
        )
    return result


if __name__ == "__main__":
    sys.exit(main())
