"""Import N emails (the corpus mix, repeated) through a folder mailbox and report speed and memory.

    python benchmarks/import_bench.py --count 5000
    python benchmarks/import_bench.py --count 2000 --count 10000   # memory must not grow with N

Each copy gets a unique line appended, so every email is distinct (no duplicate short-cuts). The timed part
is one `integrator run` in a child process: parse, match, store and move every file to Deleted Items. Peak
memory (PSS) is sampled from /proc for the whole process tree (the importer and its parse workers) every
20 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import corpus_messages, integrator_env, process_tree


def tree_pss_kb(pid: int) -> int:
    """Proportional set size of a process and all its descendants, in KiB (Linux /proc).

    PSS shares each page among the processes that map it, so forked parse workers are not counted
    twice for the interpreter they inherit (plain RSS would be).
    """
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup", encoding="utf-8") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def bench(count: int, mix: list[bytes], workers: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="integrator-bench-") as tmp:
        base = Path(tmp)
        mail = base / "mail"
        mail.mkdir()
        total_bytes = 0
        for i in range(count):
            raw = mix[i % len(mix)] + f"\r\nbench copy {i}\r\n".encode()
            (mail / f"{i:07d}.eml").write_bytes(raw)
            total_bytes += len(raw)
        (base / "integrator.toml").write_text(
            'database = "bench.db"\n[[mailboxes]]\nname = "Bench"\nconnection = "folder"\npath = "mail"\n'
            '[mailboxes.incoming]\nafter_import = "move_to_deleted"\n'
            "sender_limit = 0\n",  # the copies share senders: measure tickets, not the loop throttle
            encoding="utf-8",
        )
        env = integrator_env()
        if workers:
            env["INTEGRATOR_WORKERS"] = workers
        cmd = [sys.executable, "-m", "halo_integrator", "--config", str(base / "integrator.toml"), "run", "--json"]
        peak = 0
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, tree_pss_kb(proc.pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, err = proc.communicate()
        elapsed = time.perf_counter() - start
        done.set()
        sampler.join()
        if proc.returncode not in (0, 5):
            sys.exit(f"integrator run failed ({proc.returncode}): {err.decode()[-2000:]}")
        left = len(list(mail.iterdir()))
        if left:
            sys.exit(f"{left} emails were not disposed of")
        db_mb = (base / "bench.db").stat().st_size / 1048576
        shutil.rmtree(mail, ignore_errors=True)
        return {
            "count": count,
            "seconds": elapsed,
            "per_second": count / elapsed,
            "mb_in": total_bytes / 1048576,
            "peak_pss_mb": peak / 1024,
            "db_mb": db_mb,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, action="append", help="emails to import (repeatable)")
    parser.add_argument("--workers", help="INTEGRATOR_WORKERS for the run (default: one per core)")
    args = parser.parse_args()
    mix = [data for _, data in corpus_messages()]
    print(f"corpus mix: {len(mix)} messages, {sum(map(len, mix)) / 1048576:.1f} MB; cores: {os.cpu_count()}")
    for count in args.count or [5000]:
        r = bench(count, mix, args.workers)
        print(
            f"{r['count']:>6} emails ({r['mb_in']:.0f} MB): {r['seconds']:.2f} s, {r['per_second']:.0f} emails/s, "
            f"peak memory {r['peak_pss_mb']:.0f} MB (PSS of the whole process tree), database {r['db_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main()
