"""Where a py-spy profile's time went, in a few lines: a summary of ``ack_burst --profile``.

py-spy's raw format is one line per distinct stack, ``thread (id): name;frame;frame… count``.
For the threads whose name contains ``--threads`` (default: Bolt's listener threads), this
prints the share of their samples each of the bot's own functions appears in (inclusive,
counted once per stack), after leaving out samples of a thread waiting for work.

    .venv/bin/python -m benchmarks.profile_summary PATH [--threads slack-listener] [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

LINE = re.compile(r"\s\((?P<file>[^():]+):\d+\)$")
#: Frames a pool thread sits in while it waits for work (not time spent on a request).
WAITING = ("_worker (concurrent/futures/thread.py", "handler_thread (waitress/task.py")


def frame_name(frame: str) -> str:
    """``func (file:line)`` -> ``func (file)``: lines of one function add up."""
    return LINE.sub(lambda m: f" ({m['file']})", frame)


def summarise(path: Path, threads: str, top: int) -> list[str]:
    inclusive: Counter[str] = Counter()
    total = waiting = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or threads not in frames[0]:
            continue
        samples = int(count)
        total += samples
        if frames[-1].startswith(WAITING) or (
            len(frames) <= 8 and any(f.startswith(WAITING) for f in frames[-2:])
        ):
            waiting += samples
            continue
        for name in dict.fromkeys(frame_name(f) for f in frames[1:] if "(bot/" in f):
            inclusive[name] += samples
    if not total:
        return [f"no samples of threads named like {threads!r} in {path}"]
    busy = total - waiting
    lines = [
        f"{total} samples of {threads!r} threads: {busy} busy ({100 * busy / total:.0f}%), "
        f"{waiting} waiting for work; share of busy samples:"
    ]
    lines += [f"{100 * n / busy:5.1f}%  {name}" for name, n in inclusive.most_common(top) if busy]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--threads", default="slack-listener")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    print("\n".join(summarise(args.path, args.threads, args.top)))


if __name__ == "__main__":
    main()
