"""Schema changes, named and append-only: never edit a migration that has shipped; add a new one.

Each migration runs once, in order, inside the transaction that records it in ``_migrations``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlite_utils import Database

Migration = Callable[["Database"], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


def _script(db: Database, sql: str) -> None:
    """Run several statements inside the caller's transaction (``executescript`` would commit first)."""
    for statement in sql.split(";\n"):
        if statement.strip():
            db.execute(statement)


@migration
def m001_initial(db: Database) -> None:
    _script(
        db,
        """
        CREATE TABLE tickets (
            id INTEGER PRIMARY KEY,
            subject TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'open',
            mailbox TEXT NOT NULL,
            requester_name TEXT NOT NULL DEFAULT '',
            requester_email TEXT NOT NULL DEFAULT '',
            type TEXT NOT NULL DEFAULT '',
            priority TEXT NOT NULL DEFAULT '',
            category TEXT NOT NULL DEFAULT '',
            team TEXT NOT NULL DEFAULT '',
            agent TEXT NOT NULL DEFAULT '',
            linked_ticket_id INTEGER REFERENCES tickets(id),
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX idx_tickets_updated ON tickets(updated_at);

        -- the raw bytes of every email we imported or could not import, zlib-compressed, once per sha256
        CREATE TABLE raw_messages (
            id INTEGER PRIMARY KEY,
            sha256 TEXT NOT NULL UNIQUE,
            size INTEGER NOT NULL,
            data BLOB NOT NULL
        );

        -- one row per email in or out (and per note)
        CREATE TABLE actions (
            id INTEGER PRIMARY KEY,
            ticket_id INTEGER NOT NULL REFERENCES tickets(id),
            kind TEXT NOT NULL,
            mailbox TEXT NOT NULL,
            message_id TEXT,
            fingerprint TEXT,
            from_name TEXT NOT NULL DEFAULT '',
            from_address TEXT NOT NULL DEFAULT '',
            to_json TEXT NOT NULL DEFAULT '[]',
            cc_json TEXT NOT NULL DEFAULT '[]',
            subject TEXT NOT NULL DEFAULT '',
            date TEXT,
            body_text TEXT NOT NULL DEFAULT '',
            body_html TEXT,
            in_reply_to TEXT,
            references_json TEXT NOT NULL DEFAULT '[]',
            raw_id INTEGER REFERENCES raw_messages(id),
            created_at TEXT NOT NULL
        );
        CREATE INDEX idx_actions_ticket ON actions(ticket_id);
        CREATE INDEX idx_actions_message_id ON actions(message_id);
        CREATE INDEX idx_actions_fingerprint ON actions(fingerprint);

        -- attachment contents, stored once per sha256
        CREATE TABLE blobs (
            sha256 TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            data BLOB NOT NULL
        );
        CREATE TABLE attachments (
            id INTEGER PRIMARY KEY,
            action_id INTEGER NOT NULL REFERENCES actions(id),
            filename TEXT NOT NULL,
            content_type TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL REFERENCES blobs(sha256),
            content_id TEXT,
            inline INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX idx_attachments_action ON attachments(action_id);

        CREATE TABLE inbound_log (
            id INTEGER PRIMARY KEY,
            time TEXT NOT NULL,
            run_id INTEGER,
            mailbox TEXT NOT NULL,
            credential TEXT NOT NULL DEFAULT '',
            source_id TEXT,
            status TEXT NOT NULL,
            message_id TEXT,
            subject TEXT NOT NULL DEFAULT '',
            sender TEXT NOT NULL DEFAULT '',
            ticket_id INTEGER,
            action_id INTEGER,
            raw_id INTEGER REFERENCES raw_messages(id),
            detail TEXT NOT NULL DEFAULT '',
            decision_json TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX idx_inbound_time ON inbound_log(time);
        CREATE INDEX idx_inbound_mailbox ON inbound_log(mailbox, time);

        CREATE TABLE outbound_log (
            id INTEGER PRIMARY KEY,
            time TEXT NOT NULL,
            mailbox TEXT NOT NULL,
            status TEXT NOT NULL,
            message_id TEXT,
            subject TEXT NOT NULL DEFAULT '',
            recipients TEXT NOT NULL DEFAULT '',
            ticket_id INTEGER,
            action_id INTEGER,
            detail TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX idx_outbound_time ON outbound_log(time);

        -- what each connector has seen: every committed source id, and whether it was disposed of
        CREATE TABLE seen (
            mailbox TEXT NOT NULL,
            credential TEXT NOT NULL,
            source_id TEXT NOT NULL,
            state TEXT NOT NULL,            -- committed | disposed | quarantined
            log_id INTEGER,
            ticket_id INTEGER,
            time TEXT NOT NULL,
            PRIMARY KEY (mailbox, credential, source_id)
        ) WITHOUT ROWID;

        -- emails that failed; after 3 failed runs they are quarantined
        CREATE TABLE failures (
            mailbox TEXT NOT NULL,
            credential TEXT NOT NULL,
            source_id TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            last_error TEXT NOT NULL,
            last_run_id INTEGER,
            raw_id INTEGER REFERENCES raw_messages(id),
            time TEXT NOT NULL,
            PRIMARY KEY (mailbox, credential, source_id)
        ) WITHOUT ROWID;

        CREATE TABLE connector_state (
            mailbox TEXT NOT NULL,
            credential TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (mailbox, credential, key)
        ) WITHOUT ROWID;

        -- one row per mailbox x credential per run, for `doctor` and alerts
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            instance TEXT NOT NULL DEFAULT '',
            dry_run INTEGER NOT NULL DEFAULT 0,
            exit_code INTEGER
        );
        CREATE TABLE mailbox_runs (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            mailbox TEXT NOT NULL,
            credential TEXT NOT NULL DEFAULT '',
            started_at TEXT NOT NULL,
            seconds REAL NOT NULL DEFAULT 0,
            ok INTEGER NOT NULL,
            error TEXT NOT NULL DEFAULT '',
            fetched INTEGER NOT NULL DEFAULT 0,
            created INTEGER NOT NULL DEFAULT 0,
            updated INTEGER NOT NULL DEFAULT 0,
            ignored INTEGER NOT NULL DEFAULT 0,
            duplicates INTEGER NOT NULL DEFAULT 0,
            errors INTEGER NOT NULL DEFAULT 0,
            disposed INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX idx_mailbox_runs ON mailbox_runs(mailbox, started_at);
        """,
    )


def apply(db: Database) -> list[str]:
    """Apply every migration not yet recorded; return the names applied."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in db.execute("SELECT name FROM _migrations").fetchall()}
    applied = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        with db.atomic():
            fn(db)
            db.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, strftime('%Y-%m-%dT%H:%M:%SZ','now'))",
                [name],
            )
        applied.append(name)
    return applied


@migration
def m002_config_history(db: Database) -> None:
    """Config change tracking (``[config] track_changes = true``): one row per change a command makes to a
    mailbox, its credentials or its access lines. Values of secret-like keys are stored masked."""
    _script(
        db,
        """
        CREATE TABLE config_history (
            id INTEGER PRIMARY KEY,
            time TEXT NOT NULL,
            agent TEXT NOT NULL DEFAULT '',
            instance TEXT NOT NULL DEFAULT '',
            mailbox TEXT NOT NULL,
            action TEXT NOT NULL,           -- e.g. mailbox added | mailbox changed | credential added
            summary TEXT NOT NULL DEFAULT '',
            changes_json TEXT NOT NULL DEFAULT '[]'   -- [{"key": ..., "before": ..., "after": ...}]
        );
        CREATE INDEX idx_config_history_mailbox ON config_history(mailbox, time)
        """,
    )


@migration
def m003_outbound_queue(db: Database) -> None:
    """The outbound queue: every email we send is queued here in the same transaction as the ticket change
    (its MIME bytes are the raw message ``raw_id``), sent after the commit and retried with back-off.
    ``status``: queued (waiting, or waiting for a retry) | sending (claimed by a sender) | sent | failed (will
    not be retried unless `integrator outbox retry` asks). The outbound log gains the queue row it is about."""
    _script(
        db,
        """
        CREATE TABLE outbound_queue (
            id INTEGER PRIMARY KEY,
            created_at TEXT NOT NULL,
            mailbox TEXT NOT NULL,
            kind TEXT NOT NULL,             -- new_ticket | agent_reply | ticket_closed
            status TEXT NOT NULL DEFAULT 'queued',
            message_id TEXT,
            subject TEXT NOT NULL DEFAULT '',
            envelope_from TEXT NOT NULL,
            recipients TEXT NOT NULL,       -- envelope recipients, lower-case, comma-separated
            raw_id INTEGER NOT NULL REFERENCES raw_messages(id),
            ticket_id INTEGER,
            action_id INTEGER,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            claimed_at TEXT,
            last_error TEXT NOT NULL DEFAULT '',
            answer TEXT NOT NULL DEFAULT '',
            sent_at TEXT
        );
        CREATE INDEX idx_outbound_queue_due ON outbound_queue(status, next_attempt_at);
        CREATE INDEX idx_outbound_queue_recipient ON outbound_queue(kind, recipients, created_at);
        ALTER TABLE outbound_log ADD COLUMN queue_id INTEGER
        """,
    )


@migration
def m004_incidents(db: Database) -> None:
    """Alerts: one row per incident, opened once and closed once (never an email on every run)."""
    _script(
        db,
        """
        CREATE TABLE incidents (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL,
            title TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            opened_at TEXT NOT NULL,
            closed_at TEXT,
            open_queue_id INTEGER,
            close_queue_id INTEGER
        );
        CREATE UNIQUE INDEX idx_incidents_open ON incidents(key) WHERE closed_at IS NULL
        """,
    )


@migration
def m005_loop_throttle_indexes(db: Database) -> None:
    """The loop throttle counts a sender's (or a domain's same-subject) new tickets for every new email."""
    _script(
        db,
        """
        CREATE INDEX idx_tickets_requester ON tickets(requester_email, created_at);
        CREATE INDEX idx_tickets_subject ON tickets(subject, created_at)
        """,
    )


@migration
def m006_committed_seen_index(db: Database) -> None:
    """Every import looks for emails committed but not recorded as disposed (a run killed between the two):
    normally none, found through this small index rather than a scan of the mailbox's whole history."""
    _script(db, "CREATE INDEX idx_seen_committed ON seen(mailbox, credential) WHERE state = 'committed'")


@migration
def m007_maildir_ids_stay_put(db: Database) -> None:
    """A Maildir message's id is now ``new/<unique name>`` wherever the file is: before, a message found in
    ``cur/`` had the id ``cur/<unique name>``, and a mail client that read one moved it there and changed its
    id. The seen, failure and inbound-log rows written under the old form get the new one, so what `mailbox add
    --only-new` left alone, what was imported, what failed and what is in quarantine are still recognised. Only
    the folder connector's Maildir ids start with ``cur/`` (IMAP ids are ``<uidvalidity>/<uid>``, a plain
    folder's are file names); where a seen or failure row of both forms exists for one message, the ``new/``
    one is kept."""
    _script(db, "UPDATE inbound_log SET source_id = 'new/' || substr(source_id, 5) WHERE source_id GLOB 'cur/*'")
    for table in ("seen", "failures"):
        _script(
            db,
            f"""
            UPDATE OR IGNORE {table} SET source_id = 'new/' || substr(source_id, 5) WHERE source_id GLOB 'cur/*';
            DELETE FROM {table} WHERE source_id GLOB 'cur/*'
            """,
        )
