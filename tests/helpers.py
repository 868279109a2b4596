"""Small helpers shared by the CLI and importer tests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import textwrap
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from halo_integrator.cli import cli

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
CORPUS = (REPO / ".." / "shared" / "corpus").resolve()


def corpus_or_skip() -> Path:
    """The shared email corpus, beside the repository; the test is skipped, saying so, when it is absent."""
    if not (CORPUS / "INDEX.tsv").exists():
        import pytest

        pytest.skip(f"the shared email corpus is not at {CORPUS}; these tests read it from ../shared/corpus")
    return CORPUS


def corpus_files() -> list[Path]:
    """Every email file of the corpus (all but its index and expected-result files), skipping when absent."""
    corpus = corpus_or_skip()
    return [p for p in sorted(corpus.rglob("*")) if p.is_file() and p.suffix not in (".tsv", ".json", ".md")]


def corpus_messages() -> list[tuple[str, bytes]]:
    """(path in the corpus, bytes) of each email INDEX.tsv lists as a message, skipping when absent."""
    from corpusindex import index_messages

    return index_messages(corpus_or_skip())


def write_config(directory: Path, body: str = "", *, mail: str = "mail", after_import: str = "move_to_deleted",
                 extra_incoming: str = "") -> Path:
    """A config with one folder mailbox "Desk" over DIRECTORY/mail."""
    (directory / mail).mkdir(parents=True, exist_ok=True)
    path = directory / "integrator.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            instance = "test"
            database = "tickets.db"

            [[mailboxes]]
            name = "Desk"
            address = "desk@example.com"
            connection = "folder"
            path = "{mail}"

            [mailboxes.incoming]
            after_import = "{after_import}"
            """
        )
        + extra_incoming
        + body,
        encoding="utf-8",
    )
    return path


def email_bytes(subject: str, *, sender: str = "Customer <customer@example.org>", body: str = "Hello",
                message_id: str | None = None, in_reply_to: str | None = None, references: str | None = None,
                date: str = "Mon, 23 Nov 2026 08:00:00 +0000", headers: dict[str, str] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "desk@example.com"
    msg["Subject"] = subject
    msg["Date"] = date
    if message_id:
        msg["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        msg["References"] = references
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(body)
    return msg.as_bytes()


def invoke(config: Path | None, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    runner = CliRunner()
    argv = (["--config", str(config)] if config else []) + list(args)
    return runner.invoke(cli, argv, input=input, env=env, catch_exceptions=False)


def invoke_json(config: Path, *args: str) -> Any:
    result = invoke(config, *args, "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def run_subprocess(config: Path, *args: str, env: dict[str, str] | None = None,
                   **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """The real console entry point in a child process (for crashes, locks and resource limits)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "halo_integrator", "--config", str(config), *args],
        capture_output=True, text=True, env=full_env, timeout=120, **kwargs,
    )


def copy_examples(target: Path) -> None:
    for f in sorted((EXAMPLES / "mail").iterdir()):
        shutil.copy2(f, target / f.name)


def actions_per_message_id(db: Path) -> dict[str, int]:
    """How many ticket actions each imported Message-ID has (1 everywhere means: none lost, none twice)."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT message_id, count(*) FROM actions WHERE kind = 'email_in' GROUP BY message_id"
        ).fetchall()
    finally:
        con.close()
    return {r[0]: r[1] for r in rows}


def free_port() -> int:
    """A loopback port nothing listens on (free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def refuse_storing(db: Path, condition: str) -> None:
    """Make storing fail for the emails whose action matches ``condition`` (SQL on ``NEW``): a trigger in the
    database, not in our code, refuses them."""
    from halo_integrator.store import Store

    with Store.open(db):  # the schema first
        pass
    con = sqlite3.connect(db)
    try:
        con.execute("DROP TRIGGER IF EXISTS refuse")
        con.execute(
            f"CREATE TRIGGER refuse BEFORE INSERT ON actions WHEN {condition} "
            "BEGIN SELECT RAISE(ABORT, 'simulated storage fault'); END"
        )
        con.commit()
    finally:
        con.close()
