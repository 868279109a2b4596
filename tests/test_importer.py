"""The importer end to end on folder mailboxes: tickets, threading, duplicates, crashes, bad input."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from halo_integrator.errors import Stop
from halo_integrator.store import Store
from helpers import (
    EXAMPLES,
    actions_per_message_id,
    copy_examples,
    email_bytes,
    invoke,
    invoke_json,
    refuse_storing,
    run_subprocess,
    write_config,
)
from procs import cmdline, descendants, fork_server_and_workers, modules_a_parse_loads, running


def inbound_rows(db: Path) -> list[tuple[str, str, int | None]]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT source_id, status, ticket_id FROM inbound_log ORDER BY id").fetchall()
    finally:
        con.close()


def test_examples_become_tickets_threaded_as_expected(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    copy_examples(tmp_path / "mail")
    result = invoke(cfg, "run", "--json")
    assert result.exit_code == 0, result.stderr
    (summary,) = json.loads(result.stdout)
    assert summary["mailbox"] == "Desk"
    assert summary["fetched"] == 12
    assert summary["created"] == 8
    assert summary["updated"] == 2
    assert summary["ignored"] == 2  # the out-of-office and the bounce
    assert summary["errors"] == 0
    assert summary["disposed"] == 12

    tickets = invoke_json(cfg, "tickets", "list")
    by_subject = {t["subject"]: t for t in tickets}
    printer = by_subject["Printer on the 3rd floor jams on every job"]
    # the original, the reply with [#1], the reply matched only by References, and the out-of-office
    assert printer["action_count"] == 4
    assert printer["requester"] == "dana.whitfield@northwind.example"
    assert "Drucker im Büro Köln druckt leere Seiten" in by_subject
    assert "ノートPCのセットアップ依頼" in by_subject
    assert "Can't open the shared “Budget 2027” workbook" in by_subject

    logs = invoke_json(cfg, "logs")
    status = {row["subject"]: row["status"] for row in logs}
    assert status["Undelivered Mail Returned to Sender"] == "bounce"
    assert status["Automatic reply: [#1] Printer on the 3rd floor jams on every job"] == "auto_reply"
    assert status["AW: Printer on the 3rd floor jams on every job"] == "updated"
    refs = next(r for r in logs if r["subject"].startswith("AW:"))
    assert "References" in refs["detail"]

    # every file moved to Deleted Items, nothing left, nothing lost
    assert list((tmp_path / "mail").iterdir()) == []
    assert len(list((tmp_path / "mail Deleted Items").iterdir())) == 12


def test_second_run_imports_nothing_again(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, after_import="mark_read")
    copy_examples(tmp_path / "mail")
    assert invoke(cfg, "run").exit_code == 0
    (second,) = invoke_json(cfg, "run")
    assert second["fetched"] == 0 and second["created"] == 0 and second["duplicates"] == 0
    assert len(list((tmp_path / "mail").iterdir())) == 12  # mark_read leaves the files
    assert all(n == 1 for n in actions_per_message_id(tmp_path / "tickets.db").values())


def test_same_email_in_two_mailboxes_makes_one_ticket(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        '\n[[mailboxes]]\nname = "Sales"\naddress = "sales@example.com"\nconnection = "folder"\npath = "sales"\n',
    )
    (tmp_path / "sales").mkdir()
    raw = email_bytes("Quote please", message_id="q-1@example.org")
    (tmp_path / "mail" / "a.eml").write_bytes(b"Received: from a by b\r\nDelivered-To: desk@example.com\r\n" + raw)
    (tmp_path / "sales" / "b.eml").write_bytes(b"Received: from c by d\r\nDelivered-To: sales@example.com\r\n" + raw)
    # a different email that happens to reuse the Message-ID is still imported
    (tmp_path / "sales" / "c.eml").write_bytes(email_bytes("Other thing", message_id="q-1@example.org", body="Other"))
    rows = invoke_json(cfg, "run")
    assert sum(r["created"] for r in rows) == 2
    assert sum(r["duplicates"] for r in rows) == 1
    assert len(invoke_json(cfg, "tickets", "list")) == 2


def test_maildir_new_and_cur(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    for sub in ("new", "cur", "tmp"):
        (tmp_path / "mail" / sub).mkdir()
    (tmp_path / "mail" / "new" / "1700000000.M1P1.host").write_bytes(email_bytes("One", message_id="1@x"))
    (tmp_path / "mail" / "cur" / "1700000001.M2P2.host:2,S").write_bytes(email_bytes("Two", message_id="2@x"))
    (tmp_path / "mail" / "tmp" / "1700000002.M3P3.host").write_bytes(email_bytes("Partial", message_id="3@x"))
    (summary,) = invoke_json(cfg, "run")
    assert summary["created"] == 2  # tmp/ holds deliveries still being written
    assert sorted(p.name for p in (tmp_path / "mail" / ".Trash").iterdir()) == [
        "1700000000.M1P1.host", "1700000001.M2P2.host:2,S"
    ]


def _maildir(tmp_path: Path) -> Path:
    mail = tmp_path / "mail"
    for sub in ("new", "cur", "tmp"):
        (mail / sub).mkdir(parents=True, exist_ok=True)
    return mail


def _deliver(mail: Path, name: str, subject: str, message_id: str, when: float) -> Path:
    """A Maildir message (``name`` under the Maildir: ``new/<unique>`` or ``cur/<unique>:2,<flags>``) whose file
    time says when it arrived."""
    path = mail / name
    path.write_bytes(email_bytes(subject, message_id=message_id))
    os.utime(path, (when, when))
    return path


def test_maildir_mark_read_imports_a_new_email_that_someone_read_first(tmp_path: Path) -> None:
    """A Maildir with mark_read: the mail read before reading began stays alone; an email that arrives later
    becomes a ticket even when a mail client has read it first (moved it to cur/ with the S flag); what was
    imported and marked read is recognised by its id, wherever the file is, and not fetched again."""
    cfg = write_config(tmp_path, after_import="mark_read")
    mail = _maildir(tmp_path)
    long_ago = time.time() - 30 * 86400
    _deliver(mail, "cur/1600000000.M1P1.host:2,S", "Read long ago", "old@x", long_ago)
    _deliver(mail, "new/1600000001.M2P2.host", "Still unread", "unread@x", long_ago)
    (summary,) = invoke_json(cfg, "run")
    assert summary["created"] == 1
    assert sorted(p.name for p in (mail / "cur").iterdir()) == ["1600000000.M1P1.host:2,S", "1600000001.M2P2.host:2,S"]

    soon = time.time() + 5  # delivered after reading began
    # an agent opened the first in their mail client
    _deliver(mail, "cur/1700000000.M3P3.host:2,RS", "Opened before the run", "opened@x", soon)
    _deliver(mail, "new/1700000001.M4P4.host", "Fresh", "fresh@x", soon)
    (summary,) = invoke_json(cfg, "run")
    assert summary["created"] == 2
    (summary,) = invoke_json(cfg, "run")
    assert (summary["created"], summary["fetched"], summary["duplicates"]) == (0, 0, 0)
    assert sorted(actions_per_message_id(tmp_path / "tickets.db")) == ["fresh@x", "opened@x", "unread@x"]


def test_maildir_mark_read_keeps_listing_the_first_backlog_until_it_is_all_imported(tmp_path: Path) -> None:
    """Unread Maildir emails there on the first run: a run cut short by --limit leaves some, a mail client
    reads them (moves them to cur/ with the S flag), and the next run still imports them."""
    cfg = write_config(tmp_path, after_import="mark_read")
    mail = _maildir(tmp_path)
    long_ago = time.time() - 30 * 86400
    for n in range(3):
        _deliver(mail, f"new/160000000{n}.M{n}P{n}.host", f"Backlog {n}", f"b{n}@x", long_ago + n)
    (summary,) = invoke_json(cfg, "run", "--limit", "1")
    assert summary["created"] == 1
    for path in list((mail / "new").iterdir()):  # read in a mail client
        os.rename(path, mail / "cur" / f"{path.name}:2,S")
    (summary,) = invoke_json(cfg, "run")
    assert summary["created"] == 2
    (summary,) = invoke_json(cfg, "run")
    assert (summary["created"], summary["fetched"]) == (0, 0)
    assert actions_per_message_id(tmp_path / "tickets.db") == {"b0@x": 1, "b1@x": 1, "b2@x": 1}


def test_maildir_mark_read_forgets_a_pending_email_once_its_file_is_gone(tmp_path: Path) -> None:
    """A backlog email left pending by a run cut short, then deleted by someone: the next run that settles
    everything drops it from the pending list, which does not grow with files long gone."""
    cfg = write_config(tmp_path, after_import="mark_read")
    mail = _maildir(tmp_path)
    long_ago = time.time() - 30 * 86400
    _deliver(mail, "new/1600000000.M1P1.host", "Kept", "kept@x", long_ago)
    gone = _deliver(mail, "new/1600000001.M2P2.host", "Deleted by someone", "gone@x", long_ago + 1)
    (summary,) = invoke_json(cfg, "run", "--limit", "1")
    assert summary["created"] == 1
    gone.unlink()
    (summary,) = invoke_json(cfg, "run")
    assert (summary["created"], summary["fetched"]) == (0, 0)
    with Store.open(tmp_path / "tickets.db") as store:
        mark = json.loads(store.state_view("Desk", "").get("read_mark") or "{}")
    assert mark["pending"] == []


def test_a_maildir_switched_to_mark_read_imports_what_someone_read_since_the_last_run(tmp_path: Path) -> None:
    """Runs with move_to_deleted leave nothing old in the Maildir: after a switch to mark_read, an email that
    arrived since the last run is imported even though someone read it first."""
    cfg = write_config(tmp_path)
    mail = _maildir(tmp_path)
    (summary,) = invoke_json(cfg, "run")
    assert summary["fetched"] == 0
    an_hour_ago = time.time() - 3600  # after the last run's day, before the read mark the switch will set
    _deliver(mail, "cur/1600000000.M1P1.host:2,S", "Read before the switch", "read@x", an_hour_ago)  # and read
    cfg = write_config(tmp_path, after_import="mark_read")
    (summary,) = invoke_json(cfg, "run")
    assert summary["created"] == 1
    (summary,) = invoke_json(cfg, "run")
    assert (summary["created"], summary["fetched"]) == (0, 0)


def test_an_upgrade_keeps_what_only_new_left_alone_in_a_maildir(tmp_path: Path) -> None:
    """Before migration m007 a Maildir message in cur/ had the id cur/<name>; a database written then, which
    `mailbox add --only-new` told to leave that message alone, still leaves it alone after the upgrade."""
    cfg = write_config(tmp_path)
    mail = _maildir(tmp_path)
    (mail / "cur" / "1500000000.M9P9.host:2,S").write_bytes(email_bytes("Old", message_id="old@x"))
    db = tmp_path / "tickets.db"
    with Store.open(db) as store:
        store.mark_seen("Desk", "", "cur/1500000000.M9P9.host", "skipped")
        store.log_inbound(mailbox="Desk", credential="", status="ignored", source_id="cur/1500000000.M9P9.host")
        store.db.execute("DELETE FROM _migrations WHERE name = 'm007_maildir_ids_stay_put'")  # as written before
    (summary,) = invoke_json(cfg, "run")
    assert (summary["created"], summary["fetched"]) == (0, 0)
    assert (mail / "cur" / "1500000000.M9P9.host:2,S").exists()
    with Store.open(db) as store:
        rows = store.db.execute("SELECT source_id, state FROM seen").fetchall()
        logged = store.db.execute("SELECT DISTINCT source_id FROM inbound_log WHERE source_id != ''").fetchall()
    assert [tuple(r) for r in rows] == [("new/1500000000.M9P9.host", "skipped")]
    assert [tuple(r) for r in logged] == [("new/1500000000.M9P9.host",)]


@pytest.mark.parametrize("point", ["before_commit", "after_commit"])
def test_crash_at_any_point_loses_nothing_and_duplicates_nothing(tmp_path: Path, point: str) -> None:
    cfg = write_config(tmp_path)
    copy_examples(tmp_path / "mail")
    crashed = run_subprocess(cfg, "run", env={"INTEGRATOR_FAULT": point, "INTEGRATOR_WORKERS": "1"})
    assert crashed.returncode == 86, crashed.stderr  # the process died at the fault point
    left = sorted(p.name for p in (tmp_path / "mail").iterdir())
    assert len(left) == 12  # nothing was disposed of before the crash
    committed = actions_per_message_id(tmp_path / "tickets.db") if (tmp_path / "tickets.db").exists() else {}
    assert (len(committed) > 0) == (point == "after_commit")

    again = run_subprocess(cfg, "run", "--json")
    assert again.returncode == 0, again.stderr
    (summary,) = json.loads(again.stdout)
    if point == "after_commit":
        assert summary["duplicates"] == 12 and summary["created"] == 0  # recognised, then disposed of
    else:
        assert summary["created"] == 8
    assert list((tmp_path / "mail").iterdir()) == []
    assert len(list((tmp_path / "mail Deleted Items").iterdir())) == 12
    counts = actions_per_message_id(tmp_path / "tickets.db")
    # 12 emails: the bounce matches no ticket and is only logged; the out-of-office joins ticket 1
    assert len(counts) == 11 and all(n == 1 for n in counts.values())
    statuses = [s for _, s, _ in inbound_rows(tmp_path / "tickets.db")]
    assert statuses.count("created") == 8


def test_second_run_waits_for_the_lock_and_exits_75(tmp_path: Path) -> None:
    import fcntl

    cfg = write_config(tmp_path)
    (tmp_path / "mail" / "a.eml").write_bytes(email_bytes("Hi", message_id="a@x"))
    lock = tmp_path / "tickets.db.lock"
    with open(lock, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run_subprocess(cfg, "run")
    assert result.returncode == 75
    assert "Another run holds" in result.stderr
    assert (tmp_path / "mail" / "a.eml").exists()
    ok = run_subprocess(cfg, "run")
    assert ok.returncode == 0, ok.stderr


def test_a_crash_between_disposal_and_its_record_is_settled_by_the_next_run(tmp_path: Path) -> None:
    """Killed after moving the emails to Deleted Items but before recording that: the next run finds them
    committed and no longer in the mailbox, records them as disposed of, and imports nothing twice."""
    cfg = write_config(tmp_path)
    copy_examples(tmp_path / "mail")
    crashed = run_subprocess(cfg, "run", env={"INTEGRATOR_FAULT": "after_dispose", "INTEGRATOR_WORKERS": "1"})
    assert crashed.returncode == 86, crashed.stderr
    assert list((tmp_path / "mail").iterdir()) == []  # moved on the "server"
    states = "SELECT state, count(*) FROM seen GROUP BY state"
    with contextlib.closing(sqlite3.connect(tmp_path / "tickets.db")) as con:
        assert con.execute(states).fetchall() == [("committed", 12)]

    again = run_subprocess(cfg, "run", "--json")
    assert again.returncode == 0, again.stderr
    (summary,) = json.loads(again.stdout)
    assert summary["fetched"] == 0 and summary["created"] == 0 and summary["duplicates"] == 0
    with contextlib.closing(sqlite3.connect(tmp_path / "tickets.db")) as con:
        assert con.execute(states).fetchall() == [("disposed", 12)]
    assert len(list((tmp_path / "mail Deleted Items").iterdir())) == 12
    assert all(n == 1 for n in actions_per_message_id(tmp_path / "tickets.db").values())


def test_one_bad_email_is_logged_retried_and_quarantined_after_three_runs(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    mail = tmp_path / "mail"
    (mail / "good.eml").write_bytes(email_bytes("Fine", message_id="good@x"))
    (mail / "poison.eml").write_bytes(email_bytes("poison pill", message_id="poison@x"))
    refuse_storing(tmp_path / "tickets.db", "NEW.subject LIKE '%poison%'")
    for run in (1, 2):
        result = invoke(cfg, "run", "--json")
        assert result.exit_code == 5
        (summary,) = json.loads(result.stdout)
        assert summary["errors"] == 1
        assert summary["created"] == (1 if run == 1 else 0)
        assert (mail / "poison.eml").exists()
    third = invoke(cfg, "run", "--json")
    (summary,) = json.loads(third.stdout)
    assert summary["quarantined"] == 1
    assert not (mail / "poison.eml").exists()
    assert (tmp_path / "mail Quarantine" / "poison.eml").exists()
    rows = invoke_json(cfg, "logs", "--mailbox", "Desk")
    statuses = [r["status"] for r in rows if r["subject"] == "poison pill"]
    assert statuses == ["quarantined", "error", "error"]
    assert "simulated storage fault" in rows[0]["detail"]
    # the raw bytes are kept
    con = sqlite3.connect(tmp_path / "tickets.db")
    (raw_id,) = con.execute("SELECT raw_id FROM inbound_log WHERE status = 'quarantined'").fetchone()
    con.close()
    with Store.open(tmp_path / "tickets.db") as store:
        assert store.raw_message(raw_id) == (tmp_path / "mail Quarantine" / "poison.eml").read_bytes()
    # a fourth run leaves it alone
    (fourth,) = invoke_json(cfg, "run")
    assert fourth["errors"] == 0 and fourth["fetched"] == 0


def test_an_email_imported_after_a_failed_run_has_its_failure_forgotten(tmp_path: Path) -> None:
    """A failed run counts towards quarantine only until the email is imported: then its count is gone, and
    the other failing email's count stays."""
    cfg = write_config(tmp_path)
    mail = tmp_path / "mail"
    (mail / "a.eml").write_bytes(email_bytes("flaky one", message_id="a@x"))
    (mail / "b.eml").write_bytes(email_bytes("flaky two", message_id="b@x"))
    (mail / "c.eml").write_bytes(email_bytes("Fine", message_id="c@x"))
    db = tmp_path / "tickets.db"
    refuse_storing(db, "NEW.subject LIKE '%flaky%'")
    assert invoke(cfg, "run").exit_code == 5
    failing = "SELECT source_id, attempts FROM failures ORDER BY source_id"
    with contextlib.closing(sqlite3.connect(db)) as con:
        assert con.execute(failing).fetchall() == [("a.eml", 1), ("b.eml", 1)]
    refuse_storing(db, "NEW.subject = 'flaky two'")  # the second one still fails
    second = invoke(cfg, "run", "--json")
    assert second.exit_code == 5
    (summary,) = json.loads(second.stdout)
    assert summary["created"] == 1 and summary["errors"] == 1
    with contextlib.closing(sqlite3.connect(db)) as con:
        assert con.execute(failing).fetchall() == [("b.eml", 2)]


def test_not_mime_empty_and_oversized_emails(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, extra_incoming="max_email_mb = 0.01\n")
    mail = tmp_path / "mail"
    (mail / "plain.eml").write_bytes(b"just some words, no headers at all\r\nsecond line\r\n")
    (mail / "empty.eml").write_bytes(b"")
    (mail / "big.eml").write_bytes(email_bytes("Big", message_id="big@x", body="x" * 20000))
    result = invoke(cfg, "run", "--json")
    (summary,) = json.loads(result.stdout)
    assert summary["created"] == 1
    assert summary["ignored"] == 1
    assert summary["quarantined"] == 1
    rows = {r["source_id"]: r for r in invoke_json(cfg, "logs")}
    assert rows["empty.eml"]["status"] == "ignored" and "empty" in rows["empty.eml"]["detail"]
    assert rows["big.eml"]["status"] == "quarantined" and "max_email_mb" in rows["big.eml"]["detail"]
    assert rows["plain.eml"]["status"] == "created"


def test_nesting_bomb_is_imported_without_crashing(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    depth = 3000
    parts = [b"From: a@example.org\r\nSubject: bomb\r\nMIME-Version: 1.0\r\n"]
    for i in range(depth):
        parts.append(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i))
    parts.append(b"Content-Type: text/plain\r\n\r\ninner\r\n")
    for i in reversed(range(depth)):
        parts.append(b"--b%d--\r\n" % i)
    raw = b"".join(parts) + b"x" * (3 * 1024 * 1024 - sum(map(len, parts)))
    (tmp_path / "mail" / "bomb.eml").write_bytes(raw)
    (summary,) = invoke_json(cfg, "run")
    assert summary["created"] == 1 and summary["errors"] == 0


def test_missing_folder_fails_that_mailbox_only(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        '\n[[mailboxes]]\nname = "Gone"\nconnection = "folder"\npath = "does-not-exist"\n',
    )
    (tmp_path / "mail" / "a.eml").write_bytes(email_bytes("Hi", message_id="a@x"))
    result = invoke(cfg, "run", "--json")
    assert result.exit_code == 5
    rows = {r["mailbox"]: r for r in json.loads(result.stdout)}
    assert rows["Desk"]["created"] == 1
    assert "does not exist" in rows["Gone"]["error"]


def test_database_locked_is_a_clear_error_and_nothing_moves(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    (tmp_path / "mail" / "a.eml").write_bytes(email_bytes("Hi", message_id="a@x"))
    with Store.open(tmp_path / "tickets.db"):
        pass
    holder = sqlite3.connect(tmp_path / "tickets.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = run_subprocess(cfg, "run", env={"INTEGRATOR_DB_TIMEOUT": "0.3"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode not in (0, 75)
    assert "locked" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "mail" / "a.eml").exists()


def test_full_disk_is_a_clear_error_and_nothing_is_lost(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    for i in range(30):
        (tmp_path / "mail" / f"{i:02}.eml").write_bytes(
            email_bytes(f"Report {i}", message_id=f"r{i}@x", sender=f"user{i}@example.org",
                        body="".join(chr(65 + (i * j) % 26) for j in range(40000)))
        )
    with Store.open(tmp_path / "tickets.db"):
        pass
    limit = (tmp_path / "tickets.db").stat().st_size + 200_000

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = run_subprocess(cfg, "run", "--json", env={"INTEGRATOR_WORKERS": "1"}, preexec_fn=small_disk)
    assert result.returncode in (1, 5), result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads(result.stdout)[0] if result.stdout.strip() else {"error": result.stderr}
    text = summary["error"] or ""
    assert "full" in text or "failing" in text
    # every email is either imported or still in its mailbox
    left = {p.name for p in (tmp_path / "mail").iterdir()}
    moved = {p.name for p in (tmp_path / "mail Deleted Items").iterdir()} if (
        tmp_path / "mail Deleted Items").exists() else set()
    assert left | moved == {f"{i:02}.eml" for i in range(30)}
    assert len(left) > 0
    after = run_subprocess(cfg, "run", "--json")
    assert after.returncode == 0, after.stderr
    assert len(actions_per_message_id(tmp_path / "tickets.db")) == 30
    assert list((tmp_path / "mail").iterdir()) == []


def test_incoming_service_off_imports_nothing_and_says_so(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "\n[services]\nincoming = false\n")
    (tmp_path / "mail" / "a.eml").write_bytes(email_bytes("Hi", message_id="a@x"))
    result = invoke(cfg, "run")
    assert result.exit_code == 0
    assert "incoming service is off" in result.stderr
    assert (tmp_path / "mail" / "a.eml").exists()


def test_limit_and_dry_run(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    copy_examples(tmp_path / "mail")
    dry = invoke(cfg, "run", "--dry-run", "--json")
    assert dry.exit_code == 0
    (summary,) = json.loads(dry.stdout)
    outcomes = [d["outcome"] for d in summary["decisions"]]
    assert outcomes.count("created") == 10  # replies cannot thread to tickets that a dry run never made
    assert outcomes.count("bounce") == 1 and outcomes.count("auto_reply") == 1
    assert len(list((tmp_path / "mail").iterdir())) == 12
    assert invoke_json(cfg, "tickets", "list") == []
    (limited,) = invoke_json(cfg, "import", "Desk", "--limit", "3")
    assert limited["created"] == 1 and limited["updated"] == 2
    assert len(list((tmp_path / "mail").iterdir())) == 9


def test_reply_to_closed_ticket_reopens_it(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    (tmp_path / "mail" / "1.eml").write_bytes(email_bytes("VPN down", message_id="v1@x"))
    invoke(cfg, "run")
    con = sqlite3.connect(tmp_path / "tickets.db")
    con.execute("UPDATE tickets SET status = 'closed'")
    con.commit()
    con.close()
    (tmp_path / "mail" / "2.eml").write_bytes(email_bytes("Re: VPN down", message_id="v2@x", in_reply_to="v1@x"))
    (summary,) = invoke_json(cfg, "run")
    assert summary["updated"] == 1
    ticket = invoke_json(cfg, "tickets", "show", "1")
    assert ticket["status"] == "open"
    assert [a["message_id"] for a in ticket["actions"]] == ["v1@x", "v2@x"]


def test_tag_of_a_missing_ticket_falls_back_to_a_new_ticket(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    (tmp_path / "mail" / "1.eml").write_bytes(email_bytes("RE: [#999] Old thing", message_id="o@x"))
    (summary,) = invoke_json(cfg, "run")
    assert summary["created"] == 1
    (row,) = invoke_json(cfg, "logs")
    assert "ticket 999, which does not exist" in row["detail"]


def test_mailbox_edit_reports_effective_values_and_validates(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    result = invoke(cfg, "mailbox", "edit", "Desk", "--set", "incoming.batch_size=20")
    assert result.exit_code == 0
    assert "incoming.batch_size: 250 -> 20" in result.stdout
    before = cfg.read_bytes()
    bad = invoke(cfg, "mailbox", "edit", "Desk", "--set", "incoming.after_import=shred")
    assert bad.exit_code == 3 and "allowed: move_to_deleted" in bad.stderr
    assert cfg.read_bytes() == before


def test_parse_workers_are_replaced_during_a_long_import(tmp_path: Path) -> None:
    """More emails than the workers handle before they are replaced: the run finishes and imports all."""
    cfg = write_config(tmp_path, extra_incoming="batch_size = 30\nsender_limit = 0\n")
    for i in range(150):
        (tmp_path / "mail" / f"{i:03d}.eml").write_bytes(email_bytes(f"Item {i}", message_id=f"w{i}@x"))
    result = run_subprocess(cfg, "run", "--json", env={"INTEGRATOR_WORKERS": "2", "INTEGRATOR_WORKER_TASKS": "20"})
    assert result.returncode == 0, result.stderr
    (summary,) = json.loads(result.stdout)
    assert summary["created"] == 150 and summary["disposed"] == 150


@pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(), reason="the parse workers fork from a fork server"
)
def test_a_fresh_parse_worker_finds_the_parser_and_its_libraries_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker forks from the fork server with the parser and the libraries it uses already loaded, so none
    of them loads again in every fresh worker, while the first batch waits: preparing the examples (HTML,
    attachments, a calendar, odd charsets) loads nothing afresh but codecs."""
    from halo_integrator.importer import FORKSERVER_PRELOAD, _pool

    monkeypatch.setenv("INTEGRATOR_WORKERS", "2")
    raws = [path.read_bytes() for path in sorted((EXAMPLES / "mail").glob("*.eml"))]
    pool = _pool()
    assert pool is not None
    try:
        before, loaded = pool.submit(modules_a_parse_loads, raws).result(timeout=120)
    finally:
        pool.shutdown()
    assert set(FORKSERVER_PRELOAD) <= set(before)
    # only the standard library's codecs may still load on first use; no part of ours or of a library
    assert [name for name in loaded if name.split(".")[0] not in sys.stdlib_module_names] == []


def _no_secrets(mailbox: object, credential: object) -> Callable[[str], str]:
    """The secrets of a run whose mailboxes need none (folders), or never get as far as a login."""

    def lookup(kind: str) -> str:
        raise KeyError(kind)

    return lookup


def test_a_stop_request_ends_the_run_after_the_batches_it_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the first Ctrl-C does (cli/run.py): the run stores and disposes of the batches it has fetched,
    fetches no more, starts no further mailbox and exits 130; the next run imports the rest, each email once."""
    from halo_integrator.config import load as load_config
    from halo_integrator.importer import Importer

    monkeypatch.setenv("INTEGRATOR_WORKERS", "1")
    second = '\n[[mailboxes]]\nname = "Sales"\naddress = "sales@example.com"\nconnection = "folder"\npath = "sales"\n'
    cfg_path = write_config(tmp_path, second, extra_incoming="batch_size = 10\nsender_limit = 0\n")
    (tmp_path / "sales").mkdir()
    for i in range(60):
        (tmp_path / "mail" / f"{i:03d}.eml").write_bytes(email_bytes(f"Item {i}", message_id=f"s{i}@x"))
    quote = email_bytes("Quote", sender="Buyer <buyer@example.net>", message_id="sales1@x")
    (tmp_path / "sales" / "one.eml").write_bytes(quote)
    cfg = load_config(cfg_path)

    with Store.open(cfg.database_path) as store:
        progress: list[int] = []

        def stop_after_the_first_batch(mailbox: str, done: int, total: int) -> None:
            progress.append(done)
            importer.request_stop()

        importer = Importer(cfg, store, secrets=_no_secrets, progress=stop_after_the_first_batch)
        result = importer.run()
        assert result.stopped and result.exit_code == 130
        (desk,) = result.mailboxes
        # the batch being parsed when the stop came is still stored and moved; no third one was fetched
        assert progress == [10, 20]
        assert (desk.fetched, desk.created, desk.disposed, desk.left) == (20, 20, 20, 40)
        assert desk.as_dict()["stopped"] is True and not desk.error
        assert result.skipped == [("Sales", "not started, the run was stopped")]
        assert len(list((tmp_path / "mail").glob("*.eml"))) == 40
        assert (tmp_path / "sales" / "one.eml").exists()

        again = Importer(cfg, store, secrets=_no_secrets).run()
        assert again.exit_code == 0 and not again.stopped
        assert [(m.mailbox, m.created, m.left, m.as_dict()["stopped"]) for m in again.mailboxes] == [
            ("Desk", 40, 0, False), ("Sales", 1, 0, False)
        ]
    per_id = actions_per_message_id(cfg.database_path)
    assert len(per_id) == 61 and set(per_id.values()) == {1}


def _holds_back_stop_signals(pid: int) -> bool | None:
    """Whether the process has SIGINT and SIGTERM in its signal mask (Linux /proc/PID/status); None if it is
    gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            blocked = int(next(line.split()[1] for line in fh if line.startswith("SigBlk:")), 16)
    except OSError:
        return None
    return all(blocked >> (signum - 1) & 1 for signum in (signal.SIGINT, signal.SIGTERM))


finds_parse_workers = pytest.mark.skipif(
    not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(),
    reason="finds the parse workers through Linux's /proc/PID/task/TID/children",
)


def _run_in_its_own_group(
    tmp_path: Path, prefix: str, *options: str, count: int = 2000, output: bool = True
) -> tuple[Path, subprocess.Popen[str]]:
    """`run` (with ``options``) started over ``count`` new emails, parsed by two workers, in a process group
    of its own as a terminal or a service manager would signal it; its config and its process."""
    cfg = write_config(tmp_path, extra_incoming="batch_size = 30\nsender_limit = 0\n")  # 24 or more: in parallel
    for i in range(count):
        (tmp_path / "mail" / f"{i:04d}.eml").write_bytes(email_bytes(f"Item {i}", message_id=f"{prefix}{i}@x"))
    pipe = subprocess.PIPE if output else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "halo_integrator", "--config", str(cfg), "run", *options],
        env={**os.environ, "INTEGRATOR_WORKERS": "2"}, cwd=tmp_path,
        stdout=pipe, stderr=pipe, text=True, start_new_session=True,
    )
    return cfg, proc


@contextlib.contextmanager
def _whole_group_killed_at_the_end(proc: subprocess.Popen[str]) -> Iterator[None]:
    """Whatever happens in the block, nothing of the run's process group outlives the test: the fork server
    and workers too (they keep the group even once the run is gone), should anything fail."""
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@finds_parse_workers
@pytest.mark.parametrize(
    ("signum", "when"),
    [(signal.SIGINT, "fork server starting"), (signal.SIGINT, "workers parsing"), (signal.SIGTERM, "workers parsing")],
)
def test_ctrl_c_or_sigterm_stops_a_run_cleanly_and_the_next_run_finishes_it(
    tmp_path: Path, signum: int, when: str
) -> None:
    """Ctrl-C in a terminal reaches the whole process group: the run, its fork server and its parse workers;
    so does the SIGTERM of a service manager stopping the job. The run stops after the batches it fetched,
    exits 130 (143 for SIGTERM) and says so; no process prints a traceback, and no worker dies under the
    batches still to store. The Ctrl-C cases signal as soon as the fork server process exists (usually still
    loading the parser), or once it has forked workers. The next run imports the rest, each email once."""
    count = 2000
    cfg, proc = _run_in_its_own_group(tmp_path, "c", count=count)
    with _whole_group_killed_at_the_end(proc):
        masks: list[bool | None] = []
        while proc.poll() is None:  # until the moment to press Ctrl-C has come
            servers, workers = fork_server_and_workers(proc.pid)
            if servers and (when == "fork server starting" or workers):
                masks = [_holds_back_stop_signals(p) for p in [*servers, *workers]]
                if None not in masks:  # none gone meanwhile
                    break
            time.sleep(0.002)
        # they hold both back from their first instruction on, so none can die of them half started
        assert masks and all(masks), masks
        os.killpg(proc.pid, signum)
        err = proc.communicate(timeout=120)[1]
    name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
    assert proc.returncode == (130 if signum == signal.SIGINT else 143), err
    assert "Traceback" not in err and "Fatal Python error" not in err, err
    assert "Stopping" in err and f"The run was stopped ({name})" in err, err
    left = len(list((tmp_path / "mail").glob("*.eml")))
    assert left > 0 and f"Desk: stopped with {left} new email(s) not imported yet" in err, err

    again = run_subprocess(cfg, "run", "--json", env={"INTEGRATOR_WORKERS": "2"})
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)[0]["created"] == left
    per_id = actions_per_message_id(tmp_path / "tickets.db")
    assert len(per_id) == count and set(per_id.values()) == {1}


@finds_parse_workers
def test_sigterm_stops_a_dry_run_which_says_so_and_changes_nothing(tmp_path: Path) -> None:
    """`run --dry-run` stops on SIGTERM as a run does, exits 143 and calls itself a dry run."""
    _, proc = _run_in_its_own_group(tmp_path, "d", "--dry-run")
    with _whole_group_killed_at_the_end(proc):
        while proc.poll() is None and not fork_server_and_workers(proc.pid)[0]:
            time.sleep(0.005)  # until the first batch goes to the parse workers
        os.killpg(proc.pid, signal.SIGTERM)
        err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err
    assert "Stopping (SIGTERM)" in err and "The dry run was stopped (SIGTERM)." in err, err
    assert re.search(r"Desk: stopped with \d+ new email\(s\) not looked at, so no decision is shown", err), err
    assert "not imported yet" not in err, err
    assert "Traceback" not in err, err
    assert len(list((tmp_path / "mail").glob("*.eml"))) == 2000
    with Store.open(tmp_path / "tickets.db") as store:
        assert store.db.execute("SELECT count(*) FROM tickets").fetchone()[0] == 0


@finds_parse_workers
def test_a_killed_run_leaves_no_parse_worker_behind_and_the_next_run_finishes_it(tmp_path: Path) -> None:
    """A run killed outright (SIGKILL, the out-of-memory killer) cannot shut its pool down. Its fork server and
    workers, which hold Ctrl-C and SIGTERM back, must still end, even while the dead run waits to be reaped;
    and the next run imports the rest and finishes the disposal of what the killed one had committed, each
    email once."""
    count = 2000
    cfg, proc = _run_in_its_own_group(tmp_path, "k", count=count, output=False)
    left: list[int] = []
    with _whole_group_killed_at_the_end(proc):
        below: list[int] = []
        while proc.poll() is None:  # until the fork server has its two workers
            if len(fork_server_and_workers(proc.pid)[1]) == 2:
                below = descendants(proc.pid)[1:]
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before its workers started"
        os.kill(proc.pid, signal.SIGKILL)  # the run alone: its children are not signalled
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            left = [p for p in below if running(p)]
            if not left:
                break
            time.sleep(0.05)
    assert left == [], [cmdline(p) for p in left]

    again = run_subprocess(cfg, "run", "--json", env={"INTEGRATOR_WORKERS": "2"})
    assert again.returncode == 0, again.stderr
    assert list((tmp_path / "mail").glob("*.eml")) == []
    per_id = actions_per_message_id(tmp_path / "tickets.db")
    assert len(per_id) == count and set(per_id.values()) == {1}


def test_ctrl_c_held_back_arrives_after_the_block_even_through_another_thread() -> None:
    """The kernel may hand Ctrl-C to any thread that does not mask it (a progress bar's, the pool's); Python
    then runs its handler in the main thread all the same. Held back, it must still wait for the block's end
    (where the pool starts its workers), and then arrive."""
    from halo_integrator.importer import _stop_signals_held

    quit_waiting = threading.Event()
    other = threading.Thread(target=quit_waiting.wait)
    other.start()
    reached_the_end = False
    try:
        with pytest.raises(KeyboardInterrupt), _stop_signals_held():
            os.kill(os.getpid(), signal.SIGINT)  # this thread masks it: the other thread takes it
            for _ in range(50):  # room for Python to run its handler here, were it not held back
                time.sleep(0.002)
            reached_the_end = True
        assert reached_the_end
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        quit_waiting.set()
        other.join()


def test_an_interrupted_run_lets_its_parse_workers_finish_and_exit_whatever_ctrl_c_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The workers hold Ctrl-C back, so only their pool can end them: on the way out of an interrupted run it
    is shut down with Ctrl-C held back too. Another Ctrl-C in the meantime must not cut that short (the exit
    then joined workers nobody had told to stop, for ever), nor be lost: it arrives once they are gone."""
    from halo_integrator.importer import _end_pool, _pool

    monkeypatch.setenv("INTEGRATOR_WORKERS", "2")
    pool = _pool()
    assert pool is not None
    busy = pool.submit(time.sleep, 2)  # what a worker is parsing when the run is interrupted
    waiting = [pool.submit(time.sleep, 0.2) for _ in range(20)]  # what the workers had not started
    workers = list(pool._processes.values())  # type: ignore[attr-defined]
    press = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))  # Ctrl-C during the shutdown
    press.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            _end_pool(pool)
    finally:
        press.join()
        pool.shutdown()  # nothing left to do, unless the shutdown above was cut short
    assert busy.done() and busy.exception() is None  # finished, not cut off
    assert any(future.cancelled() for future in waiting)
    assert {worker.exitcode for worker in workers} == {0}  # each told to stop, and gone


def test_a_stop_request_skips_the_credentials_not_yet_started(tmp_path: Path) -> None:
    """A mailbox read with two credentials of this instance: a stop asked for during the first does not
    connect the second."""
    from halo_integrator.config import load as load_config
    from halo_integrator.importer import Importer

    cfg_path = tmp_path / "integrator.toml"
    cfg_path.write_text(
        'instance = "prod"\ndatabase = "tickets.db"\n\n[[mailboxes]]\nname = "Support"\nconnection = "imap"\n'
        + "".join(
            f'[[mailboxes.credentials]]\nname = "{name}"\ninstance = "prod"\nhost = "127.0.0.1"\nport = 9\n'
            f'username = "{name}"\n'
            for name in ("first", "second")
        ),
        encoding="utf-8",
    )
    cfg = load_config(cfg_path)
    started: list[str] = []

    class StopDuringTheFirst(Importer):  # the stop arrives while the first credential is imported
        def import_mailbox(self, mailbox: Any, credential: Any) -> Any:
            started.append(credential.name)
            self.request_stop()
            return super().import_mailbox(mailbox, credential)

    with Store.open(cfg.database_path) as store:
        importer = StopDuringTheFirst(cfg, store, secrets=_no_secrets)
        result = importer.run()
    assert started == ["first"]
    assert result.skipped == [("Support", "credential second not started, the run was stopped")]
    assert result.stopped and result.exit_code == 130


def test_a_sigterm_during_a_run_that_only_sends_the_outbox_is_reported(tmp_path: Path) -> None:
    """With the incoming service off a run only sends the outbox; a stop asked for meanwhile still sets the
    exit code, as it does in a run that imports."""
    from halo_integrator.config import load as load_config
    from halo_integrator.importer import Importer

    cfg = load_config(write_config(tmp_path, "\n[services]\nincoming = false\n"))

    class StopWhileSending(Importer):
        def _send_outgoing(self, *args: Any, **kwargs: Any) -> None:
            self.request_stop(Stop.SIGTERM)
            super()._send_outgoing(*args, **kwargs)

    with Store.open(cfg.database_path) as store:
        result = StopWhileSending(cfg, store, secrets=_no_secrets).run()
    assert result.incoming_disabled and result.stopped_by is Stop.SIGTERM and result.exit_code == 143



def test_a_stop_asked_for_at_the_end_of_a_run_counts_and_one_after_it_changes_nothing(tmp_path: Path) -> None:
    """A stop that lands while the run finishes (its alerts checked, its outbox sent) still sets the exit code
    and the run record; once the run has returned, the importer refuses a stop and the result stands."""
    from halo_integrator.config import load as load_config
    from halo_integrator.importer import Importer

    cfg = load_config(write_config(tmp_path))

    class StopWhileCheckingAlerts(Importer):
        def _alerts(self) -> None:
            self.request_stop(Stop.SIGTERM)
            super()._alerts()

    with Store.open(cfg.database_path) as store:
        late = StopWhileCheckingAlerts(cfg, store, secrets=_no_secrets)
        stopped = late.run()
        assert stopped.stopped_by is Stop.SIGTERM and stopped.exit_code == 143
        assert store.db.execute("SELECT exit_code FROM runs ORDER BY id DESC").fetchone()[0] == 143

        importer = Importer(cfg, store, secrets=_no_secrets)
        result = importer.run()
        assert importer.request_stop(Stop.SIGTERM) is False
        assert result.stopped_by is None and result.exit_code == 0 and not importer.stop_requested
