"""The emails the shared corpus's INDEX.tsv lists as messages (the tests and the benchmarks read them)."""

from __future__ import annotations

import csv
from pathlib import Path


def index_messages(corpus: Path) -> list[tuple[str, bytes]]:
    """(path in the corpus, bytes) of every ``kind == message`` file of ``corpus/INDEX.tsv``, in its order."""
    with (corpus / "INDEX.tsv").open(encoding="utf-8") as fh:
        paths = [row["path"] for row in csv.DictReader(fh, delimiter="\t") if row["kind"] == "message"]
    return [(path, (corpus / path).read_bytes()) for path in paths]
