"""The whole shared corpus through `integrator run` on a folder mailbox: no crash, nothing unaccounted for."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

import zammad_oracle
from halo_integrator.mail.names import safe_filename
from helpers import corpus_or_skip, invoke, write_config

pytestmark = pytest.mark.corpus


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    corpus = corpus_or_skip()
    base = tmp_path_factory.mktemp("corpus")
    cfg = write_config(base)
    files: dict[str, Path] = {}
    with (corpus / "INDEX.tsv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row["kind"] != "message":
                continue
            name = row["path"].replace("/", "__") + ".eml"
            shutil.copyfile(corpus / row["path"], base / "mail" / name)
            files[name] = corpus / row["path"]
    result = invoke(cfg, "run", "--json")
    assert result.exit_code == 0, result.stderr
    return base, files


def test_every_message_is_a_ticket_action_or_a_logged_decision(imported: tuple[Path, dict[str, Path]]) -> None:
    base, files = imported
    con = sqlite3.connect(base / "tickets.db")
    rows = con.execute("SELECT source_id, status, detail, action_id, raw_id FROM inbound_log").fetchall()
    con.close()
    by_source = {r[0]: r for r in rows}
    assert len(rows) == len(files) == len(by_source)  # one row per email, no more
    assert set(by_source) == set(files)
    for source_id, status, detail, action_id, raw_id in rows:
        assert status in {"created", "updated", "duplicate", "ignored", "auto_reply", "bounce", "quarantined"}
        assert detail, source_id
        assert raw_id is not None, source_id  # the raw bytes are kept whatever happened
        if status in ("created", "updated"):
            assert action_id is not None
    assert list((base / "mail").iterdir()) == []  # every file was disposed of
    assert len(list((base / "mail Deleted Items").iterdir())) + len(
        list((base / "mail Quarantine").iterdir()) if (base / "mail Quarantine").exists() else []
    ) == len(files)


def test_raw_bytes_are_kept_exactly(imported: tuple[Path, dict[str, Path]]) -> None:
    from halo_integrator.store import Store

    base, files = imported
    with Store.open(base / "tickets.db") as store:
        rows = store.db.execute("SELECT source_id, raw_id FROM inbound_log").fetchall()
        for source_id, raw_id in rows[::7]:
            assert store.raw_message(raw_id) == files[source_id].read_bytes()


def test_agreement_with_zammad(imported: tuple[Path, dict[str, Path]]) -> None:
    """Subject and sender as logged for every Zammad email; attachment names where a ticket action holds them
    (bounces and auto-replies that answer no ticket are only logged, with their raw bytes)."""
    base, _ = imported
    corpus = corpus_or_skip()
    oracles = zammad_oracle.load(corpus)
    con = sqlite3.connect(base / "tickets.db")
    con.row_factory = sqlite3.Row
    subject = sender = attachments = with_action = 0
    misses: list[str] = []
    for oracle in oracles:
        source = "zammad__" + oracle.box.name + ".eml"
        row = con.execute(
            "SELECT l.subject, l.sender, l.action_id FROM inbound_log l WHERE l.source_id = ?", [source]
        ).fetchone()
        assert row is not None, source
        address = row["sender"].rpartition("<")[2].rstrip(">") if "<" in row["sender"] else row["sender"]
        subject += zammad_oracle.norm(row["subject"]) == oracle.subject
        sender += address == oracle.from_email
        if zammad_oracle.norm(row["subject"]) != oracle.subject:
            misses.append(f"{oracle.box.name}: subject {row['subject']!r} != {oracle.subject!r}")
        if address != oracle.from_email:
            misses.append(f"{oracle.box.name}: sender {address!r} != {oracle.from_email!r}")
        if row["action_id"] is None:
            continue
        with_action += 1
        names = sorted(
            zammad_oracle.norm(r[0])
            for r in con.execute("SELECT filename FROM attachments WHERE action_id = ?", [row["action_id"]])
        )
        want_names = sorted(
            zammad_oracle.norm(safe_filename(n, "application/octet-stream")) for n in oracle.attachments
        )
        attachments += names == want_names
        if names != want_names:
            misses.append(f"{oracle.box.name}: attachments {names} != {want_names}")
    con.close()
    total = len(oracles)
    report = {"emails": total, "subject": subject, "sender": sender, "with_ticket_action": with_action,
              "attachments": attachments}
    print("\nzammad agreement through run:", json.dumps(report))
    for miss in misses:
        print("  ", miss)
    assert total >= 70
    assert subject >= total - 1
    assert sender >= total - 2
    assert attachments >= with_action - 4
