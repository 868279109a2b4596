"""Processes as Linux's /proc shows them: those below a process, the parse workers among them, whether one still
runs (the tests and the benchmarks use them); and what a parse worker has loaded.

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


def cmdline(pid: int) -> str:
    """The command line of a process, "" once it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def running(pid: int) -> bool:
    """Whether the process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def fork_server_and_workers(root: int) -> tuple[list[int], list[int]]:
    """The parse workers' fork server below ``root`` (a list: none while it is not started yet) and the
    workers it has forked."""
    servers = [pid for pid in descendants(root)[1:] if "forkserver" in cmdline(pid)]
    return servers, descendants(servers[0])[1:] if servers else []


def modules_a_parse_loads(raws: list[bytes]) -> tuple[list[str], list[str]]:
    """Run in a parse worker: the modules it had loaded before it prepared these emails, and those it loaded
    while preparing them."""
    from halo_integrator.prepare import prepare

    before = set(sys.modules)
    for raw in raws:
        prepare(raw)
    return sorted(before), sorted(set(sys.modules) - before)
