"""The processes below a process, found through Linux's /proc (the tests and the benchmarks use it), and what
a parse worker has loaded.

A parse worker imports this module to run :func:`modules_a_parse_loads`, so it imports nothing else at the top.
"""

from __future__ import annotations

import os
import sys


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, found through /proc/<pid>/task/<tid>/children: a few small reads
    instead of a scan of every process on the machine, so sampling while a command is timed costs little."""
    found: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # gone meanwhile
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
                    todo += [int(child) for child in fh.read().split()]
            except OSError:
                continue
    return found


def modules_a_parse_loads(raws: list[bytes]) -> tuple[list[str], list[str]]:
    """Run in a parse worker: the modules it had loaded before it prepared these emails, and those it loaded
    while preparing them."""
    from halo_integrator.prepare import prepare

    before = set(sys.modules)
    for raw in raws:
        prepare(raw)
    return sorted(before), sorted(set(sys.modules) - before)
