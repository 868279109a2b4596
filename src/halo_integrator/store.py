"""The ticket store: the only module that talks to SQLite.

One file, WAL mode, schema by the named migrations in :mod:`halo_integrator.migrations`. The store owns its
transactions: callers group writes with :meth:`Store.transaction` (nested blocks are savepoints), so that a
ticket, its action, its attachments, the raw message and the inbound-log row are committed together or not
at all (DESIGN contract 1).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from halo_integrator import migrations
from halo_integrator.config import env_number
from halo_integrator.errors import StoreError
from halo_integrator.timeutil import stamp

if TYPE_CHECKING:
    from sqlite_utils import Database

    from halo_integrator.mail.model import Attachment, ParsedEmail
    from halo_integrator.rawbytes import StoredRaw

INBOUND_STATUSES = ("created", "updated", "duplicate", "ignored", "auto_reply", "bounce", "error", "quarantined")
OUTBOUND_STATUSES = ("queued", "sent", "failed", "suppressed")
# What the seen table says of an email a connector listed: committed (stored, not yet disposed of on the
# server), disposed, quarantined, released or retried (out of quarantine), skipped (there when `mailbox add
# --only-new` set the watermark: never imported).
SEEN_STATES = ("committed", "disposed", "quarantined", "released", "retried", "skipped")


def _database_class() -> type[Database]:
    """sqlite-utils' Database, imported without numpy and pandas.

    sqlite-utils offers their column types when they are installed; we never store numpy or pandas values,
    and on machines that have numpy its import alone is 0.1-0.2 s of every run's start-up.
    """
    import sys

    blocked = [name for name in ("numpy", "pandas") if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import numpy` raise ImportError
    try:
        from sqlite_utils import Database as database
    finally:
        for name in blocked:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]
    return database


def now() -> str:
    """The current UTC time as stored: ISO 8601 with microseconds and a Z."""
    return stamp(datetime.now(UTC))


def explain_sqlite_error(exc: sqlite3.Error, path: Path) -> StoreError:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return StoreError(
            f"The database {path} is locked by another program. Close it (or wait for it) and run again."
        )
    if "disk" in text and ("full" in text or "i/o" in text):
        return StoreError(f"The disk holding {path} is full or failing ({exc}). Free some space and run again.")
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return StoreError(
            f"Cannot write the database {path} ({exc}). Check that this user may write it and its directory."
        )
    if "malformed" in text or "not a database" in text:
        return StoreError(
            f"The database {path} is damaged ({exc}). Restore it from a backup; `sqlite3 {path.name} "
            "'.recover'` may save what is in it."
        )
    return StoreError(f"Database error in {path}: {exc}.")


_TICKETS = (
    "SELECT t.id, t.subject, t.status, t.mailbox, t.requester_name, t.requester_email, t.created_at, t.updated_at, "
    "t.linked_ticket_id, t.type, t.priority, t.category, t.team, t.agent, "
    "(SELECT count(*) FROM actions a WHERE a.ticket_id = t.id) AS action_count FROM tickets t"
)
"""Every ticket column the read side shows, and how many actions each ticket has."""


class Store:
    """The SQLite ticket store. Open with :meth:`open`; close with :meth:`close` or a ``with`` block."""

    def __init__(self, db: Database, path: Path) -> None:
        self.db = db
        self.path = path

    # ------------------------------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, path: Path, *, create: bool = True, busy_timeout: float | None = None) -> Store:
        """Open (and migrate) the store. ``busy_timeout`` seconds to wait for another writer, default
        ``$INTEGRATOR_DB_TIMEOUT`` or 10."""
        path = Path(path)
        if busy_timeout is None:
            busy_timeout = env_number("INTEGRATOR_DB_TIMEOUT", 10, maximum=86_400)  # SQLite's limit is 24 days
        if not create and not path.exists():
            raise StoreError(f"No database at {path}. Run `integrator init` or `integrator run` to create it.")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            # No sqlite-utils plugins: whatever another tool installed on this machine stays out of the store's
            # connection, and no run pays for scanning every installed package for them (about 25 ms).
            db = _database_class()(conn, execute_plugins=False)
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            # FULL: each commit reaches the disk before it returns. The importer moves an email away on the
            # server right after the commit that stores it; with NORMAL, WAL commits are only synced at a
            # checkpoint, so a power cut could undo a commit whose emails were already moved to Trash.
            # That costs one sync per committed batch (a bulk import commits once per incoming.batch_size emails).
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA cache_size = -4000")  # 4 MB: more of the indexes stay in memory
            conn.execute("PRAGMA foreign_keys = ON")
            migrations.apply(db)
        except sqlite3.Error as exc:
            raise explain_sqlite_error(exc, path) from None
        except OSError as exc:
            raise StoreError(f"Cannot create the database {path}: {exc.strerror or exc}.") from None
        return cls(db, path)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction, or inside one a savepoint; sqlite errors become StoreError.

        The store runs its own BEGIN/COMMIT and savepoints. Every savepoint has the same name (SQLite
        resolves a name to the innermost savepoint that has it), so its two statements are prepared once
        per connection instead of once per email stored.
        """
        conn = self.db.conn
        outer = not conn.in_transaction
        begin, keep, undo = (
            ("BEGIN", ("COMMIT",), ("ROLLBACK",)) if outer
            else ("SAVEPOINT nested", ("RELEASE nested",), ("ROLLBACK TO nested", "RELEASE nested"))
        )
        try:
            conn.execute(begin)
            try:
                yield
            except BaseException:
                try:
                    still_open = conn.in_transaction  # False when SQLite already ended it on the error
                except sqlite3.ProgrammingError:  # closed (a generator closed at exit): SQLite rolled back then
                    still_open = False
                if still_open:
                    for statement in undo:
                        conn.execute(statement)
                raise
            try:
                for statement in keep:
                    conn.execute(statement)
            except BaseException:
                if outer and conn.in_transaction:  # a COMMIT that failed leaves the transaction open
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise explain_sqlite_error(exc, self.path) from exc

    def _q(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        return list(self.db.query(sql, params))

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.db.execute(sql, params).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------------------------- import: reads
    def has_history(self, mailbox: str, credential: str) -> bool:
        """Whether this mailbox (and credential) has been here before: a run of it is on record, or emails of it
        are (imported, or left alone by `mailbox add --only-new`)."""
        return any(
            self.db.execute(sql, [mailbox, credential]).fetchone() is not None
            for sql in (
                "SELECT 1 FROM mailbox_runs WHERE mailbox = ? AND credential = ? LIMIT 1",
                "SELECT 1 FROM seen WHERE mailbox = ? AND credential = ? LIMIT 1",
            )
        )

    def seen_states(self, mailbox: str, credential: str, ids: Sequence[str]) -> dict[str, str]:
        """For the given source ids, the ones already committed and their state."""
        out: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for source_id, state in self.db.execute(
                f"SELECT source_id, state FROM seen WHERE mailbox = ? AND credential = ? AND source_id IN ({marks})",
                [mailbox, credential, *chunk],
            ):
                out[source_id] = state
        return out

    def seen_entry(self, mailbox: str, credential: str, source_id: str) -> dict[str, Any] | None:
        rows = self._q(
            "SELECT * FROM seen WHERE mailbox = ? AND credential = ? AND source_id = ?",
            [mailbox, credential, source_id],
        )
        return rows[0] if rows else None

    def find_by_fingerprint(self, fingerprint: str) -> tuple[int, int] | None:
        """(ticket_id, action_id) of an email already imported with this content fingerprint."""
        if not fingerprint:
            return None
        row = self.db.execute(
            "SELECT ticket_id, id FROM actions WHERE fingerprint = ? AND kind = 'email_in' ORDER BY id LIMIT 1",
            [fingerprint],
        ).fetchone()
        return (row[0], row[1]) if row else None

    def ticket_for_message_ids(self, message_ids: Iterable[str]) -> tuple[int, str] | None:
        """The ticket holding the newest of these Message-IDs (in or out), and the id that matched."""
        ids = [m for m in message_ids if m]
        if not ids:
            return None
        marks = ",".join("?" * len(ids))
        row = self.db.execute(
            f"SELECT ticket_id, message_id FROM actions WHERE message_id IN ({marks}) ORDER BY id DESC LIMIT 1",
            ids,
        ).fetchone()
        return (row[0], row[1]) if row else None

    def ticket_status(self, ticket_id: int) -> str | None:
        value = self._one("SELECT status FROM tickets WHERE id = ?", [ticket_id])
        return str(value) if value is not None else None

    def tickets_opened_by(self, address: str, since: str) -> int:
        """How many tickets this sender opened since a time (the loop throttle)."""
        return int(
            self._one(
                "SELECT count(*) FROM tickets WHERE requester_email = ? AND created_at >= ?", [address.lower(), since]
            )
        )

    def tickets_opened_like(self, domain: str, subject: str, since: str) -> int:
        """How many tickets with this subject senders of this domain opened since a time (loops whose sender
        address changes every time)."""
        return int(
            self._one(
                "SELECT count(*) FROM tickets WHERE substr(requester_email, -length(?1)) = ?1 AND subject = ?2 "
                "AND created_at >= ?3",
                ["@" + domain.lower(), subject, since],
            )
        )

    def throttle_reported(self, mailbox: str, address: str, since: str) -> bool:
        """Whether the throttle already quarantined an email of this sender since a time (report once)."""
        row = self.db.execute(
            "SELECT 1 FROM inbound_log WHERE mailbox = ? AND status = 'quarantined' AND time >= ? "
            "AND json_extract(decision_json, '$.throttle') = ? LIMIT 1",
            [mailbox, since, address.lower()],
        ).fetchone()
        return row is not None

    def ticket_participants(self, ticket_id: int) -> set[str]:
        """Every address on a ticket: the requester and everyone who sent, or was sent, its emails."""
        out: set[str] = set()
        row = self.db.execute("SELECT requester_email FROM tickets WHERE id = ?", [ticket_id]).fetchone()
        if row and row[0]:
            out.add(str(row[0]).lower())
        for sender, to_json, cc_json in self.db.execute(
            "SELECT from_address, to_json, cc_json FROM actions WHERE ticket_id = ?", [ticket_id]
        ):
            if sender:
                out.add(str(sender).lower())
            for entry in (*json.loads(to_json or "[]"), *json.loads(cc_json or "[]")):
                text = str(entry)
                address = text.rpartition("<")[2].rstrip(">") if "<" in text else text
                if address:
                    out.add(address.strip().lower())
        return out

    # ------------------------------------------------------------------------------ import: writes
    def save_raw(self, raw: StoredRaw) -> int:
        """The id of the stored raw message with these bytes: a new row, or the one that already has them."""
        cur = self.db.execute(  # a new email's bytes are new: one statement, not a look-up first
            "INSERT INTO raw_messages (sha256, size, data) VALUES (?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
            [raw.sha256, raw.size, raw.compressed],
        )
        if cur.rowcount == 1:
            return int(cur.lastrowid or 0)
        return int(self._one("SELECT id FROM raw_messages WHERE sha256 = ?", [raw.sha256]))

    def raw_message(self, raw_id: int) -> bytes:
        data = self._one("SELECT data FROM raw_messages WHERE id = ?", [raw_id])
        if data is None:
            raise StoreError(f"No raw message {raw_id} in the store.")
        from halo_integrator.rawbytes import decompress

        return decompress(data)

    def create_ticket(
        self,
        *,
        subject: str,
        mailbox: str,
        requester_name: str,
        requester_email: str,
        time: str,
        linked_ticket_id: int | None = None,
        **fields: str,
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO tickets (subject, mailbox, requester_name, requester_email, created_at, updated_at, "
            "linked_ticket_id, type, priority, category, team, agent, status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                subject,
                mailbox,
                requester_name,
                requester_email,
                time,
                time,
                linked_ticket_id,
                fields.get("type", ""),
                fields.get("priority", ""),
                fields.get("category", ""),
                fields.get("team", ""),
                fields.get("agent", ""),
                fields.get("status", "open"),
            ],
        )
        return int(cur.lastrowid or 0)

    def touch_ticket(self, ticket_id: int, time: str, *, status: str | None = None) -> None:
        if status:
            self.db.execute(
                "UPDATE tickets SET updated_at = ?, status = ? WHERE id = ?", [time, status, ticket_id]
            )
        else:
            self.db.execute("UPDATE tickets SET updated_at = ? WHERE id = ?", [time, ticket_id])

    def add_email_action(
        self,
        *,
        ticket_id: int,
        kind: str,
        mailbox: str,
        email: ParsedEmail,
        raw_id: int | None,
        time: str,
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO actions (ticket_id, kind, mailbox, message_id, fingerprint, from_name, from_address, "
            "to_json, cc_json, subject, date, body_text, body_html, in_reply_to, references_json, raw_id, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                ticket_id,
                kind,
                mailbox,
                email.message_id,
                email.fingerprint or None,
                *_content(email),
                email.in_reply_to[0] if email.in_reply_to else None,
                json.dumps(list(email.references)),
                raw_id,
                time,
            ],
        )
        action_id = int(cur.lastrowid or 0)
        self.add_attachments(action_id, email.attachments)
        return action_id

    def add_attachments(self, action_id: int, attachments: Iterable[Attachment]) -> None:
        for att in attachments:
            sha = att.sha256
            self.db.execute(
                "INSERT OR IGNORE INTO blobs (sha256, size, data) VALUES (?, ?, ?)", [sha, att.size, att.data]
            )
            self.db.execute(
                "INSERT INTO attachments (action_id, filename, content_type, size, sha256, content_id, inline) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [action_id, att.filename, att.content_type, att.size, sha, att.content_id, int(att.inline)],
            )

    def log_inbound(
        self,
        *,
        mailbox: str,
        credential: str,
        status: str,
        source_id: str | None = None,
        email: ParsedEmail | None = None,
        ticket_id: int | None = None,
        action_id: int | None = None,
        raw_id: int | None = None,
        detail: str = "",
        decision: dict[str, Any] | None = None,
        run_id: int | None = None,
        time: str | None = None,
    ) -> int:
        assert status in INBOUND_STATUSES, status
        cur = self.db.execute(
            "INSERT INTO inbound_log (time, run_id, mailbox, credential, source_id, status, message_id, subject, "
            "sender, ticket_id, action_id, raw_id, detail, decision_json) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                time or now(),
                run_id,
                mailbox,
                credential,
                source_id,
                status,
                email.message_id if email else None,
                email.subject if email else "",
                str(email.sender) if email else "",
                ticket_id,
                action_id,
                raw_id,
                detail,
                json.dumps(decision or {}, ensure_ascii=False, default=str),
            ],
        )
        return int(cur.lastrowid or 0)

    def log_outbound(
        self,
        *,
        mailbox: str,
        status: str,
        recipients: str,
        subject: str = "",
        message_id: str | None = None,
        ticket_id: int | None = None,
        action_id: int | None = None,
        detail: str = "",
    ) -> int:
        assert status in OUTBOUND_STATUSES, status
        cur = self.db.execute(
            "INSERT INTO outbound_log (time, mailbox, status, message_id, subject, recipients, ticket_id, "
            "action_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [now(), mailbox, status, message_id, subject, recipients, ticket_id, action_id, detail],
        )
        return int(cur.lastrowid or 0)

    def mark_seen(
        self,
        mailbox: str,
        credential: str,
        source_id: str,
        state: str,
        *,
        log_id: int | None = None,
        ticket_id: int | None = None,
    ) -> None:
        assert state in SEEN_STATES, state
        self.db.execute(
            "INSERT INTO seen (mailbox, credential, source_id, state, log_id, ticket_id, time) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (mailbox, credential, source_id) DO UPDATE SET "
            "state = excluded.state, log_id = coalesce(excluded.log_id, seen.log_id), "
            "ticket_id = coalesce(excluded.ticket_id, seen.ticket_id), time = excluded.time",
            [mailbox, credential, source_id, state, log_id, ticket_id, now()],
        )

    def settle_disposed(self, mailbox: str, credential: str, listed: Collection[str]) -> list[str]:
        """Record as disposed of the emails committed here that the server no longer lists (``listed``): a run
        ended (killed) between disposing of them on the server and recording that. Returns their ids."""
        rows = self.db.execute(
            "SELECT source_id FROM seen WHERE mailbox = ? AND credential = ? AND state = 'committed'",
            [mailbox, credential],
        ).fetchall()
        gone = [row[0] for row in rows if row[0] not in listed]
        if gone:
            self.mark_disposed(mailbox, credential, gone)
        return gone

    def mark_disposed(self, mailbox: str, credential: str, ids: Sequence[str]) -> None:
        with self.transaction():
            self.db.conn.executemany(
                "UPDATE seen SET state = 'disposed' WHERE mailbox = ? AND credential = ? AND source_id = ? "
                "AND state = 'committed'",
                [(mailbox, credential, i) for i in ids],
            )

    def record_failure(
        self, mailbox: str, credential: str, source_id: str, error: str, run_id: int | None, raw_id: int | None
    ) -> int:
        """Count one more failed run for a message; returns the number of failed runs so far.

        A message that fails twice in the same run still counts once: quarantine is after 3 *runs*.
        """
        row = self.db.execute(
            "SELECT attempts, last_run_id FROM failures WHERE mailbox = ? AND credential = ? AND source_id = ?",
            [mailbox, credential, source_id],
        ).fetchone()
        if row is None:
            attempts = 1
        elif run_id is not None and row[1] == run_id:
            attempts = int(row[0])
        else:
            attempts = int(row[0]) + 1
        self.db.execute(
            "INSERT INTO failures (mailbox, credential, source_id, attempts, last_error, last_run_id, raw_id, time) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (mailbox, credential, source_id) DO UPDATE SET "
            "attempts = excluded.attempts, last_error = excluded.last_error, last_run_id = excluded.last_run_id, "
            "raw_id = coalesce(excluded.raw_id, failures.raw_id), time = excluded.time",
            [mailbox, credential, source_id, attempts, error, run_id, raw_id, now()],
        )
        return attempts

    def clear_failures(self, mailbox: str, credential: str, source_ids: Iterable[str]) -> None:
        """Forget the failed runs of these messages (imported at last)."""
        self.db.conn.executemany(
            "DELETE FROM failures WHERE mailbox = ? AND credential = ? AND source_id = ?",
            [(mailbox, credential, source_id) for source_id in source_ids],
        )

    def set_seen_state(self, mailbox: str, credential: str, source_id: str, state: str) -> None:
        assert state in SEEN_STATES, state
        self.db.execute(
            "UPDATE seen SET state = ?, time = ? WHERE mailbox = ? AND credential = ? AND source_id = ?",
            [state, now(), mailbox, credential, source_id],
        )

    def quarantined(self, mailbox: str | None = None, *, log_id: int | None = None) -> list[dict[str, Any]]:
        """Emails now in quarantine (of one mailbox, or the one ``log_id`` put there): the inbound-log row
        that put each there."""
        where, params = "s.state = 'quarantined'", list[Any]()
        if mailbox:
            where += " AND s.mailbox = ? COLLATE NOCASE"
            params.append(mailbox)
        if log_id is not None:
            where += " AND l.id = ?"
            params.append(log_id)
        return self._q(
            "SELECT l.id, l.time, l.mailbox, l.credential, l.source_id, l.message_id, l.subject, l.sender, "
            "l.detail, l.raw_id, l.decision_json FROM seen s JOIN inbound_log l ON l.id = s.log_id "
            f"WHERE {where} ORDER BY l.id",
            params,
        )

    def actions_to_reprocess(self, *, ticket_id: int | None = None, since: str | None = None) -> list[dict[str, Any]]:
        where, params = ["kind = 'email_in'", "raw_id IS NOT NULL"], list[Any]()
        if ticket_id is not None:
            where.append("ticket_id = ?")
            params.append(ticket_id)
        if since:
            where.append("created_at >= ?")
            params.append(since)
        return self._q(f"SELECT id, ticket_id, raw_id FROM actions WHERE {' AND '.join(where)} ORDER BY id", params)

    def replace_action_content(self, action_id: int, email: ParsedEmail) -> None:
        """Refresh what an action shows from a new parse of its raw bytes (ticket and threading stay)."""
        self.db.execute(
            "UPDATE actions SET from_name = ?, from_address = ?, to_json = ?, cc_json = ?, subject = ?, date = ?, "
            "body_text = ?, body_html = ? WHERE id = ?",
            [*_content(email), action_id],
        )
        self.db.execute("DELETE FROM attachments WHERE action_id = ?", [action_id])
        self.add_attachments(action_id, email.attachments)

    # ----------------------------------------------------------------------------- connector state
    def state_get(self, mailbox: str, credential: str, key: str) -> str | None:
        value = self._one(
            "SELECT value FROM connector_state WHERE mailbox = ? AND credential = ? AND key = ?",
            [mailbox, credential, key],
        )
        return str(value) if value is not None else None

    def state_set(self, mailbox: str, credential: str, key: str, value: str) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT INTO connector_state (mailbox, credential, key, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (mailbox, credential, key) DO UPDATE SET value = excluded.value",
                [mailbox, credential, key, value],
            )

    def state_view(self, mailbox: str, credential: str) -> StoreState:
        return StoreState(self, mailbox, credential)

    def forget_mailbox(self, mailbox: str, credential: str | None = None) -> int:
        """Drop what the store knew of reading a mailbox of this name (or one credential of it): its
        connectors' state (read marks, watermarks, UIDVALIDITY), the ids it saw and its failure counts.
        Tickets and logs stay. For a name being added anew: a mailbox or credential removed earlier under it
        may have read another account, whose ids would pass for this one's. Returns how many seen ids were
        dropped."""
        where, params = "mailbox = ?", [mailbox]
        if credential is not None:
            where, params = "mailbox = ? AND credential = ?", [mailbox, credential]
        with self.transaction():
            seen = int(self._one(f"SELECT count(*) FROM seen WHERE {where}", params) or 0)
            for table in ("connector_state", "seen", "failures"):
                self.db.execute(f"DELETE FROM {table} WHERE {where}", params)
        return seen

    # ------------------------------------------------------------------------------------- runs
    def start_run(self, *, instance: str, dry_run: bool) -> int:
        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO runs (started_at, instance, dry_run) VALUES (?, ?, ?)", [now(), instance, int(dry_run)]
            )
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, exit_code: int) -> None:
        with self.transaction():
            self.db.execute("UPDATE runs SET finished_at = ?, exit_code = ? WHERE id = ?", [now(), exit_code, run_id])

    def record_mailbox_run(self, run_id: int, summary: dict[str, Any]) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT INTO mailbox_runs (run_id, mailbox, credential, started_at, seconds, ok, error, fetched, "
                "created, updated, ignored, duplicates, errors, disposed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    run_id,
                    summary["mailbox"],
                    summary.get("credential") or "",
                    summary.get("started_at") or now(),
                    summary.get("seconds", 0.0),
                    int(not summary.get("error")),
                    summary.get("error") or "",
                    summary.get("fetched", 0),
                    summary.get("created", 0),
                    summary.get("updated", 0),
                    summary.get("ignored", 0),
                    summary.get("duplicates", 0),
                    summary.get("errors", 0),
                    summary.get("disposed", 0),
                ],
            )

    # -------------------------------------------------------------------------------- read side
    def list_tickets(
        self, *, limit: int = 50, status: str | None = None, mailbox: str | None = None, search: str | None = None
    ) -> list[dict[str, Any]]:
        where, params = ["1 = 1"], []
        if status:
            where.append("t.status = ?")
            params.append(status)
        if mailbox:
            where.append("t.mailbox = ? COLLATE NOCASE")
            params.append(mailbox)
        if search:
            where.append("(t.subject LIKE ? OR t.requester_email LIKE ?)")
            params += [f"%{search}%", f"%{search}%"]
        sql = f"{_TICKETS} WHERE {' AND '.join(where)} ORDER BY t.updated_at DESC, t.id DESC LIMIT ?"
        return self._q(sql, [*params, limit])

    def get_ticket(self, ticket_id: int) -> dict[str, Any] | None:
        rows = self.list_tickets_by_ids([ticket_id])
        if not rows:
            return None
        ticket = rows[0]
        actions = self._q("SELECT * FROM actions WHERE ticket_id = ? ORDER BY id", [ticket_id])
        atts: dict[int, list[dict[str, Any]]] = {}
        if actions:
            marks = ",".join("?" * len(actions))
            for att in self._q(
                f"SELECT * FROM attachments WHERE action_id IN ({marks}) ORDER BY id", [a["id"] for a in actions]
            ):
                atts.setdefault(att["action_id"], []).append(att)
        ticket["actions"] = [dict(a, attachments=atts.get(a["id"], [])) for a in actions]
        return ticket

    def list_tickets_by_ids(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(ids))
        return self._q(
            f"{_TICKETS} WHERE t.id IN ({marks})",
            list(ids),
        )

    def logs(
        self,
        *,
        direction: str | None = None,
        mailboxes: Sequence[str] | None = None,
        status: str | None = None,
        since: str | None = None,
        search: str | None = None,
        limit: int = 50,
        after_id: dict[str, int] | None = None,
    ) -> list[dict[str, Any]]:
        """Inbound and outbound log rows, newest first; of any of ``mailboxes`` (case-insensitively), or all."""
        parts, params = [], []
        for table, dirn, who in (("inbound_log", "inbound", "sender"), ("outbound_log", "outbound", "recipients")):
            if direction and direction != dirn:
                continue
            where, p = ["1 = 1"], list[Any]()
            if mailboxes is not None:
                where.append(_one_of("mailbox", mailboxes))
                p += mailboxes
            if status:
                where.append("status = ?")
                p.append(status)
            if since:
                where.append("time >= ?")
                p.append(since)
            if search:
                where.append(f"(subject LIKE ? OR {who} LIKE ? OR detail LIKE ? OR message_id LIKE ?)")
                p += [f"%{search}%"] * 4
            if after_id and dirn in after_id:
                where.append("id > ?")
                p.append(after_id[dirn])
            extra = "sender, NULL AS recipients, source_id, credential" if dirn == "inbound" else (
                "NULL AS sender, recipients, NULL AS source_id, NULL AS credential"
            )
            parts.append(
                f"SELECT id, time, '{dirn}' AS direction, mailbox, status, message_id, subject, {extra}, "
                f"ticket_id, detail FROM {table} WHERE {' AND '.join(where)}"
            )
            params += p
        if not parts:
            return []
        sql = " UNION ALL ".join(parts) + " ORDER BY time DESC, id DESC LIMIT ?"
        return self._q(sql, [*params, limit])

    def log_entry(self, log_id: int, direction: str = "inbound") -> dict[str, Any] | None:
        table = "inbound_log" if direction == "inbound" else "outbound_log"
        rows = self._q(f"SELECT * FROM {table} WHERE id = ?", [log_id])
        if not rows:
            return None
        row = rows[0]
        row["direction"] = direction
        if "decision_json" in row:
            row["decision"] = json.loads(row.pop("decision_json") or "{}")
        return row

    def counts(self) -> dict[str, int]:
        return {
            "tickets": int(self._one("SELECT count(*) FROM tickets")),
            "actions": int(self._one("SELECT count(*) FROM actions")),
            "inbound_log": int(self._one("SELECT count(*) FROM inbound_log")),
            "raw_messages": int(self._one("SELECT count(*) FROM raw_messages")),
        }

    def prune_logs(self, keep_days: int) -> int:
        """Delete log rows older than keep_days (tickets and raw messages stay)."""
        if keep_days <= 0:
            return 0
        cutoff = stamp(datetime.now(UTC) - timedelta(days=keep_days))
        with self.transaction():
            a = self.db.execute("DELETE FROM inbound_log WHERE time < ?", [cutoff]).rowcount
            b = self.db.execute("DELETE FROM outbound_log WHERE time < ?", [cutoff]).rowcount
        return int(a + b)

    # ------------------------------------------------------------------------------ config history
    def record_config_change(
        self, *, agent: str, instance: str, mailbox: str, action: str, summary: str,
        changes: Sequence[dict[str, Any]], time: str | None = None,
    ) -> int:
        """One row of config change tracking; ``changes`` must already be masked (see history.py)."""
        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO config_history (time, agent, instance, mailbox, action, summary, changes_json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [time or now(), agent, instance, mailbox, action, summary,
                 json.dumps(list(changes), ensure_ascii=False, default=str)],
            )
        return int(cur.lastrowid or 0)

    def config_history(self, *, mailboxes: Sequence[str] | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Config changes, newest first; of any of ``mailboxes`` (case-insensitively), or all."""
        where, params = ("", []) if mailboxes is None else (f"WHERE {_one_of('mailbox', mailboxes)}", list(mailboxes))
        rows = self._q(
            f"SELECT * FROM config_history {where} ORDER BY time DESC, id DESC LIMIT ?", [*params, limit]
        )
        for row in rows:
            row["changes"] = json.loads(row.pop("changes_json") or "[]")
        return rows

    # ------------------------------------------------------------------------------ operations
    def mailbox_health(self) -> list[dict[str, Any]]:
        """Per mailbox and credential: ``runs``, ``last_run``, ``last_ok`` (None if never), ``last_error``
        (of the newest run, "" when it succeeded) and ``failures_in_a_row`` (runs since the last success)."""
        return self._q(
            "SELECT m.mailbox, m.credential, count(*) AS runs, max(m.started_at) AS last_run, "
            "max(CASE WHEN m.ok THEN m.started_at END) AS last_ok, "
            "sum(CASE WHEN NOT m.ok AND m.started_at > coalesce((SELECT max(o.started_at) FROM mailbox_runs o "
            "WHERE o.mailbox = m.mailbox AND o.credential = m.credential AND o.ok), '') THEN 1 ELSE 0 END) "
            "AS failures_in_a_row, "
            "(SELECT l.error FROM mailbox_runs l WHERE l.mailbox = m.mailbox AND l.credential = m.credential "
            "ORDER BY l.started_at DESC, l.id DESC LIMIT 1) AS last_error "
            "FROM mailbox_runs m GROUP BY m.mailbox, m.credential ORDER BY m.mailbox, m.credential"
        )

    def run_count(self) -> int:
        return int(self._one("SELECT count(*) FROM runs WHERE NOT dry_run"))

    def quick_check(self) -> list[str]:
        """SQLite's ``PRAGMA quick_check``: ``["ok"]`` for a sound database, else what is wrong."""
        try:
            return [str(r[0]) for r in self.db.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.Error as exc:
            return [str(exc)]

    def max_log_ids(self) -> dict[str, int]:
        """The newest id of each log (0 when empty), for following new rows with ``logs(after_id=...)``."""
        return {
            "inbound": int(self._one("SELECT coalesce(max(id), 0) FROM inbound_log")),
            "outbound": int(self._one("SELECT coalesce(max(id), 0) FROM outbound_log")),
        }

    # ------------------------------------------------------------------------------ outbound queue
    # Used by halo_integrator.outgoing.outbox; see migration m003_outbound_queue for the row's life.
    def queue_outbound(
        self,
        *,
        mailbox: str,
        kind: str,
        envelope_from: str,
        recipients: Sequence[str],
        raw_id: int,
        message_id: str | None,
        subject: str,
        ticket_id: int | None,
        action_id: int | None,
        time: str | None = None,
    ) -> int:
        """One email to send (its MIME bytes are the raw message ``raw_id``); due at once."""
        stamp = time or now()
        cur = self.db.execute(
            "INSERT INTO outbound_queue (created_at, mailbox, kind, status, message_id, subject, envelope_from, "
            "recipients, raw_id, ticket_id, action_id, next_attempt_at) "
            "VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
            [stamp, mailbox, kind, message_id, subject, envelope_from, ",".join(recipients), raw_id, ticket_id,
             action_id, stamp],
        )
        return int(cur.lastrowid or 0)

    def log_outbound_for_queue(self, queue_id: int, status: str, detail: str, *, time: str | None = None) -> int:
        """An outbound-log row about a queued email, with the queue row's mailbox, ids, subject and recipients."""
        assert status in OUTBOUND_STATUSES, status
        cur = self.db.execute(
            "INSERT INTO outbound_log (time, mailbox, status, message_id, subject, recipients, ticket_id, "
            "action_id, detail, queue_id) SELECT ?, mailbox, ?, message_id, subject, recipients, ticket_id, "
            "action_id, ?, id FROM outbound_queue WHERE id = ?",
            [time or now(), status, detail, queue_id],
        )
        return int(cur.lastrowid or 0)

    def outbound_item(self, queue_id: int) -> dict[str, Any] | None:
        rows = self._q("SELECT * FROM outbound_queue WHERE id = ?", [queue_id])
        return rows[0] if rows else None

    def outbound_due(self, *, time: str, stale_before: str, mailbox: str | None = None) -> list[int]:
        """Ids of queued emails due by ``time`` (and of ``sending`` ones claimed before ``stale_before``: their
        sender died), oldest first."""
        where = "((status = 'queued' AND next_attempt_at <= ?) OR (status = 'sending' AND claimed_at < ?))"
        params: list[Any] = [time, stale_before]
        if mailbox:
            where += " AND mailbox = ? COLLATE NOCASE"
            params.append(mailbox)
        return [int(r[0]) for r in self.db.execute(f"SELECT id FROM outbound_queue WHERE {where} ORDER BY id", params)]

    def claim_outbound(self, queue_id: int, *, time: str, stale_before: str) -> dict[str, Any] | None:
        """Mark a queued email as being sent by us (one more attempt); None if another sender has it or it is
        no longer waiting."""
        with self.transaction():
            cur = self.db.execute(
                "UPDATE outbound_queue SET status = 'sending', claimed_at = ?, attempts = attempts + 1 "
                "WHERE id = ? AND (status = 'queued' OR (status = 'sending' AND claimed_at < ?))",
                [time, queue_id, stale_before],
            )
            if cur.rowcount != 1:
                return None
            return self.outbound_item(queue_id)

    def finish_outbound(
        self,
        queue_id: int,
        *,
        status: str,
        time: str,
        answer: str = "",
        error: str = "",
        next_attempt_at: str | None = None,
    ) -> None:
        """Record the outcome of an attempt: ``sent``, ``queued`` (retry at ``next_attempt_at``) or ``failed``."""
        assert status in ("sent", "queued", "failed"), status
        self.db.execute(
            "UPDATE outbound_queue SET status = ?, claimed_at = NULL, answer = ?, last_error = ?, "
            "next_attempt_at = coalesce(?, next_attempt_at), sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END "
            "WHERE id = ?",
            [status, answer, error, next_attempt_at, status, time, queue_id],
        )

    def requeue_outbound(self, ids: Sequence[int] | None, *, time: str) -> list[int]:
        """Make failed or waiting emails due now (all of them when ``ids`` is None); the ids made due. Sent
        emails are never sent again."""
        where, params = "status IN ('queued', 'failed')", list[Any]()
        if ids is not None:
            if not ids:
                return []
            where += f" AND id IN ({','.join('?' * len(ids))})"
            params += list(ids)
        with self.transaction():
            due = [int(r[0]) for r in self.db.execute(f"SELECT id FROM outbound_queue WHERE {where}", params)]
            self.db.conn.executemany(
                "UPDATE outbound_queue SET status = 'queued', next_attempt_at = ? WHERE id = ?",
                [(time, i) for i in due],
            )
        return due

    def outbound_queue(
        self, *, statuses: Sequence[str] | None = None, mailbox: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Queue rows (without the MIME bytes), newest first."""
        where, params = ["1 = 1"], list[Any]()
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            params += list(statuses)
        if mailbox:
            where.append("mailbox = ? COLLATE NOCASE")
            params.append(mailbox)
        return self._q(
            "SELECT id, created_at, mailbox, kind, status, message_id, subject, recipients, ticket_id, action_id, "
            f"attempts, next_attempt_at, last_error, answer, sent_at FROM outbound_queue WHERE {' AND '.join(where)} "
            "ORDER BY id DESC LIMIT ?",
            [*params, limit],
        )

    def outbound_pending(self) -> int:
        """How many emails wait to be sent (queued or being sent)."""
        return int(self._one("SELECT count(*) FROM outbound_queue WHERE status IN ('queued', 'sending')"))

    def acknowledgements_since(self, recipient: str, since: str) -> int:
        """Acknowledgements queued for this address since a time (the per-recipient rate limit)."""
        return int(
            self._one(
                "SELECT count(*) FROM outbound_queue WHERE kind = 'new_ticket' AND recipients = ? AND created_at >= ?",
                [recipient.lower(), since],
            )
        )

    def latest_email_action(self, ticket_id: int) -> dict[str, Any] | None:
        """The newest email (in or out) on a ticket that has a Message-ID: what a reply answers."""
        rows = self._q(
            "SELECT id, kind, message_id, references_json, from_address, subject FROM actions WHERE ticket_id = ? "
            "AND kind IN ('email_in', 'email_out') AND message_id IS NOT NULL AND message_id != '' "
            "ORDER BY id DESC LIMIT 1",
            [ticket_id],
        )
        if not rows:
            return None
        row = rows[0]
        row["references"] = json.loads(row.pop("references_json") or "[]")
        return row

    # ------------------------------------------------------------------------------------ incidents
    def outbound_stuck(self) -> int:
        """Outgoing emails that will not be retried unless someone asks (`integrator outbox retry`)."""
        return int(self._one("SELECT count(*) FROM outbound_queue WHERE status = 'failed'"))

    def open_incidents(self) -> dict[str, dict[str, Any]]:
        """The incidents not yet recovered, by key."""
        return {r["key"]: r for r in self._q("SELECT * FROM incidents WHERE closed_at IS NULL ORDER BY id")}

    def open_incident(self, key: str, title: str, detail: str, time: str, queue_id: int | None) -> int:
        cur = self.db.execute(
            "INSERT INTO incidents (key, title, detail, opened_at, open_queue_id) VALUES (?, ?, ?, ?, ?)",
            [key, title, detail, time, queue_id],
        )
        return int(cur.lastrowid or 0)

    def close_incident(self, key: str, time: str, queue_id: int | None) -> None:
        self.db.execute(
            "UPDATE incidents SET closed_at = ?, close_queue_id = ? WHERE key = ? AND closed_at IS NULL",
            [time, queue_id, key],
        )


def _one_of(column: str, values: Sequence[str]) -> str:
    """An SQL condition: ``column`` is one of ``values`` (bound as parameters), case-insensitively."""
    if not values:
        return "0 = 1"
    return f"{column} COLLATE NOCASE IN ({', '.join('?' * len(values))})"


def _content(email: ParsedEmail) -> list[Any]:
    """An action's columns from_name .. body_html, in table order."""
    return [
        email.sender.name,
        email.sender.address,
        json.dumps([str(a) for a in email.to], ensure_ascii=False),
        json.dumps([str(a) for a in email.cc], ensure_ascii=False),
        email.subject,
        email.date.isoformat() if email.date else None,
        email.text_body,
        email.html_body,
    ]


class StoreState:
    """A connector's persistent key/value state (see connectors/base.py ``StateView``)."""

    def __init__(self, store: Store, mailbox: str, credential: str) -> None:
        self._store, self._mailbox, self._credential = store, mailbox, credential

    def get(self, key: str) -> str | None:
        return self._store.state_get(self._mailbox, self._credential, key)

    def set(self, key: str, value: str) -> None:
        self._store.state_set(self._mailbox, self._credential, key, value)
