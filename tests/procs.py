"""The processes below a process, found through Linux's /proc (the tests and the benchmarks use it)."""

from __future__ import annotations

import os


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
