"""Summarise py-spy profiles written by `python -m bench --profile DIR`:

    python -m bench.profile_top DIR/p3-1.folded [--top 25] [--filter runnerd]

prints the functions with the most samples on-CPU: by self time (the frame was
running) and by inclusive time (the frame was on the stack)."""

from __future__ import annotations

import argparse
import collections
import re
import sys

# py-spy's raw frames look like "func (path/to/file.py:123)"; fold the line number
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    if "/runnerd/" in path:
        path = "runnerd/" + path.split("/runnerd/", 1)[1]
    return f"{m.group('func')} ({path})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_top")
    parser.add_argument("files", nargs="+")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--filter", help="only count stacks containing this text")
    args = parser.parse_args(argv)
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for path in args.files:
        with open(path) as f:
            for line in f:
                stack, _, count = line.rstrip("\n").rpartition(" ")
                if not stack or not count.isdigit():
                    continue
                if args.filter and args.filter not in stack:
                    continue
                n = int(count)
                frames = stack.split(";")
                if frames and frames[0].startswith(("thread", "process")):
                    threads[frames[0]] += n
                    frames = [fr for fr in frames if not fr.startswith(("thread", "process"))]
                names = [frame_name(fr) for fr in frames]
                total += n
                if names:
                    self_t[names[-1]] += n
                for name in set(names):
                    incl[name] += n
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    print(f"{total} samples")
    if threads:
        print("\nby thread:")
        for name, n in threads.most_common(10):
            print(f"  {n / total:6.1%}  {name}")
    for title, counter in (("self", self_t), ("inclusive", incl)):
        print(f"\ntop {args.top} by {title} samples:")
        for name, n in counter.most_common(args.top):
            print(f"  {n / total:6.1%}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
