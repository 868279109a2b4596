"""End to end through the `integrator` CLI against the real Dovecot on loopback (tests/dovecot.py).

Each test has its own Dovecot user (a fresh mailbox) and its own config + SQLite store in tmp_path. Secrets
come from the in-memory keyring (`mailbox add --password-stdin`) or the documented environment override.
The server side is always checked from an independent imapclient session.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from dovecot import Dovecot, User
from fakecloud import FakeCloud
from halo_integrator.testing_keyring import MemoryKeyring
from helpers import (
    actions_per_message_id,
    email_bytes,
    free_port,
    invoke,
    invoke_json,
    refuse_storing,
    run_subprocess,
)
from mailsetup import fetched_in
from netproxy import NetProxy

pytestmark = pytest.mark.dovecot

SECRET_ENV = "INTEGRATOR_SECRET_SUPPORT_DEFAULT_PASSWORD"


# ------------------------------------------------------------------------------------------ helpers


def mailbox_toml(
    server: Dovecot,
    user: User,
    *,
    name: str = "Support",
    connection: str = "imap",
    security: str = "none",
    port: int | None = None,
    after_import: str = "move_to_deleted",
    incoming: str = "",
    credential: str = "",
) -> str:
    if port is None:
        ports = {
            ("imap", "ssl"): server.imaps_port,
            ("pop3", "ssl"): server.pop3s_port,
            ("imap", "starttls"): server.imap_port,
            ("imap", "none"): server.imap_port,
        }
        port = ports.get((connection, security), server.pop3_port)
    return f"""
[[mailboxes]]
name = "{name}"
address = "{user.name}@example.com"
connection = "{connection}"

[mailboxes.incoming]
after_import = "{after_import}"
{incoming}

[[mailboxes.credentials]]
name = "default"
host = "127.0.0.1"
port = {port}
security = "{security}"
username = "{user.name}"
ca_file = "server-ca.pem"
timeout = 10
{credential}
"""


def write_config(tmp_path: Path, server: Dovecot, *mailboxes: str) -> Path:
    shutil.copy(server.ca, tmp_path / "server-ca.pem")
    path = tmp_path / "integrator.toml"
    path.write_text('instance = "test"\ndatabase = "tickets.db"\n' + "".join(mailboxes), encoding="utf-8")
    return path


def config_for(tmp_path: Path, server: Dovecot, user: User, **kw: object) -> Path:
    return write_config(tmp_path, server, mailbox_toml(server, user, **kw))  # type: ignore[arg-type]


def secret_env(user: User, mailbox: str = "SUPPORT") -> dict[str, str]:
    return {f"INTEGRATOR_SECRET_{mailbox}_DEFAULT_PASSWORD": user.password}


def seed(server: Dovecot, user: User, messages: list[bytes], folder: str = "INBOX") -> None:
    server.append(user, messages, folder)


def message_ids_in(server: Dovecot, user: User, folder: str) -> list[str]:
    """The Message-IDs in a folder, sorted, read without changing anything."""
    data = fetched_in(server, user, folder, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
    return sorted(
        d[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode().strip().partition(":")[2].strip() for d in data.values()
    )


def flags_in(server: Dovecot, user: User, folder: str) -> list[tuple[bytes, ...]]:
    return [tuple(d[b"FLAGS"]) for d in fetched_in(server, user, folder, ["FLAGS"]).values()]


def _read_all(server: Dovecot, user: User, *, read: bool = True, oldest_only: bool = False) -> None:
    """An agent opens every email in the inbox (or only the oldest) in their own mail client, or marks them
    unread again."""
    client = server.imap(user)
    try:
        client.select_folder("INBOX")
        uids = sorted(client.search(["ALL"]))
        (client.add_flags if read else client.remove_flags)(uids[:1] if oldest_only else uids, [b"\\Seen"])
    finally:
        client.logout()


def inbound_statuses(db: Path) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return [r[0] for r in con.execute("SELECT status FROM inbound_log ORDER BY id")]
    finally:
        con.close()


def mails(prefix: str, count: int, size: int = 0) -> list[bytes]:
    return [
        email_bytes(
            f"{prefix} problem {n}", message_id=f"{prefix}-{n}@example.org", body=f"Body {n}\n" + "x" * size
        )
        for n in range(1, count + 1)
    ]


def run_json(cfg: Path, env: dict[str, str], *args: str) -> tuple[int, list[dict[str, object]], str]:
    result = invoke(cfg, "run", "--json", *args, env=env)
    return result.exit_code, json.loads(result.stdout), result.stderr


# ------------------------------------------------------------------------------------------ imports


@pytest.mark.parametrize(
    ("connection", "security"),
    [("imap", "ssl"), ("imap", "starttls"), ("pop3", "ssl"), ("pop3", "starttls")],
)
def test_import_and_replies_thread_into_tickets(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, connection: str, security: str
) -> None:
    server, user = dovecot_server, dovecot_user
    cfg = config_for(tmp_path, server, user, connection=connection, security=security)
    env = secret_env(user)
    seed(
        server,
        user,
        [
            email_bytes("Printer jams", message_id="orig@example.org"),
            email_bytes("VPN is down", message_id="vpn@example.org"),
        ],
    )
    code, (summary,), stderr = run_json(cfg, env)
    assert code == 0, stderr
    assert (summary["fetched"], summary["created"], summary["disposed"]) == (2, 2, 2)
    tickets = {t["subject"]: t for t in invoke_json(cfg, "tickets", "list")}
    printer = tickets["Printer jams"]["id"]

    seed(
        server,
        user,
        [
            email_bytes(f"Re: [#{printer}] Printer jams", message_id="tagged@example.org"),
            email_bytes(
                "Re: your question",
                message_id="threaded@example.org",
                in_reply_to="orig@example.org",
                references="<orig@example.org>",
            ),
        ],
    )
    code, (summary,), stderr = run_json(cfg, env)
    assert code == 0, stderr
    assert (summary["fetched"], summary["created"], summary["updated"]) == (2, 0, 2)
    shown = invoke_json(cfg, "tickets", "show", str(printer))
    assert [a["message_id"] for a in shown["actions"]] == [
        "orig@example.org",
        "tagged@example.org",
        "threaded@example.org",
    ]
    assert message_ids_in(server, user, "INBOX") == []
    if connection == "imap":
        assert len(message_ids_in(server, user, "Trash")) == 4
    assert set(actions_per_message_id(tmp_path / "tickets.db").values()) == {1}


@pytest.mark.parametrize("after_import", ["delete", "move_to_folder", "mark_read"])
def test_each_after_import(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, after_import: str
) -> None:
    server, user = dovecot_server, dovecot_user
    extra = 'move_folder = "Processed"' if after_import == "move_to_folder" else ""
    cfg = config_for(tmp_path, server, user, after_import=after_import, incoming=extra)
    seed(server, user, mails("a", 3))
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0, stderr
    assert summary["created"] == 3 and summary["disposed"] == 3
    expected = [f"<a-{n}@example.org>" for n in (1, 2, 3)]
    assert message_ids_in(server, user, "Trash") == []
    if after_import == "delete":
        assert message_ids_in(server, user, "INBOX") == []
    elif after_import == "move_to_folder":
        assert message_ids_in(server, user, "INBOX") == []
        assert message_ids_in(server, user, "Processed") == expected
    else:
        assert message_ids_in(server, user, "INBOX") == expected
        assert all(b"\\Seen" in f for f in flags_in(server, user, "INBOX"))
    # a second run imports only the new email and leaves the first three where the first run put them
    seed(server, user, mails("b", 1))
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0, stderr
    assert (summary["fetched"], summary["created"], summary["duplicates"]) == (1, 1, 0)
    assert set(actions_per_message_id(tmp_path / "tickets.db").values()) == {1}
    kept_in = {"delete": None, "move_to_folder": "Processed", "mark_read": "INBOX"}[after_import]
    if kept_in is not None:
        assert [m for m in message_ids_in(server, user, kept_in) if m.startswith("<a-")] == expected


def test_move_to_deleted_leaves_the_inbox_empty(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    server, user = dovecot_server, dovecot_user
    cfg = config_for(tmp_path, server, user)
    seed(server, user, mails("m", 5))
    result = invoke(cfg, "run", env=secret_env(user))
    assert result.exit_code == 0, result.stderr
    assert message_ids_in(server, user, "INBOX") == []
    assert message_ids_in(server, user, "Trash") == [f"<m-{n}@example.org>" for n in range(1, 6)]


# ------------------------------------------------------------------------------------------ mailbox add


def add_args(
    server: Dovecot, user: User, *extra: str, connection: str = "imap", port: int | None = None,
    security: str = "ssl",
) -> list[str]:
    """`mailbox add Support` for a Dovecot user, over SSL on the protocol's port unless told otherwise."""
    if port is None:
        port = server.pop3s_port if connection == "pop3" else server.imaps_port
    return [
        "mailbox",
        "add",
        "Support",
        "--connection",
        connection,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--security",
        security,
        "--username",
        user.name,
        "--address",
        f"{user.name}@example.com",
        "--ca-file",
        "server-ca.pem",
        *extra,
    ]


def add_scripted(cfg: Path, server: Dovecot, user: User, *extra: str, password: str | None = None,
                 **settings: Any) -> Any:
    """`mailbox add` as a script runs it: every setting as an option, the password on stdin, --yes."""
    args = add_args(server, user, "--password-stdin", "--yes", *extra, **settings)
    return invoke(cfg, *args, input=(user.password if password is None else password) + "\n")


def empty_config(tmp_path: Path, server: Dovecot) -> Path:
    return write_config(tmp_path, server)


def test_a_mailbox_added_under_a_removed_ones_name_starts_afresh(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """`mailbox remove`, then `mailbox add` of the same name for another account: what the store knew of the
    first account (its ids, its read marks) is forgotten, so the new mailbox's old read mail stays alone and
    none of its emails passes for one already seen."""
    server, first = dovecot_server, dovecot_user
    cfg = empty_config(tmp_path, server)
    seed(server, first, mails("a", 1))
    result = add_scripted(cfg, server, first, "--import-existing", "--after-import", "mark_read")
    assert result.exit_code == 0, result.output
    code, (summary,), stderr = run_json(cfg, {})
    assert code == 0 and summary["created"] == 1, stderr
    assert invoke(cfg, "mailbox", "remove", "Support", "--yes").exit_code == 0

    second = server.new_user()
    seed(server, second, mails("b", 2))
    _read_all(server, second)  # the new account's history: read long ago, never meant as tickets
    result = add_scripted(cfg, server, second, "--import-existing", "--after-import", "mark_read")
    assert result.exit_code == 0, result.output
    assert "an earlier mailbox named Support had seen; they are forgotten" in result.stderr
    code, (summary,), stderr = run_json(cfg, {})
    assert code == 0 and (summary["created"], summary["fetched"]) == (0, 0), stderr


def test_add_only_new_leaves_existing_mail_alone(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    server, user = dovecot_server, dovecot_user
    cfg = empty_config(tmp_path, server)
    seed(server, user, mails("old", 3))
    result = add_scripted(cfg, server, user, "--only-new")
    assert result.exit_code == 0, result.output
    assert "All 3 emails in INBOX will be turned into tickets and moved to Deleted Items." in result.output
    assert "left alone" in result.output
    assert user.password not in cfg.read_text()

    seed(server, user, mails("new", 2))
    code, (summary,), stderr = run_json(cfg, {})  # the password comes from the (in-memory) keyring
    assert code == 0, stderr
    assert (summary["fetched"], summary["created"]) == (2, 2)
    assert message_ids_in(server, user, "INBOX") == [f"<old-{n}@example.org>" for n in (1, 2, 3)]
    assert all(b"\\Seen" not in f for f in flags_in(server, user, "INBOX"))
    assert message_ids_in(server, user, "Trash") == ["<new-1@example.org>", "<new-2@example.org>"]


def migrate(server: Dovecot, user: User) -> None:
    """A server migration of the inbox: every email copied out and put back in another order (old-2, new-1,
    old-1, new-2, old-3) with its arrival time, under a new UIDVALIDITY (so new IMAP UIDs and new POP3 UIDLs);
    then a new email that reuses old-1's Message-ID, sent later (another Date and arrival time)."""
    client = server.imap(user)
    try:
        client.select_folder("INBOX")
        uids = client.search(["ALL"])
        kept = client.fetch(uids, ["BODY.PEEK[]", "INTERNALDATE", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
        by_id = {
            d[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode().split("<")[1].split("@")[0]: d for d in kept.values()
        }
        client.delete_messages(uids)
        client.expunge()
    finally:
        client.logout()
    server.renumber(user, 9090)
    later = datetime.now(UTC) + timedelta(minutes=5)
    reused = email_bytes(
        "scanner job", message_id="old-1@example.org", body="A different email.\n",
        date=format_datetime(later),
    )
    order = [by_id[name] for name in ("old-2", "new-1", "old-1", "new-2", "old-3")]
    server.append(
        user, [d[b"BODY[]"] for d in order] + [reused], arrived=[d[b"INTERNALDATE"] for d in order] + [later]
    )


def test_only_new_survives_a_migration_that_renumbers_the_mailbox(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """The server is migrated after `mailbox add --only-new`: a new UIDVALIDITY and new UIDs, the old emails
    now above some new ones. The old ones stay left alone (same Message-ID and arrival time); every new one
    is imported once, including one that reuses an old email's Message-ID."""
    server, user = dovecot_server, dovecot_user
    cfg = empty_config(tmp_path, server)
    seed(server, user, mails("old", 3))
    result = add_scripted(cfg, server, user, "--only-new")
    assert result.exit_code == 0, result.output
    seed(server, user, mails("new", 2))
    migrate(server, user)

    code, (summary,), stderr = run_json(cfg, {})
    assert code == 0, stderr
    assert (summary["fetched"], summary["created"]) == (3, 3)
    assert sorted(message_ids_in(server, user, "INBOX")) == [f"<old-{n}@example.org>" for n in (1, 2, 3)]
    assert message_ids_in(server, user, "Trash") == [
        "<new-1@example.org>", "<new-2@example.org>", "<old-1@example.org>"
    ]
    code, (summary,), stderr = run_json(cfg, {})  # the carried-over watermark holds on the next run too
    assert code == 0, stderr
    assert summary["fetched"] == 0


def test_pop3_only_new_survives_a_migration_that_changes_every_uidl(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """The same migration under POP3: every UIDL changes. The headers of every email are read once, the old
    ones recognised by Message-ID and Date and left on the server; the new ones are imported and deleted."""
    server, user = dovecot_server, dovecot_user
    cfg = empty_config(tmp_path, server)
    seed(server, user, mails("old", 3))
    result = add_scripted(cfg, server, user, "--only-new", connection="pop3")
    assert result.exit_code == 0, result.output
    assert "Reading the headers of the 3 emails there, one request each" in result.output
    seed(server, user, mails("new", 2))
    migrate(server, user)

    code, (summary,), stderr = run_json(cfg, {})
    assert code == 0, stderr
    assert (summary["fetched"], summary["created"], summary["disposed"]) == (3, 3, 3)
    assert sorted(message_ids_in(server, user, "INBOX")) == [f"<old-{n}@example.org>" for n in (1, 2, 3)]
    assert actions_per_message_id(tmp_path / "tickets.db") == {
        "new-1@example.org": 1, "new-2@example.org": 1, "old-1@example.org": 1
    }
    code, (summary,), stderr = run_json(cfg, {})
    assert code == 0, stderr
    assert summary["fetched"] == 0


def test_add_only_new_that_cannot_mark_the_old_mail_adds_nothing(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """The connection test passes, but reading the Message-IDs of the emails already there fails (the server
    rejects that FETCH): without its only-new watermark the next run would import them all, so the mailbox is
    taken out again and its password leaves the keyring."""
    server, user = dovecot_server, dovecot_user
    cfg = empty_config(tmp_path, server)
    seed(server, user, mails("old", 2))
    rejecting = NetProxy(
        server.imap_port,
        client_filter=lambda data: data.replace(b"HEADER.FIELDS (MESSAGE-ID)", b"HEADER.NOPE (MESSAGE-ID)"),
    )
    with rejecting:
        result = add_scripted(cfg, server, user, "--only-new", port=rejecting.port, security="none")
    assert result.exit_code != 0
    assert "the mailbox was not added" in result.stderr and "Reading the Message-IDs" in result.stderr
    assert "[[mailboxes]]" not in cfg.read_text()
    assert MemoryKeyring.entries() == {}
    assert message_ids_in(server, user, "INBOX") == ["<old-1@example.org>", "<old-2@example.org>"]


def test_add_only_new_waits_for_no_run(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    """While a run holds the lock, `add --only-new` saves nothing: that run could import the emails before
    they are marked as old."""
    from halo_integrator.lock import RunLock

    server, user = dovecot_server, dovecot_user
    cfg = empty_config(tmp_path, server)
    seed(server, user, mails("old", 1))
    with RunLock(tmp_path / "tickets.db"):
        result = add_scripted(cfg, server, user, "--only-new")
    assert result.exit_code == 75, result.output
    assert "Another run holds" in result.stderr
    assert "[[mailboxes]]" not in cfg.read_text()
    assert MemoryKeyring.entries() == {}


@pytest.mark.parametrize("connection", ["imap", "pop3"])
def test_edit_only_new_sets_the_watermark_again(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, connection: str
) -> None:
    """The command the migration warnings point to: a backlog already in the mailbox is left alone, and only
    mail arriving afterwards becomes tickets."""
    server, user = dovecot_server, dovecot_user
    cfg = config_for(tmp_path, server, user, connection=connection)
    seed(server, user, mails("backlog", 3))
    result = invoke(cfg, "mailbox", "edit", "Support", "--only-new", env=secret_env(user))
    assert result.exit_code == 0, result.output
    assert "Support: the 3 emails there now are left alone" in result.output
    assert ("one request each" in result.output) == (connection == "pop3")  # a long wait is announced
    seed(server, user, mails("fresh", 2))
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0, stderr
    assert (summary["fetched"], summary["created"]) == (2, 2)
    assert message_ids_in(server, user, "INBOX") == [f"<backlog-{n}@example.org>" for n in (1, 2, 3)]
    nothing = invoke(cfg, "mailbox", "edit", "Support", env=secret_env(user))
    assert nothing.exit_code == 2 and "--only-new" in nothing.stderr


def test_edit_only_new_keeps_what_the_store_knows_of_imported_emails(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """mark_read over POP3 leaves imported emails on the server; setting the watermark again does not turn
    their record (imported, disposed of) into "left alone"."""
    server, user = dovecot_server, dovecot_user
    cfg = config_for(tmp_path, server, user, connection="pop3", after_import="mark_read")
    seed(server, user, mails("kept", 2))
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0 and summary["created"] == 2, stderr
    result = invoke(cfg, "mailbox", "edit", "Support", "--only-new", env=secret_env(user))
    assert result.exit_code == 0, result.output
    con = sqlite3.connect(tmp_path / "tickets.db")
    try:
        states = sorted(state for (state,) in con.execute("SELECT state FROM seen"))
    finally:
        con.close()
    assert states == ["disposed", "disposed"]


def test_add_import_existing(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    server, user = dovecot_server, dovecot_user
    cfg = empty_config(tmp_path, server)
    seed(server, user, mails("old", 2))
    result = add_scripted(cfg, server, user, "--import-existing")
    assert result.exit_code == 0, result.output
    assert "All 2 emails in INBOX will be turned into tickets and moved to Deleted Items." in result.output
    code, (summary,), stderr = run_json(cfg, {})
    assert code == 0, stderr
    assert (summary["fetched"], summary["created"], summary["disposed"]) == (2, 2, 2)
    assert message_ids_in(server, user, "INBOX") == []


def test_add_with_a_wrong_password_saves_nothing_and_exits_4(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    server, user = dovecot_server, dovecot_user
    cfg = empty_config(tmp_path, server)
    before = cfg.read_bytes()
    result = add_scripted(cfg, server, user, "--import-existing", password="not-it")
    assert result.exit_code == 4, result.output
    assert "refused the password" in result.output and "nothing was saved" in result.output
    assert cfg.read_bytes() == before
    assert MemoryKeyring.entries() == {}


def test_add_counts_with_thousands_separators_and_promises_no_old_acknowledgements(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    server, user = dovecot_server, dovecot_user
    cfg = empty_config(tmp_path, server)
    client = server.imap(user)
    try:
        client.multiappend("INBOX", mails("many", 1000))
    finally:
        client.logout()
    result = add_scripted(cfg, server, user, "--only-new")
    assert result.exit_code == 0, result.output
    assert "All 1,000 emails in INBOX will be turned into tickets and moved to Deleted Items." in result.output
    assert "Emails older than a day get no acknowledgement" in result.output
    assert "The 1,000 emails there now are left alone" in result.output


def test_add_a_pop3_mailbox_says_the_mail_is_deleted(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    server, user = dovecot_server, dovecot_user
    cfg = empty_config(tmp_path, server)
    seed(server, user, mails("old", 2))
    result = add_scripted(cfg, server, user, "--import-existing", connection="pop3")
    assert result.exit_code == 0, result.output
    assert (
        "All 2 emails in INBOX will be turned into tickets and deleted from the server (POP3 has no Deleted Items "
        "folder)." in result.output
    )
    code, (summary,), stderr = run_json(cfg, {})
    assert code == 0, stderr
    assert (summary["created"], summary["disposed"]) == (2, 2)
    assert message_ids_in(server, user, "INBOX") == []


def test_add_a_pop3_mailbox_with_mark_read_says_the_mail_stays(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """POP3 has no read flag: the promise names what really happens."""
    server, user = dovecot_server, dovecot_user
    seed(server, user, mails("old", 1))
    result = add_scripted(
        empty_config(tmp_path, server), server, user, "--import-existing", "--after-import", "mark_read",
        connection="pop3",
    )
    assert result.exit_code == 0, result.output
    assert "The one email in INBOX will be turned into a ticket and left on the server (POP3 has no read flag" in (
        result.output
    )
    assert "marked as read" not in result.output


def test_add_with_move_to_folder_names_the_folder_and_the_run_moves_there(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    server, user = dovecot_server, dovecot_user
    cfg = empty_config(tmp_path, server)
    seed(server, user, mails("old", 2))
    result = add_scripted(
        cfg, server, user, "--import-existing", "--after-import", "move_to_folder", "--move-folder", "Done"
    )
    assert result.exit_code == 0, result.output
    assert "All 2 emails in INBOX will be turned into tickets and moved to the folder Done." in result.output
    code, (summary,), stderr = run_json(cfg, {})
    assert code == 0 and summary["disposed"] == 2, stderr
    assert message_ids_in(server, user, "Done") == ["<old-1@example.org>", "<old-2@example.org>"]


def test_add_with_a_deleted_items_folder_of_its_own(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """A server whose Deleted Items folder has neither the \\Trash attribute nor a usual name: `mailbox add`
    takes its name, the connection test finds it, and the run moves the emails there."""
    server, user = dovecot_server, dovecot_user
    client = server.imap(user)
    try:
        client.create_folder("Papierkorb-Support")
    finally:
        client.logout()
    seed(server, user, mails("old", 1))
    cfg = empty_config(tmp_path, server)
    result = add_scripted(cfg, server, user, "--import-existing", "--deleted-folder", "Papierkorb-Support")
    assert result.exit_code == 0, result.output
    assert "Deleted Items folder: Papierkorb-Support" in result.output
    code, (summary,), stderr = run_json(cfg, {})
    assert code == 0 and summary["disposed"] == 1, stderr
    assert message_ids_in(server, user, "Papierkorb-Support") == ["<old-1@example.org>"]
    assert message_ids_in(server, user, "Trash") == []


@pytest.mark.parametrize(
    ("extra", "connection", "says"),
    [
        (["--import-existing", "--after-import", "move_to_folder", "--move-folder", "Done"], "pop3",
         "POP3 has no folders"),
        (["--import-existing", "--folder", "Support"], "pop3", "--folder: POP3 has no folders"),
        (["--import-existing", "--deleted-folder", "Bin"], "pop3", "--deleted-folder: POP3 has no folders"),
        (["--import-existing", "--move-folder", "Done"], "imap",
         "--move-folder goes with --after-import move_to_folder"),
        (["--only-new", "--import-existing"], "imap", "exclude each other"),
        ([], "imap", "--import-existing or --only-new"),  # --yes, but nothing says what to do with the mail there
    ],
)
def test_add_refuses_options_that_cannot_work_together(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, extra: list[str], connection: str, says: str
) -> None:
    server, user = dovecot_server, dovecot_user
    cfg = empty_config(tmp_path, server)
    seed(server, user, mails("old", 1))
    result = add_scripted(cfg, server, user, *extra, connection=connection)
    assert result.exit_code == 2, result.output
    assert says in result.stderr
    assert "Support" not in cfg.read_text()


def test_add_with_certificate_checks_off_warns_and_says_so_in_the_config(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    server, user = dovecot_server, dovecot_user
    cfg = empty_config(tmp_path, server)
    args = [a for a in add_args(server, user, "--password-stdin", "--yes", "--import-existing",
                                "--insecure-skip-verify") if a not in ("--ca-file", "server-ca.pem")]
    result = invoke(cfg, *args, input=user.password + "\n")
    assert result.exit_code == 0, result.output
    assert "Certificate checks are off for this server" in result.stderr
    assert "tls_verify = false" in cfg.read_text()


@pytest.mark.parametrize("connection", ["imap", "pop3"])
def test_add_with_xoauth2_tokens_from_entra_id_stores_the_client_secret_and_runs(
    dovecot_server: Dovecot, cloud: FakeCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, connection: str
) -> None:
    """`mailbox add --auth oauth2 --oauth-provider microsoft365`: the client secret goes to the keyring (no
    token is stored, none expires), the connection test and every run log in with a token fresh from Entra
    ID."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cloud.ca_file)
    cloud.next_tokens = ["alice-oauth-token", "alice-oauth-token"]  # the test at add time, then the run
    server, alice = dovecot_server, User(name="alice", password="pw-alice")
    server.append(alice, [email_bytes("Token problem", message_id=f"{uuid.uuid4().hex}@example.org")])
    cfg = empty_config(tmp_path, server)
    args = add_args(
        server, alice, "--auth", "oauth2", "--oauth-provider", "microsoft365", "--tenant-id", cloud.tenant,
        "--client-id", cloud.client_id, "--authority", cloud.authority, "--password-stdin", "--yes",
        "--import-existing", connection=connection, port=server.pop3_port if connection == "pop3" else server.imap_port,
        security="none",
    )
    result = invoke(cfg, *args, input=cloud.client_secret + "\n")
    assert result.exit_code == 0, result.output
    text = cfg.read_text()
    assert 'oauth_provider = "microsoft365"' in text and cloud.client_secret not in text
    code, (summary,), stderr = run_json(cfg, {})
    assert code == 0 and summary["created"] >= 1, stderr
    assert cloud.next_tokens == []  # both logins asked Entra ID


def test_add_an_imap_mailbox_with_mark_read_counts_the_unread_emails(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    server, user = dovecot_server, dovecot_user
    seed(server, user, mails("old", 3))
    client = server.imap(user)
    try:
        client.select_folder("INBOX")
        client.add_flags([min(client.search(["ALL"]))], [b"\\Seen"])
    finally:
        client.logout()
    result = add_scripted(
        empty_config(tmp_path, server), server, user, "--import-existing", "--after-import", "mark_read"
    )
    assert result.exit_code == 0, result.output
    assert "All 2 unread emails in INBOX will be turned into tickets and marked as read" in result.output


@pytest.mark.parametrize(("answer", "imported"), [("a", 2), ("n", 0), ("c", None)])
def test_interactive_add_offers_all_new_or_cancel(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, answer: str, imported: int | None
) -> None:
    server, user = dovecot_server, dovecot_user
    cfg = empty_config(tmp_path, server)
    seed(server, user, mails("old", 2))
    # name, connection, address, host, security, login name, password; port and CA file given as options
    typed = [
        "Support",
        "imap",
        f"{user.name}@example.com",
        "127.0.0.1",
        "ssl",
        user.name,
        user.password,
        answer,
    ]
    result = invoke(
        cfg,
        "mailbox",
        "add",
        "--port",
        str(server.imaps_port),
        "--ca-file",
        "server-ca.pem",
        input="\n".join(typed) + "\n",
    )
    assert "All 2 emails in INBOX will be turned into tickets and moved to Deleted Items." in result.output
    assert "import only email arriving from now on" in result.output
    assert user.password not in result.output
    assert result.exit_code == 0, result.output
    if imported is None:
        assert "Cancelled" in result.output
        assert "Support" not in cfg.read_text()
        assert MemoryKeyring.entries() == {}  # the password typed is not kept either
        return
    seed(server, user, mails("new", 1))
    code, (summary,), stderr = run_json(cfg, {})
    assert code == 0, stderr
    assert summary["created"] == imported + 1


def test_show_and_list_never_print_the_secret(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    server, user = dovecot_server, dovecot_user
    cfg = empty_config(tmp_path, server)
    result = add_scripted(cfg, server, user, "--only-new")
    assert result.exit_code == 0, result.output
    for args in (
        ["mailbox", "show", "Support"],
        ["mailbox", "show", "Support", "--json"],
        ["mailbox", "list"],
        ["mailbox", "list", "--json"],
        ["mailbox", "test", "Support"],
    ):
        shown = invoke(cfg, *args)
        assert shown.exit_code == 0, shown.output
        assert user.password not in shown.output
        assert user.password not in shown.stderr
    assert user.name in invoke(cfg, "mailbox", "show", "Support").output


# ------------------------------------------------------------------------------------------ mailbox test


def test_mailbox_test_reports_folders_counts_and_capabilities(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    server, user = dovecot_server, dovecot_user
    cfg = config_for(tmp_path, server, user, security="ssl")
    seed(server, user, mails("t", 4))
    result = invoke(cfg, "mailbox", "test", "Support", env=secret_env(user))
    assert result.exit_code == 0, result.output
    assert "Reads folder: INBOX" in result.output
    assert "Deleted Items folder: Trash" in result.output
    assert "Emails waiting: 4" in result.output
    assert "MOVE" in result.output and "UIDPLUS" in result.output
    assert "certificate verified" in result.output
    assert message_ids_in(server, user, "INBOX") == [f"<t-{n}@example.org>" for n in range(1, 5)]


def _failing_test(cfg: Path, env: dict[str, str]) -> tuple[int, dict[str, object], str]:
    result = invoke(cfg, "mailbox", "test", "Support", env=env)
    as_json = invoke(cfg, "mailbox", "test", "Support", "--json", env=env)
    assert as_json.exit_code == result.exit_code
    (report,) = json.loads(as_json.stdout)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert len(failed) == 1, report
    return result.exit_code, failed[0], result.output


def test_mailbox_test_connect_refused(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    cfg = config_for(tmp_path, dovecot_server, dovecot_user, port=free_port())
    code, failed, text = _failing_test(cfg, secret_env(dovecot_user))
    assert code == 1
    assert failed["name"] == "connect"
    assert "refused the connection" in text


def test_mailbox_test_unknown_host(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host name that does not resolve. The lookup fails here as the resolver reports it (a real lookup
    could leave the machine); the rest of the path is ours and real."""
    real = socket.getaddrinfo

    def lookup(host: object, *args: object, **kwargs: object) -> object:
        if host == "imap.example.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    cfg = config_for(tmp_path, dovecot_server, dovecot_user)
    cfg.write_text(cfg.read_text().replace('host = "127.0.0.1"', 'host = "imap.example.invalid"'))
    code, failed, text = _failing_test(cfg, secret_env(dovecot_user))
    assert code == 1
    assert failed["name"] == "connect"
    assert "Cannot resolve the host name 'imap.example.invalid'" in text and "DNS settings" in text


def test_mailbox_test_untrusted_certificate(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    cfg = config_for(tmp_path, dovecot_server, dovecot_user, security="ssl")
    cfg.write_text(cfg.read_text().replace('ca_file = "server-ca.pem"\n', ""))
    code, failed, text = _failing_test(cfg, secret_env(dovecot_user))
    assert code == 1
    assert failed["name"] == "tls"
    assert "certificate" in text and "not trusted" in text and "ca_file" in text


def test_mailbox_test_wrong_password(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    cfg = config_for(tmp_path, dovecot_server, dovecot_user)
    code, failed, text = _failing_test(cfg, {SECRET_ENV: "not-the-password"})
    assert code == 4
    assert failed["name"] == "login"
    assert "refused the password" in text
    assert "not-the-password" not in text


@pytest.mark.parametrize("connection", ["imap", "pop3"])
def test_a_connection_lost_while_logging_in_is_no_password_problem(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, connection: str
) -> None:
    """A connection that drops during the login fails the login check of `mailbox test` but exits 1, and
    `run` reports a dropped connection, not a refused password: exit 4 would send the admin to change a
    password that was right."""
    server, user = dovecot_server, dovecot_user
    port, command = (server.imap_port, b"LOGIN") if connection == "imap" else (server.pop3_port, b"PASS")
    outcomes = []
    for args in (["mailbox", "test", "Support"], ["mailbox", "test", "Support", "--json"], ["run", "--json"]):
        with NetProxy(port) as proxy:

            def drop_at_login(data: bytes, proxy: NetProxy = proxy) -> bytes:
                if command in data.upper():
                    proxy.cut_after(0)  # the server's answer never arrives: the connection closes
                return data

            proxy.client_filter = drop_at_login
            cfg = config_for(tmp_path, server, user, connection=connection, port=proxy.port)
            outcomes.append(invoke(cfg, *args, env=secret_env(user)))
    text, as_json, ran = outcomes
    assert text.exit_code == as_json.exit_code == 1, text.output
    (report,) = json.loads(as_json.stdout)
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["login"], report
    assert "dropped the connection during login" in text.output and "refused the password" not in text.output
    assert ran.exit_code == 5, ran.output
    assert "dropped the connection during login" in ran.output and "refused the password" not in ran.output


def test_mailbox_test_missing_folder(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    cfg = config_for(tmp_path, dovecot_server, dovecot_user, incoming='folder = "Tickets"')
    code, failed, text = _failing_test(cfg, secret_env(dovecot_user))
    assert code == 1
    assert failed["name"] == "folder"
    assert "'Tickets' does not exist" in text and "INBOX" in text


def test_mailbox_test_missing_deleted_items(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    cfg = config_for(tmp_path, dovecot_server, dovecot_user, incoming='deleted_folder = "Deleted Items"')
    code, failed, text = _failing_test(cfg, secret_env(dovecot_user))
    assert code == 1
    assert failed["name"] == "deleted_folder"
    assert "'Deleted Items'" in text and "does not exist" in text


def test_mailbox_test_and_run_on_a_server_with_no_deleted_items_folder(
    dovecot_no_trash: Dovecot, tmp_path: Path
) -> None:
    """No folder is marked \\Trash and none has a usual name. `mailbox test` says so and what to set; a run
    still turns the emails into tickets, leaves them in INBOX, fails the mailbox with the same advice, and the
    next run makes no second ticket."""
    user = dovecot_no_trash.new_user()
    cfg = config_for(tmp_path, dovecot_no_trash, user)
    seed(dovecot_no_trash, user, mails("nt", 2))
    code, failed, text = _failing_test(cfg, secret_env(user))
    assert code == 1
    assert failed["name"] == "deleted_folder"
    assert "\\Trash" in text and "incoming.deleted_folder" in text

    for _ in range(2):
        result = run_subprocess(cfg, "run", "--json", env=secret_env(user))
        assert result.returncode == 5, result.stderr
        (summary,) = json.loads(result.stdout)
        assert "No Deleted Items folder" in summary["error"] and "incoming.deleted_folder" in summary["error"]
        assert summary["disposed"] == 0
    assert message_ids_in(dovecot_no_trash, user, "INBOX") == ["<nt-1@example.org>", "<nt-2@example.org>"]
    assert actions_per_message_id(tmp_path / "tickets.db") == {"nt-1@example.org": 1, "nt-2@example.org": 1}


# ------------------------------------------------------------------------------------------ failures on run


@pytest.mark.parametrize("connection", ["imap", "pop3"])
def test_wrong_password_on_run_exits_4_with_one_line(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, connection: str
) -> None:
    cfg = config_for(tmp_path, dovecot_server, dovecot_user, connection=connection)
    seed(dovecot_server, dovecot_user, mails("w", 1))
    result = run_subprocess(cfg, "run", env={SECRET_ENV: "not-the-password"})
    assert result.returncode == 4
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "refused the password" in lines[0] and dovecot_user.name in lines[0]
    assert "not-the-password" not in result.stderr + result.stdout
    assert message_ids_in(dovecot_server, dovecot_user, "INBOX") == ["<w-1@example.org>"]


def test_untrusted_certificate_on_run(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    cfg = config_for(tmp_path, dovecot_server, dovecot_user, security="ssl")
    cfg.write_text(cfg.read_text().replace('ca_file = "server-ca.pem"\n', ""))
    seed(dovecot_server, dovecot_user, mails("u", 1))
    result = run_subprocess(cfg, "run", env=secret_env(dovecot_user))
    assert result.returncode == 5
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "certificate" in lines[0] and "not trusted" in lines[0] and "ca_file" in lines[0]


def test_uidvalidity_reset_imports_nothing_twice(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    server, user = dovecot_server, dovecot_user
    cfg = config_for(tmp_path, server, user)
    seed(server, user, mails("v", 3))
    # a crash right after the commit: the tickets exist, the server copies were not moved yet
    crashed = run_subprocess(cfg, "run", env={**secret_env(user), "INTEGRATOR_FAULT": "after_commit"})
    assert crashed.returncode == 86
    assert len(message_ids_in(server, user, "INBOX")) == 3
    server.renumber(user, 777)
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0, stderr
    assert summary["created"] == 0 and summary["duplicates"] == 3 and summary["disposed"] == 3
    assert inbound_statuses(tmp_path / "tickets.db").count("duplicate") == 3
    assert actions_per_message_id(tmp_path / "tickets.db") == {f"v-{n}@example.org": 1 for n in (1, 2, 3)}
    assert message_ids_in(server, user, "INBOX") == []
    assert len(message_ids_in(server, user, "Trash")) == 3


def test_imap_crash_after_the_move_is_settled_by_the_next_run(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """Killed after the MOVE to Trash but before recording it: the next run finds the emails committed and gone
    from the INBOX, records them as disposed of, and fetches and imports nothing again."""
    server, user = dovecot_server, dovecot_user
    cfg = config_for(tmp_path, server, user)
    seed(server, user, mails("m", 3))
    crashed = run_subprocess(cfg, "run", env={**secret_env(user), "INTEGRATOR_FAULT": "after_dispose"})
    assert crashed.returncode == 86, crashed.stderr
    assert message_ids_in(server, user, "INBOX") == [] and len(message_ids_in(server, user, "Trash")) == 3
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0, stderr
    assert (summary["fetched"], summary["created"], summary["duplicates"]) == (0, 0, 0)
    with contextlib.closing(sqlite3.connect(tmp_path / "tickets.db")) as con:
        assert con.execute("SELECT state, count(*) FROM seen GROUP BY state").fetchall() == [("disposed", 3)]
    assert actions_per_message_id(tmp_path / "tickets.db") == {f"m-{n}@example.org": 1 for n in (1, 2, 3)}


@pytest.mark.parametrize("point", ["before_commit", "after_commit"])
def test_pop3_deletes_only_after_the_commit(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, point: str
) -> None:
    """A crash on either side of the commit: no DELE went over the wire (the server would have kept none had
    the session ended with QUIT), and the next run leaves every email in exactly one ticket and the mailbox
    empty."""
    server, user = dovecot_server, dovecot_user
    sent: list[bytes] = []

    def record(data: bytes) -> bytes:
        sent.append(data)
        return data

    seed(server, user, mails("p", 3))
    with NetProxy(server.pop3_port, client_filter=record) as proxy:
        cfg = config_for(tmp_path, server, user, connection="pop3", port=proxy.port)
        crashed = run_subprocess(cfg, "run", env={**secret_env(user), "INTEGRATOR_FAULT": point})
    assert crashed.returncode == 86, crashed.stderr
    assert b"RETR" in b"".join(sent) and b"DELE" not in b"".join(sent).upper()
    assert len(message_ids_in(server, user, "INBOX")) == 3
    cfg = config_for(tmp_path, server, user, connection="pop3")
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0, stderr
    if point == "after_commit":
        assert (summary["created"], summary["duplicates"]) == (0, 3)
    else:
        assert (summary["created"], summary["duplicates"]) == (3, 0)
    assert summary["disposed"] == 3
    assert actions_per_message_id(tmp_path / "tickets.db") == {f"p-{n}@example.org": 1 for n in (1, 2, 3)}
    assert message_ids_in(server, user, "INBOX") == []


@pytest.mark.parametrize("connection", ["imap", "pop3"])
def test_mark_read_never_imports_an_email_twice(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, connection: str
) -> None:
    """With mark_read the emails stay on the server; a later run (even after someone marked them unread
    again in their mail client) adds nothing."""
    server, user = dovecot_server, dovecot_user
    cfg = config_for(tmp_path, server, user, connection=connection, after_import="mark_read")
    seed(server, user, mails("r", 2))
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0 and summary["created"] == 2, stderr
    _read_all(server, user, read=False)
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0, stderr
    assert summary["created"] == 0 and summary["updated"] == 0
    assert summary["fetched"] == 0  # recognised by the store's record of ids, before any fetch
    assert actions_per_message_id(tmp_path / "tickets.db") == {"r-1@example.org": 1, "r-2@example.org": 1}
    assert message_ids_in(server, user, "INBOX") == ["<r-1@example.org>", "<r-2@example.org>"]


def test_pop3_an_email_that_cannot_be_stored_stays_on_the_server(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """Storing one email fails (the database refuses it): the run ends its POP3 session normally, with QUIT,
    which is when the server deletes what was DELEted; the failed email is still there and the next run
    imports it."""
    server, user = dovecot_server, dovecot_user
    cfg = config_for(tmp_path, server, user, connection="pop3")
    seed(server, user, mails("p", 3))
    refuse_storing(tmp_path / "tickets.db", "NEW.subject = 'p problem 2'")
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 5 and (summary["created"], summary["errors"], summary["disposed"]) == (2, 1, 2), stderr
    assert message_ids_in(server, user, "INBOX") == ["<p-2@example.org>"]
    refuse_storing(tmp_path / "tickets.db", "0")
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0 and summary["created"] == 1, stderr
    assert message_ids_in(server, user, "INBOX") == []
    assert actions_per_message_id(tmp_path / "tickets.db") == {f"p-{n}@example.org": 1 for n in (1, 2, 3)}


def test_mark_read_imports_a_new_email_that_an_agent_read_before_the_run(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """With mark_read over IMAP, an email that arrives after reading began becomes a ticket even when someone
    opened it in their mail client first; one already read when the mailbox was first read stays alone."""
    server, user = dovecot_server, dovecot_user
    cfg = config_for(tmp_path, server, user, after_import="mark_read")
    seed(server, user, mails("r", 2))
    _read_all(server, user, oldest_only=True)  # r-1: read long before
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0 and summary["created"] == 1, stderr
    seed(server, user, mails("n", 2))
    _read_all(server, user)  # an agent read both new ones first
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0 and summary["created"] == 2, stderr
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0 and (summary["created"], summary["fetched"]) == (0, 0), stderr
    assert actions_per_message_id(tmp_path / "tickets.db") == {
        "r-2@example.org": 1, "n-1@example.org": 1, "n-2@example.org": 1,
    }


@pytest.mark.parametrize("cut_short_by", ["--limit", "a failed email"])
def test_mark_read_keeps_listing_what_a_run_left_undone_even_once_read(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, cut_short_by: str
) -> None:
    """With mark_read, a run that did not settle every email it listed (cut short by --limit, or one email
    failed to store) leaves the read mark where it was: an email left undone is listed again by the next run
    even when an agent has read it meanwhile, and becomes a ticket then."""
    server, user = dovecot_server, dovecot_user
    cfg = config_for(tmp_path, server, user, after_import="mark_read")
    code, _, stderr = run_json(cfg, secret_env(user))  # reading begins with an empty INBOX
    assert code == 0, stderr
    seed(server, user, mails("n", 3))
    if cut_short_by == "--limit":
        code, (summary,), stderr = run_json(cfg, secret_env(user), "--limit", "1")
        assert code == 0 and summary["created"] == 1, stderr
    else:
        refuse_storing(tmp_path / "tickets.db", "NEW.subject = 'n problem 3'")
        code, (summary,), stderr = run_json(cfg, secret_env(user))
        assert code == 5 and (summary["created"], summary["errors"]) == (2, 1), stderr
        refuse_storing(tmp_path / "tickets.db", "0")  # storing works again
    _read_all(server, user)  # an agent reads what is left
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0 and summary["created"] == (2 if cut_short_by == "--limit" else 1), stderr
    assert actions_per_message_id(tmp_path / "tickets.db") == {f"n-{n}@example.org": 1 for n in (1, 2, 3)}
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0 and (summary["created"], summary["fetched"]) == (0, 0), stderr


def test_mark_read_begins_reading_at_mailbox_add(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    """`mailbox add --import-existing` with mark_read sets the read mark then: an email that arrives before the
    first run is imported by it even though an agent read it meanwhile; the mail read before stays alone."""
    server, user = dovecot_server, dovecot_user
    seed(server, user, mails("old", 2))
    _read_all(server, user, oldest_only=True)  # old-1: read long ago
    cfg = empty_config(tmp_path, server)
    result = add_scripted(cfg, server, user, "--import-existing", "--after-import", "mark_read")
    assert result.exit_code == 0, result.output
    seed(server, user, mails("new", 1))
    _read_all(server, user)  # before the first run
    code, (summary,), stderr = run_json(cfg, {})
    assert code == 0 and summary["created"] == 2, stderr
    assert sorted(actions_per_message_id(tmp_path / "tickets.db")) == ["new-1@example.org", "old-2@example.org"]


def test_mark_read_add_while_a_run_holds_the_lock_says_reading_begins_at_the_next_run(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    from halo_integrator.lock import RunLock

    server, user = dovecot_server, dovecot_user
    cfg = empty_config(tmp_path, server)
    with RunLock(tmp_path / "tickets.db"):  # a run of the other mailboxes is in progress
        result = add_scripted(cfg, server, user, "--import-existing", "--after-import", "mark_read")
    assert result.exit_code == 0, result.output
    assert "A run is in progress, so reading this mailbox begins at the next run" in result.stderr
    assert "Support" in cfg.read_text()


def test_a_mailbox_switched_to_mark_read_imports_what_an_agent_read_since_the_last_run(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """Runs with move_to_deleted leave nothing old in the inbox: after `mailbox edit --set
    incoming.after_import=mark_read`, an email that arrived since the last run becomes a ticket even though an
    agent read it in the meantime."""
    server, user = dovecot_server, dovecot_user
    cfg = config_for(tmp_path, server, user)
    code, _, stderr = run_json(cfg, secret_env(user))
    assert code == 0, stderr
    seed(server, user, mails("s", 1))
    _read_all(server, user)
    result = invoke(cfg, "mailbox", "edit", "Support", "--set", "incoming.after_import=mark_read")
    assert result.exit_code == 0, result.output
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0 and summary["created"] == 1, stderr
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0 and (summary["created"], summary["fetched"]) == (0, 0), stderr
    assert message_ids_in(server, user, "INBOX") == ["<s-1@example.org>"]


def test_a_mark_read_mailbox_from_a_version_without_read_marks_leaves_its_old_read_mail_alone(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """An older version read a mark_read inbox by its unread emails only, and kept no read mark: after the
    upgrade, the read mail there (imported or never meant to be) stays alone."""
    server, user = dovecot_server, dovecot_user
    cfg = config_for(tmp_path, server, user, after_import="mark_read")
    seed(server, user, mails("h", 2))
    _read_all(server, user)  # history, read long before
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0 and summary["created"] == 0, stderr
    con = sqlite3.connect(tmp_path / "tickets.db")
    try:  # what the older version kept of this mailbox: its UIDVALIDITY, nothing of read marks
        con.execute("DELETE FROM connector_state WHERE key NOT LIKE 'uidvalidity:%'")
        con.commit()
    finally:
        con.close()
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0 and (summary["created"], summary["fetched"]) == (0, 0), stderr


def test_mark_read_keeps_listing_the_first_backlog_until_it_is_all_imported(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """The unread emails already there on the first run are the backlog: a first run cut short by --limit
    leaves some, an agent reads them, and the next run still imports them."""
    server, user = dovecot_server, dovecot_user
    cfg = config_for(tmp_path, server, user, after_import="mark_read")
    seed(server, user, mails("b", 3))
    code, (summary,), stderr = run_json(cfg, secret_env(user), "--limit", "1")
    assert code == 0 and summary["created"] == 1, stderr
    _read_all(server, user)
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0 and summary["created"] == 2, stderr
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0 and (summary["created"], summary["fetched"]) == (0, 0), stderr
    assert actions_per_message_id(tmp_path / "tickets.db") == {f"b-{n}@example.org": 1 for n in (1, 2, 3)}


def test_mark_read_after_a_new_uidvalidity_lists_what_arrived_since_the_last_settled_run(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """Emails a run left undone, then read by an agent, then renumbered by a server migration (a new
    UIDVALIDITY): the next run lists what arrived since the read mark was last set, imports the one left and
    recognises the one imported before."""
    server, user = dovecot_server, dovecot_user
    cfg = config_for(tmp_path, server, user, after_import="mark_read")
    code, _, stderr = run_json(cfg, secret_env(user))  # reading begins with an empty INBOX
    assert code == 0, stderr
    seed(server, user, mails("u", 2))
    code, (summary,), stderr = run_json(cfg, secret_env(user), "--limit", "1")
    assert code == 0 and summary["created"] == 1, stderr
    client = server.imap(user)
    try:
        client.select_folder("INBOX")
        uids = client.search(["ALL"])
        kept = client.fetch(uids, ["BODY.PEEK[]", "INTERNALDATE"])
        client.delete_messages(uids)
        client.expunge()
    finally:
        client.logout()
    server.renumber(user, 7070)
    server.append(user, [d[b"BODY[]"] for d in kept.values()], arrived=[d[b"INTERNALDATE"] for d in kept.values()])
    _read_all(server, user)
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0 and (summary["created"], summary["duplicates"]) == (1, 1), stderr
    assert actions_per_message_id(tmp_path / "tickets.db") == {"u-1@example.org": 1, "u-2@example.org": 1}


def _assert_all_once(server: Dovecot, user: User, db: Path, count: int, prefix: str) -> None:
    assert message_ids_in(server, user, "INBOX") == []
    assert message_ids_in(server, user, "Trash") == sorted(
        f"<{prefix}-{n}@example.org>" for n in range(1, count + 1)
    )
    assert actions_per_message_id(db) == {f"{prefix}-{n}@example.org": 1 for n in range(1, count + 1)}


def test_connection_cut_mid_fetch_then_healthy_run(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    server, user = dovecot_server, dovecot_user
    seed(server, user, mails("cut", 6, size=20_000))
    with NetProxy(server.imap_port) as proxy:
        cfg = config_for(tmp_path, server, user, port=proxy.port, incoming="batch_size = 2")
        proxy.cut_after(60_000)  # login, list, the first batch of two, then part of the second batch
        code, (summary,), _ = run_json(cfg, secret_env(user))
        assert proxy.cuts == 1
    assert code == 5
    assert "connection was lost" in str(summary["error"])
    assert 0 < int(summary["created"]) < 6  # type: ignore[call-overload]
    # the importer fetches one batch ahead, so what it committed last may still wait on the server: it is
    # never imported twice, the next run only finishes its disposal
    left = message_ids_in(server, user, "INBOX")
    assert len(left) == 6 - int(summary["disposed"])  # type: ignore[call-overload]

    cfg = config_for(tmp_path, server, user)
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0, stderr
    _assert_all_once(server, user, tmp_path / "tickets.db", 6, "cut")


@pytest.mark.parametrize("connection", ["imap", "pop3"])
def test_stalled_server_times_out_then_healthy_run(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, connection: str
) -> None:
    server, user = dovecot_server, dovecot_user
    seed(server, user, mails("stall", 6, size=20_000))
    with NetProxy(server.imap_port if connection == "imap" else server.pop3_port) as proxy:
        sent = 0

        def stall_mid_fetch(data: bytes) -> bytes:
            nonlocal sent
            sent += len(data)
            if sent > 60_000:
                proxy.stall()  # what was read is held; nothing more reaches the client
            return data

        proxy.server_filter = stall_mid_fetch
        cfg = config_for(
            tmp_path, server, user, connection=connection, port=proxy.port, incoming="batch_size = 2"
        )
        cfg.write_text(cfg.read_text().replace("timeout = 10", "timeout = 1"))
        code, (summary,), _ = run_json(cfg, secret_env(user))
    assert code == 5
    assert "no answer within 1 s" in str(summary["error"])
    assert 0 < int(summary["created"]) < 6  # type: ignore[call-overload]

    cfg = config_for(tmp_path, server, user, connection=connection)
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0, stderr
    if connection == "imap":
        _assert_all_once(server, user, tmp_path / "tickets.db", 6, "stall")
    else:
        assert message_ids_in(server, user, "INBOX") == []
        assert actions_per_message_id(tmp_path / "tickets.db") == {f"stall-{n}@example.org": 1 for n in range(1, 7)}


def test_stall_while_moving_to_trash_then_healthy_run(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """The server stops answering when the first batch, already committed, is moved to Trash: the run times
    out on that mailbox with the batch's tickets made and its emails still in INBOX. The next run imports them
    not again (logged `duplicate`), only moves them, and imports the rest: every email in one ticket."""
    server, user = dovecot_server, dovecot_user
    seed(server, user, mails("mv", 6))
    with NetProxy(server.imap_port) as proxy:
        moves = 0

        def stall_at_move(data: bytes) -> bytes:
            nonlocal moves
            at = data.upper().find(b" UID MOVE ")
            if at < 0:
                return data
            moves += 1
            proxy.stall()  # nothing more goes either way
            return data[: data.rfind(b"\n", 0, at) + 1]  # the MOVE line is held back: it never reaches the server

        proxy.client_filter = stall_at_move
        cfg = config_for(tmp_path, server, user, port=proxy.port, incoming="batch_size = 2")
        cfg.write_text(cfg.read_text().replace("timeout = 10", "timeout = 1"))
        code, (summary,), _ = run_json(cfg, secret_env(user))
    assert moves == 1
    assert code == 5
    assert "Moving 2 message(s) from 'INBOX' to 'Trash'" in str(summary["error"])
    assert "no answer within 1 s" in str(summary["error"])
    assert (summary["created"], summary["disposed"]) == (2, 0)
    db = tmp_path / "tickets.db"
    assert actions_per_message_id(db) == {"mv-1@example.org": 1, "mv-2@example.org": 1}
    assert message_ids_in(server, user, "INBOX") == sorted(f"<mv-{n}@example.org>" for n in range(1, 7))
    assert message_ids_in(server, user, "Trash") == []

    cfg = config_for(tmp_path, server, user)
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0, stderr
    assert (summary["created"], summary["duplicates"], summary["disposed"]) == (4, 2, 6)
    assert inbound_statuses(db).count("duplicate") == 2
    _assert_all_once(server, user, db, 6, "mv")
    assert len(invoke_json(cfg, "tickets", "list")) == 6


def test_a_dead_server_does_not_block_the_other_mailbox(dovecot_server: Dovecot, tmp_path: Path) -> None:
    server = dovecot_server
    alive, dead = server.new_user(), server.new_user()
    cfg = write_config(
        tmp_path,
        server,
        mailbox_toml(server, dead, name="Dead", port=free_port()),
        mailbox_toml(server, alive, name="Alive"),
    )
    seed(server, alive, mails("ok", 2))
    env = {**secret_env(dead, "DEAD"), **secret_env(alive, "ALIVE")}
    code, rows, _ = run_json(cfg, env)
    assert code == 5
    by_name = {r["mailbox"]: r for r in rows}
    assert "refused the connection" in str(by_name["Dead"]["error"])
    assert by_name["Alive"]["created"] == 2 and by_name["Alive"]["error"] is None
    assert message_ids_in(server, alive, "INBOX") == []


def test_run_with_pop3_cut_then_healthy_run(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    server, user = dovecot_server, dovecot_user
    seed(server, user, mails("pop", 6, size=20_000))
    with NetProxy(server.pop3_port) as proxy:
        cfg = config_for(
            tmp_path, server, user, connection="pop3", port=proxy.port, incoming="batch_size = 2"
        )
        proxy.cut_after(60_000)
        code, (summary,), _ = run_json(cfg, secret_env(user))
        assert proxy.cuts == 1
    assert code == 5
    assert "connection was lost" in str(summary["error"])
    first = int(summary["created"])  # type: ignore[call-overload]
    deleted = int(summary["disposed"])  # type: ignore[call-overload]
    assert 0 < first < 6
    # a batch's DELEs are committed by a QUIT after its import; the batch imported last, while the next one
    # was being fetched, may still be there: the next run deletes it without importing it again
    assert len(message_ids_in(server, user, "INBOX")) == 6 - deleted
    cfg = config_for(tmp_path, server, user, connection="pop3")
    code, (summary,), stderr = run_json(cfg, secret_env(user))
    assert code == 0, stderr
    assert (summary["created"], summary["duplicates"]) == (6 - first, first - deleted)
    assert message_ids_in(server, user, "INBOX") == []
    assert actions_per_message_id(tmp_path / "tickets.db") == {f"pop-{n}@example.org": 1 for n in range(1, 7)}
