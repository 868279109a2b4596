"""What the benchmark scripts share: the corpus they read, the process tree of the command they time and the
environment they run the integrator in."""

from __future__ import annotations

import compileall
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from corpusindex import index_messages  # the tests read the corpus the same way
from procs import descendants  # also how the tests find the parse workers

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"


def corpus_messages(corpus: Path = CORPUS) -> list[tuple[str, bytes]]:
    """(path, bytes) of every ``kind == message`` file listed in the corpus's INDEX.tsv, in its order."""
    if not (corpus / "INDEX.tsv").exists():
        sys.exit(f"the corpus is not at {corpus}")
    return index_messages(corpus)


def process_tree(root: int) -> dict[int, list[str]]:
    """The /proc/<pid>/stat fields (those after the command name) of ``root`` and every process below it."""
    tree: dict[int, list[str]] = {}
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
                tree[pid] = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
    return tree


def integrator_env(secrets: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a timed `integrator` run: this checkout's code, none of the shell's INTEGRATOR_*
    settings (workers, instance, ...) unless the script sets them, and the given secrets.

    The code runs from bytecode, as an installed copy does (pip compiles a package when it installs it): the
    checkout is compiled once here, and PYTHONDONTWRITEBYTECODE, which some shells set, is not passed on.
    Otherwise every timed run would compile the package from source first (about 0.1 s in the importer and as
    much again in the parse workers' fork server)."""
    compileall.compile_dir(REPO / "src", quiet=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATOR_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(secrets or {})
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env
