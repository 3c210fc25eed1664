"""Summarises a py-spy raw profile (`py-spy record -f raw`): the hottest leaf frames and the inclusive cost of frames.

.venv/bin/python bench/pyspy_summary.py profile.txt [--leaves 15] [--inclusive 30] [--match workers/]
"""

from __future__ import annotations

import argparse
import collections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile")
    parser.add_argument("--leaves", type=int, default=15)
    parser.add_argument("--inclusive", type=int, default=30)
    parser.add_argument("--match", help="only inclusive frames whose text contains this")
    args = parser.parse_args()
    inclusive: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    with open(args.profile) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            frames = stack.split(";")
            leaves[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    print(f"{total} samples")
    for frame, n in leaves.most_common(args.leaves):
        print(f"{n / total:6.1%}  leaf       {frame}")
    shown = [(f, n) for f, n in inclusive.most_common() if not args.match or args.match in f][: args.inclusive]
    for frame, n in shown:
        print(f"{n / total:6.1%}  inclusive  {frame}")


if __name__ == "__main__":
    main()
