"""What the benchmark scripts share: the corpus they read and the process tree of the command they time."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"


def corpus_messages(corpus: Path = CORPUS) -> list[tuple[str, bytes]]:
    """(path, bytes) of every ``kind == message`` file listed in the corpus's INDEX.tsv, in its order."""
    index = corpus / "INDEX.tsv"
    if not index.exists():
        sys.exit(f"the corpus is not at {corpus}")
    with index.open(encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["kind"] == "message"]
    return [(r["path"], (corpus / r["path"]).read_bytes()) for r in rows]


def process_tree(root: int) -> dict[int, list[str]]:
    """The /proc/<pid>/stat fields (those after the command name) of ``root`` and every process below it."""
    table: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as fh:
                table[int(entry)] = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
    parents = {pid: int(fields[1]) for pid, fields in table.items()}
    tree: dict[int, list[str]] = {}
    for pid, fields in table.items():
        ancestor = pid
        while ancestor != root and ancestor in parents and ancestor > 1:
            ancestor = parents[ancestor]
        if ancestor == root:
            tree[pid] = fields
    return tree
