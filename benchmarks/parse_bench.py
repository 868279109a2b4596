"""Parse speed on the shared corpus: every ``kind == message`` file of INDEX.tsv, read into memory first.

    python benchmarks/parse_bench.py [--corpus ../shared/corpus] [--rounds 3] [--profile]

Prints emails/s (best round), the slowest files and the peak RSS of this one process.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import sys
import time
from pathlib import Path

from common import CORPUS, corpus_messages

from halo_integrator.mail import parse


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="one round under cProfile: print hot spots")
    args = parser.parse_args()
    messages = corpus_messages(args.corpus)  # exits with a message when there is no corpus
    total_bytes = sum(len(data) for _, data in messages)
    print(f"{len(messages)} messages, {total_bytes / 1e6:.1f} MB")
    parse(messages[0][1])  # warm-up: lazy imports

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _, data in messages:
            parse(data)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(35)
        return 0

    best = float("inf")
    slowest: list[tuple[float, str]] = []
    for _ in range(args.rounds):
        timings = []
        start = time.perf_counter()
        for name, data in messages:
            t0 = time.perf_counter()
            parse(data)
            timings.append((time.perf_counter() - t0, name))
        elapsed = time.perf_counter() - start
        if elapsed < best:
            best, slowest = elapsed, sorted(timings, reverse=True)[:5]
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"best of {args.rounds}: {best:.2f} s, {len(messages) / best:.0f} emails/s, "
          f"{total_bytes / best / 1e6:.1f} MB/s")
    print(f"peak RSS: {peak_kb / 1024:.0f} MB")
    print("slowest:", ", ".join(f"{name} {seconds * 1000:.0f} ms" for seconds, name in slowest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
