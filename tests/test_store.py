"""The ticket store: migrations from a blank database, WAL mode, attachments stored once."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from halo_integrator import migrations
from halo_integrator.mail import parse
from halo_integrator.rawbytes import StoredRaw, stored
from halo_integrator.store import Store, now
from halo_integrator.timeutil import TIME_FORMAT, stamp
from helpers import email_bytes


def test_blank_database_gets_every_migration_once(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    with Store.open(db) as store:
        names = [r[0] for r in store.db.execute("SELECT name FROM _migrations ORDER BY rowid")]
        assert names == [name for name, _ in migrations.MIGRATIONS]
        tables = set(store.db.table_names())
        assert {"tickets", "actions", "attachments", "blobs", "raw_messages", "inbound_log", "outbound_log",
                "seen", "failures", "connector_state", "runs", "mailbox_runs"} <= tables
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with Store.open(db) as store:  # reopening applies nothing again
        assert migrations.apply(store.db) == []


def test_a_commit_is_on_disk_before_the_server_copy_is_moved(tmp_path: Path) -> None:
    """Contract 1: the disposal that follows a commit must not outlive it. In WAL mode only synchronous=FULL
    syncs the log at every commit (NORMAL waits for a checkpoint, and a power cut could undo the commit)."""
    with Store.open(tmp_path / "t.db") as store:
        assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_sqlite_utils_plugins_stay_out_of_the_store(tmp_path: Path) -> None:
    """A sqlite-utils plugin another tool installed (here registered by hand) never prepares the store's
    connection: its SQL functions are not there."""
    import types

    import sqlite_utils
    from sqlite_utils.plugins import pm

    plugin = types.ModuleType("stray_sqlite_utils_plugin")

    @sqlite_utils.hookimpl
    def prepare_connection(conn: sqlite3.Connection) -> None:
        conn.create_function("stray", 0, lambda: "from a plugin")

    plugin.prepare_connection = prepare_connection  # type: ignore[attr-defined]
    pm.register(plugin)
    try:
        assert sqlite_utils.Database(sqlite3.connect(":memory:")).execute("select stray()").fetchone()[0]
        with Store.open(tmp_path / "t.db") as store, pytest.raises(sqlite3.OperationalError, match="stray"):
            store.db.execute("select stray()")
    finally:
        pm.unregister(plugin)


def test_has_history_is_per_mailbox_and_credential(tmp_path: Path) -> None:
    with Store.open(tmp_path / "t.db") as store:
        assert not store.has_history("Desk", "prod")
        run_id = store.start_run(instance="", dry_run=False)
        store.record_mailbox_run(run_id, {"mailbox": "Desk", "credential": "prod"})
        store.mark_seen("Sales", "test", "7", "skipped")  # what `mailbox add --only-new` leaves
        assert store.has_history("Desk", "prod") and store.has_history("Sales", "test")
        assert not store.has_history("Desk", "test")
        assert not store.has_history("Sales", "prod")


def test_forget_mailbox_drops_what_was_known_of_reading_it_and_keeps_the_rest(tmp_path: Path) -> None:
    """A mailbox (or one credential) added again under a name the store knows: its seen ids, failure counts
    and connector state go; other mailboxes' and credentials' stay, and so do tickets and logs."""
    with Store.open(tmp_path / "t.db") as store:
        with store.transaction():
            for mailbox, credential in (("Support", "prod"), ("Support", "uat"), ("Sales", "prod")):
                store.mark_seen(mailbox, credential, "7/1", "disposed")
                store.record_failure(mailbox, credential, "7/2", "broken", None, None)
                store.state_view(mailbox, credential).set("uidvalidity:INBOX", "7")
                store.log_inbound(mailbox=mailbox, credential=credential, status="ignored", source_id="7/1")

        def left(table: str) -> list[tuple[str, str]]:
            return sorted(store.db.execute(f"SELECT mailbox, credential FROM {table}").fetchall())

        assert store.forget_mailbox("Support", "uat") == 1
        assert left("seen") == left("failures") == left("connector_state") == [("Sales", "prod"), ("Support", "prod")]
        assert store.forget_mailbox("Support") == 1
        assert left("seen") == left("failures") == left("connector_state") == [("Sales", "prod")]
        assert len(left("inbound_log")) == 3


def test_settle_disposed_records_only_the_committed_emails_the_server_no_longer_lists(tmp_path: Path) -> None:
    """A committed email still listed waits for its disposal (after a crash before the move, or with mark_read
    kept on the server); other states, and other mailboxes or credentials, are left as they are."""
    with Store.open(tmp_path / "t.db") as store:
        for source_id, state in (("1", "committed"), ("2", "committed"), ("3", "quarantined"), ("4", "skipped")):
            store.mark_seen("Desk", "prod", source_id, state)
        store.mark_seen("Desk", "test", "1", "committed")
        store.mark_seen("Sales", "prod", "1", "committed")
        assert store.settle_disposed("Desk", "prod", {"2"}) == ["1"]
        assert store.seen_states("Desk", "prod", ["1", "2", "3", "4"]) == {
            "1": "disposed", "2": "committed", "3": "quarantined", "4": "skipped"
        }
        assert store.seen_states("Desk", "test", ["1"]) == {"1": "committed"}
        assert store.seen_states("Sales", "prod", ["1"]) == {"1": "committed"}
        assert store.settle_disposed("Desk", "prod", {"2"}) == []


def test_a_transaction_left_open_by_an_interrupt_closes_quietly_after_the_store(tmp_path: Path) -> None:
    """A Ctrl-C that lands between a transaction's start and its ``with`` block leaves the transaction's
    generator suspended until the interpreter collects it, after the store has closed. Closing it then must
    not raise (Python would print "Exception ignored ..." on the way out), and what it held is not kept."""
    store = Store.open(tmp_path / "t.db")
    held = store.transaction()
    held.__enter__()
    store.mark_seen("Desk", "", "1:1", "committed")
    store.close()
    held.gen.close()  # what the collector does: GeneratorExit at the suspended yield
    with Store.open(tmp_path / "t.db") as again:
        assert again.seen_states("Desk", "", ["1:1"]) == {}


def test_migration_names_are_unique_and_ordered() -> None:
    names = [name for name, _ in migrations.MIGRATIONS]
    assert len(names) == len(set(names))
    assert names == sorted(names)
    assert names[0] == "m001_initial"


def test_a_failing_migration_leaves_nothing_half_done(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    Store.open(db).close()

    def broken(database: object) -> None:
        database.execute("CREATE TABLE half_done (x)")  # type: ignore[attr-defined]
        raise RuntimeError("boom")

    migrations.MIGRATIONS.append(("m999_broken", broken))
    try:
        con = sqlite3.connect(db, isolation_level=None)
        from sqlite_utils import Database

        with pytest.raises(RuntimeError):
            migrations.apply(Database(con))
        assert "half_done" not in Database(con).table_names()
        assert con.execute("SELECT count(*) FROM _migrations WHERE name = 'm999_broken'").fetchone()[0] == 0
        con.close()
    finally:
        migrations.MIGRATIONS.pop()


def test_attachments_and_raw_messages_are_stored_once(tmp_path: Path) -> None:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = "a@example.org"
    msg["Subject"] = "logo"
    msg["Message-ID"] = "<m1@x>"
    msg.set_content("see logo")
    msg.add_attachment(b"\x89PNG same bytes", maintype="image", subtype="png", filename="logo.png")
    raw = msg.as_bytes()
    email = parse(raw)
    with Store.open(tmp_path / "t.db") as store, store.transaction():
        kept = stored(raw)
        raw_id = store.save_raw(kept)
        assert store.save_raw(stored(raw)) == raw_id
        ticket = store.create_ticket(subject="logo", mailbox="M", requester_name="", requester_email="a@example.org",
                                     time=now())
        for _ in range(3):
            store.add_email_action(ticket_id=ticket, kind="email_in", mailbox="M", email=email, raw_id=raw_id,
                                   time=now())
        assert store.db.execute("SELECT count(*) FROM blobs").fetchone()[0] == 1
        assert store.db.execute("SELECT count(*) FROM attachments").fetchone()[0] == 3
        assert store.raw_message(raw_id) == raw
        assert len(kept.compressed) < len(raw) or len(raw) < 200


def test_raw_messages_are_zstandard_and_older_zlib_rows_stay_readable(tmp_path: Path) -> None:
    import hashlib
    import zlib

    raw = email_bytes("kept", message_id="raw@x") * 20
    with Store.open(tmp_path / "t.db") as store, store.transaction():
        kept = stored(raw)
        assert kept.compressed[:4] == b"\x28\xb5\x2f\xfd" and len(kept.compressed) < len(raw) // 4
        new_id = store.save_raw(kept)
        old = raw.replace(b"kept", b"older")  # a row as databases written with zlib hold it
        old_id = store.save_raw(
            StoredRaw(sha256=hashlib.sha256(old).hexdigest(), compressed=zlib.compress(old, 3), size=len(old))
        )
        assert store.raw_message(new_id) == raw
        assert store.raw_message(old_id) == old


def test_thread_lookup_prefers_the_newest_action(tmp_path: Path) -> None:
    with Store.open(tmp_path / "t.db") as store, store.transaction():
        t1 = store.create_ticket(subject="a", mailbox="M", requester_name="", requester_email="", time=now())
        t2 = store.create_ticket(subject="b", mailbox="M", requester_name="", requester_email="", time=now())
        store.add_email_action(ticket_id=t1, kind="email_in", mailbox="M",
                               email=parse(email_bytes("a", message_id="shared@x")), raw_id=None, time=now())
        store.add_email_action(ticket_id=t2, kind="email_in", mailbox="M",
                               email=parse(email_bytes("b", message_id="other@x")), raw_id=None, time=now())
        assert store.ticket_for_message_ids(["nope@x", "other@x"]) == (t2, "other@x")
        assert store.ticket_for_message_ids(["shared@x"]) == (t1, "shared@x")
        assert store.ticket_for_message_ids([]) is None


def test_opening_a_file_that_is_not_a_database_says_so(tmp_path: Path) -> None:
    from halo_integrator.errors import StoreError

    bad = tmp_path / "t.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError) as err:
        Store.open(bad)
    assert "damaged" in str(err.value) or "not a database" in str(err.value)


def test_a_failed_inner_transaction_undoes_only_its_own_writes(tmp_path: Path) -> None:
    """One bad email inside a batch: its savepoint is rolled back, the batch's other writes are kept, and a
    savepoint nested in a savepoint rolls back to the innermost one."""
    store = Store.open(tmp_path / "t.db")

    def ticket(subject: str) -> int:
        return store.create_ticket(subject=subject, mailbox="M", requester_name="", requester_email="", time=now())

    with store.transaction():
        ticket("kept 1")
        with pytest.raises(RuntimeError), store.transaction():
            ticket("undone 1")
            raise RuntimeError("bad email")
        with store.transaction():
            ticket("kept 2")
            with pytest.raises(RuntimeError), store.transaction():
                ticket("undone 2")
                raise RuntimeError("bad part")
            ticket("kept 3")
    with pytest.raises(RuntimeError), store.transaction():
        ticket("undone 3")
        raise RuntimeError("bad batch")
    subjects = [r[0] for r in store.db.execute("SELECT subject FROM tickets ORDER BY id").fetchall()]
    assert subjects == ["kept 1", "kept 2", "kept 3"]
    assert not store.db.conn.in_transaction


def test_stored_times_keep_their_format() -> None:
    moments = [
        datetime(2026, 11, 28, 9, 30, 5, 12, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2026, 6, 1, 0, 0, 0, 999999, tzinfo=timezone(timedelta(hours=-8))),
    ]
    assert [stamp(m) for m in moments] == [
        "2026-11-28T09:30:05.000012Z", "2026-01-01T21:34:05.000000Z", "2026-06-01T08:00:00.999999Z"
    ]
    assert all(datetime.strptime(stamp(m), TIME_FORMAT).replace(tzinfo=UTC) == m for m in moments)
