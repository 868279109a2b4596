"""The IMAP connector against a real Dovecot on loopback (tests/dovecot.py), no mocks."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import ssl
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from imapclient.imapclient import DELETED, SEEN

from dovecot import Dovecot, User
from fakecloud import FakeCloud
from halo_integrator.config import Config, Credential, Mailbox
from halo_integrator.connectors import make_connector
from halo_integrator.connectors._net import describe_connect_error
from halo_integrator.connectors.base import MemoryState
from halo_integrator.errors import (
    ConfigError,
    ConnectError,
    DisposeError,
    RetrievalError,
    SecretError,
    StoreError,
)
from helpers import free_port
from mailsetup import connector, message, seed, subjects_in, uids_in
from netproxy import NetProxy

pytestmark = pytest.mark.dovecot


# ------------------------------------------------------------------------------------------ reading


@pytest.mark.parametrize("security", ["ssl", "starttls", "none"])
def test_list_and_fetch_over_each_security(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, security: str
) -> None:
    seed(dovecot_server, dovecot_user, 3)
    with connector(dovecot_server, dovecot_user, tmp_path, security=security) as conn:
        ids = conn.list_ids()
        assert len(ids) == 3
        validity = ids[0].split("/")[0]
        assert validity.isdigit() and all(i.startswith(validity + "/") for i in ids)
        assert [int(i.split("/")[1]) for i in ids] == sorted(int(i.split("/")[1]) for i in ids)
        got = list(conn.fetch(ids))
        assert conn.count() == 3
    assert [sid for sid, _ in got] == ids
    assert [raw for _, raw in got] == [message(n) for n in (1, 2, 3)]
    # fetching never marks messages read
    flags = [d[b"FLAGS"] for d in uids_in(dovecot_server, dovecot_user, "INBOX").values()]
    assert len(flags) == 3 and all(SEEN not in f for f in flags)


def test_fetch_in_small_batches_and_skips_vanished(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    seed(dovecot_server, dovecot_user, 7, size=40_000)
    # batch_mb 0.1 MB = about 2 messages of 40 kB; batch_size 3
    with connector(dovecot_server, dovecot_user, tmp_path, batch_size=3, batch_mb=0.1) as conn:
        ids = conn.list_ids()
        other = dovecot_server.imap(dovecot_user)
        other.select_folder("INBOX")
        gone = int(ids[4].split("/")[1])
        other.add_flags([gone], [DELETED])
        other.uid_expunge([gone])
        other.logout()
        got = [sid for sid, _ in conn.fetch([*ids, ids[0]])]
    assert got == [i for i in ids if i != ids[4]]


def _fetched_sets(sent: list[bytes]) -> list[int]:
    """How many UIDs each ``UID FETCH ... (BODY.PEEK[])`` command the client sent asked for."""
    sizes = []
    for line in b"".join(sent).split(b"\r\n"):
        found = re.search(rb"UID FETCH ([0-9:,]+) \(?(?:UID )?BODY\.PEEK\[\]", line, re.IGNORECASE)
        if found:
            count = 0
            for part in found.group(1).split(b","):
                low, _, high = part.partition(b":")
                count += int(high or low) - int(low) + 1
            sizes.append(count)
    return sizes


@pytest.mark.parametrize(("size", "expected"), [(0, [3, 3, 1]), (40_000, [2, 2, 2, 1])])
def test_fetch_batches_are_bounded_by_count_and_bytes(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, size: int, expected: list[int]
) -> None:
    """batch_size 3 bounds small emails; batch_mb 0.1 (about two 40 kB emails) bounds big ones, as the
    commands on the wire show."""
    seed(dovecot_server, dovecot_user, 7, size=size)
    sent: list[bytes] = []

    def record(chunk: bytes) -> bytes:
        sent.append(chunk)
        return chunk

    with NetProxy(dovecot_server.imap_port, client_filter=record) as proxy, connector(
        dovecot_server, dovecot_user, tmp_path, port=proxy.port, batch_size=3, batch_mb=0.1
    ) as conn:
        got = list(conn.fetch(conn.list_ids()))
    assert len(got) == 7
    assert _fetched_sets(sent) == expected


def test_answers_of_another_shape_are_read_by_imapclient(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """The connector reads the usual FETCH answers itself; one with anything more in it (here FLAGS, asked for
    by a proxy that rewrites the command) goes to imapclient's parser, with the same result."""
    seed(dovecot_server, dovecot_user, 5, size=3000)
    with connector(dovecot_server, dovecot_user, tmp_path) as conn:
        plain = list(conn.fetch(conn.list_ids()))
    sent: list[bytes] = []

    def more_items(chunk: bytes) -> bytes:
        sent.append(chunk)
        return chunk.replace(b"(UID RFC822.SIZE)", b"(RFC822.SIZE FLAGS UID)").replace(
            b"(UID BODY.PEEK[])", b"(FLAGS BODY.PEEK[] UID)"
        )

    with NetProxy(dovecot_server.imap_port, client_filter=more_items) as proxy, connector(
        dovecot_server, dovecot_user, tmp_path, port=proxy.port
    ) as conn:
        rewritten = list(conn.fetch(conn.list_ids()))
    assert b"(UID BODY.PEEK[])" in b"".join(sent) and b"(UID RFC822.SIZE)" in b"".join(sent)
    assert len(plain) == 5 and rewritten == plain


def test_the_quick_reader_agrees_with_imapclient() -> None:
    """Answers as imaplib splits them: the shapes the quick reader takes give imapclient's values; any other
    shape is left to imapclient (None)."""
    from imapclient.response_parser import parse_fetch_response

    from halo_integrator.connectors.imap import _bodies_of, _sizes_of

    def imapclient_view(data: list[Any], key: bytes) -> dict[int, Any]:
        return {uid: v[key] for uid, v in parse_fetch_response(data, True, True).items() if key in v}

    taken_bodies = [
        [(b"1 (UID 10 BODY[] {5}", b"hello"), b")", (b"2 (UID 11 BODY[] {0}", b""), b")"],
        [(b"3 (BODY[] {3}", b"abc"), b" UID 12)"],  # the UID after the body
        [None],  # imaplib's answer when no message answered (all expunged meanwhile)
    ]
    for data in taken_bodies:
        assert _bodies_of(data) == imapclient_view(data, b"BODY[]")
    assert _bodies_of([(b"1 (UID 10 FLAGS (\\Seen) BODY[] {1}", b"x"), b")"]) is None
    assert _bodies_of([(b"1 (UID 10 BODY[] {1}", b"x"), b")", b"2 (FLAGS (\\Seen))"]) is None
    assert _bodies_of([(b"1 (BODY[] {1}", b"x"), b")"]) is None  # no UID at all
    assert _bodies_of([(b"1 (UID 10 BODY[] {1}", b"x"), b" UID 10)"]) is None  # two
    assert _bodies_of([(b"1 (UID 10 BODY[] {1}", b"x")]) is None  # the line's end missing
    taken_sizes = [[b"1 (UID 10 RFC822.SIZE 1234)", b"2 (RFC822.SIZE 7 UID 11)"], [None]]
    for data in taken_sizes:
        assert _sizes_of(data) == imapclient_view(data, b"RFC822.SIZE")
    assert _sizes_of([b"1 (UID 10 RFC822.SIZE 1234 FLAGS ())"]) is None
    assert _sizes_of([b"1 (UID 10 RFC822.SIZE 1234)", b"5 (FLAGS (\\Seen))"]) is None


@pytest.mark.parametrize(
    ("protocol", "refusal"), [("imap", "does not offer STARTTLS"), ("pop3", "does not offer STLS")]
)
def test_starttls_not_offered_stops_before_any_login(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, protocol: str, refusal: str
) -> None:
    """A server (or a man in the middle) that hides STARTTLS gets an error, never the password in clear."""
    sent: list[bytes] = []

    def record(chunk: bytes) -> bytes:
        sent.append(chunk)
        return chunk

    def hide_starttls(chunk: bytes) -> bytes:
        return chunk.replace(b" STARTTLS", b"").replace(b"STLS\r\n", b"")

    plain_port = dovecot_server.pop3_port if protocol == "pop3" else dovecot_server.imap_port
    with NetProxy(plain_port, client_filter=record, server_filter=hide_starttls) as proxy:
        conn = connector(dovecot_server, dovecot_user, tmp_path, protocol=protocol, security="starttls",
                         port=proxy.port)
        with pytest.raises(ConnectError, match=refusal):
            conn.open()
        conn.close()
    wire = b"".join(sent).upper()
    assert b"STARTTLS" in wire or b"CAPA" in wire  # the client did ask
    assert not any(word in wire for word in (b"LOGIN", b"AUTHENTICATE", b"USER ", b"PASS "))
    assert dovecot_user.password.encode().upper() not in wire


def test_debug_logging_never_holds_message_contents(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """IMAPClient turns on imaplib's protocol trace, which formats every message literal into the debug log
    (slow on a large import, and it writes customers' emails into logs): the connector turns it off."""
    client = dovecot_server.imap(dovecot_user)
    client.append("INBOX", message(1).replace(b"Body of message 1.", b"Secret-body-7f3a."))
    client.logout()
    caplog.set_level(logging.DEBUG)
    with connector(dovecot_server, dovecot_user, tmp_path) as conn:
        (_, raw), = conn.fetch(conn.list_ids())
    assert b"Secret-body-7f3a." in raw
    assert caplog.records, "debug logging was captured"
    assert not [r for r in caplog.records if "Secret-body-7f3a" in r.getMessage()]


def test_mark_read_marks_read_and_lists_what_a_run_has_not_settled(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """The emails a listing found stay listed, read or not, until a run has settled them; one a run left stays
    listed even once read."""
    seed(dovecot_server, dovecot_user, 3)
    with connector(dovecot_server, dovecot_user, tmp_path, after_import="mark_read") as conn:
        ids = conn.list_ids()
        conn.dispose(ids[:2])
        assert conn.list_ids() == ids  # not settled yet: the importer skips the two it knows
        conn.settled(ids[:2], ids[2:])  # the third failed
        flags = [SEEN in d[b"FLAGS"] for _, d in sorted(uids_in(dovecot_server, dovecot_user, "INBOX").items())]
        assert flags == [True, True, False]  # dispose marked the two read
        client = dovecot_server.imap(dovecot_user)
        client.select_folder("INBOX")
        client.add_flags(client.search(["ALL"]), [SEEN])  # and then someone read it
        client.logout()
        assert conn.list_ids() == ids[2:]
        assert conn.count() == 1
        conn.settled(ids[2:], [])
        assert conn.list_ids() == []
    # every email stays in the INBOX: mark_read moves nothing
    assert len(uids_in(dovecot_server, dovecot_user, "INBOX")) == 3


def test_mark_read_lists_new_mail_that_someone_read_first_but_not_what_was_read_before(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """With mark_read, an agent who opens a new email in their mail client before the run must not keep it
    from becoming a ticket; the emails already read when reading began stay alone, and what a run has settled
    is not listed again."""
    state = MemoryState()
    seed(dovecot_server, dovecot_user, 2)
    client = dovecot_server.imap(dovecot_user)
    client.select_folder("INBOX")
    first = min(client.search(["ALL"]))
    client.add_flags([first], [SEEN])  # read before the mailbox was ever read by us: old, left alone
    client.logout()
    with connector(dovecot_server, dovecot_user, tmp_path, state=state, after_import="mark_read") as conn:
        ids = conn.list_ids()
        assert [int(i.partition("/")[2]) for i in ids] == [first + 1]
        conn.dispose(ids)
        conn.settled(ids, [])
    dovecot_server.append(dovecot_user, [message(3), message(4)], "INBOX")
    client = dovecot_server.imap(dovecot_user)
    client.select_folder("INBOX")
    newest = max(client.search(["ALL"]))
    client.add_flags([newest], [SEEN])  # an agent opened it before the run
    client.logout()
    with connector(dovecot_server, dovecot_user, tmp_path, state=state, after_import="mark_read") as conn:
        ids = conn.list_ids()
        assert [int(i.partition("/")[2]) for i in ids] == [newest - 1, newest]
        assert conn.count() == 2
        conn.dispose(ids[:1])  # a run that died on the other one: nothing is settled, both are listed again
    with connector(dovecot_server, dovecot_user, tmp_path, state=state, after_import="mark_read") as conn:
        assert conn.list_ids() == ids
        conn.dispose(ids)
        conn.settled(ids, [])
    with connector(dovecot_server, dovecot_user, tmp_path, state=state, after_import="mark_read") as conn:
        assert conn.list_ids() == [] and conn.count() == 0


def test_missing_folder_is_a_retrieval_error(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    conn = connector(dovecot_server, dovecot_user, tmp_path, folder="Support Queue")
    with pytest.raises(RetrievalError) as err:
        conn.open()
    text = str(err.value)
    assert "'Support Queue' does not exist" in text and "INBOX" in text and "incoming.folder" in text


def test_reads_a_configured_folder(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    client = dovecot_server.imap(dovecot_user)
    client.create_folder("Support/Queue")
    client.logout()
    seed(dovecot_server, dovecot_user, 2, folder="Support/Queue")
    seed(dovecot_server, dovecot_user, 1)
    with connector(dovecot_server, dovecot_user, tmp_path, folder="Support/Queue") as conn:
        assert len(conn.list_ids()) == 2


# ------------------------------------------------------------------------------------------ dispose


def test_move_to_deleted_uses_the_special_use_trash(dovecot_bin_trash: Dovecot, tmp_path: Path) -> None:
    """The \\Trash attribute wins over the usual names: the attribute is on "Bin", and an ordinary "Trash"
    stands beside it. The move is one UID MOVE on the wire."""
    server = dovecot_bin_trash
    user = server.new_user()
    seed(server, user, 3)
    sent: list[bytes] = []

    def record(chunk: bytes) -> bytes:
        sent.append(chunk)
        return chunk

    with NetProxy(server.imap_port, client_filter=record) as proxy, connector(
        server, user, tmp_path, port=proxy.port
    ) as conn:
        ids = conn.list_ids()
        conn.dispose(ids[:2])
        assert conn.list_ids() == ids[2:]
    assert subjects_in(server, user, "INBOX") == ["Help 3"]
    assert subjects_in(server, user, "Bin") == ["Help 1", "Help 2"]
    assert subjects_in(server, user, "Trash") == []
    wire = b"".join(sent).upper()
    assert b"UID MOVE 1,2 BIN" in wire.replace(b'"', b"") and b"EXPUNGE" not in wire


@pytest.mark.parametrize("name", ["Deleted Items", "Trash"])
def test_move_to_deleted_finds_the_folder_by_its_usual_name(
    dovecot_no_trash: Dovecot, tmp_path: Path, name: str
) -> None:
    """A server that marks no folder \\Trash: the folder is found by the names mail clients use."""
    user = dovecot_no_trash.new_user()
    client = dovecot_no_trash.imap(user)
    client.create_folder(name)
    client.logout()
    seed(dovecot_no_trash, user, 2)
    conn = connector(dovecot_no_trash, user, tmp_path)
    report = conn.test()
    assert report.ok and report.deleted_folder == name
    with conn:
        conn.dispose(conn.list_ids())
    assert subjects_in(dovecot_no_trash, user, name) == ["Help 1", "Help 2"]
    assert subjects_in(dovecot_no_trash, user, "INBOX") == []


def test_no_deleted_items_folder_at_all(dovecot_no_trash: Dovecot, tmp_path: Path) -> None:
    user = dovecot_no_trash.new_user()
    seed(dovecot_no_trash, user, 1)
    conn = connector(dovecot_no_trash, user, tmp_path)
    report = conn.test()
    failed = [c for c in report.checks if not c.ok]
    assert [c.name for c in failed] == ["deleted_folder"]
    assert "no folder has the \\Trash attribute" in failed[0].detail and failed[0].fix
    with conn, pytest.raises(DisposeError, match="No Deleted Items folder"):
        conn.dispose(conn.list_ids())
    assert subjects_in(dovecot_no_trash, user, "INBOX") == ["Help 1"]


def test_move_to_configured_deleted_folder(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    seed(dovecot_server, dovecot_user, 1)
    client = dovecot_server.imap(dovecot_user)
    client.create_folder("Processed Bin")
    client.logout()
    with connector(dovecot_server, dovecot_user, tmp_path, deleted_folder="Processed Bin") as conn:
        conn.dispose(conn.list_ids())
    assert subjects_in(dovecot_server, dovecot_user, "Processed Bin") == ["Help 1"]
    assert subjects_in(dovecot_server, dovecot_user, "Trash") == []


def test_missing_configured_deleted_folder_is_a_dispose_error(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    seed(dovecot_server, dovecot_user, 1)
    conn = connector(dovecot_server, dovecot_user, tmp_path, deleted_folder="Nope")
    with conn, pytest.raises(DisposeError, match=r"'Nope'.*does not exist"):
        conn.dispose(conn.list_ids())
    assert subjects_in(dovecot_server, dovecot_user, "INBOX") == ["Help 1"]


def test_delete_expunges_only_the_given_messages(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    seed(dovecot_server, dovecot_user, 3)
    with connector(dovecot_server, dovecot_user, tmp_path, after_import="delete") as conn:
        ids = conn.list_ids()
        # another mail client flags message 3 \Deleted without expunging: it must survive our dispose
        other = dovecot_server.imap(dovecot_user)
        other.select_folder("INBOX")
        other.add_flags([int(ids[2].split("/")[1])], [DELETED])
        other.logout()
        conn.dispose(ids[:2])
    assert subjects_in(dovecot_server, dovecot_user, "INBOX") == ["Help 3"]
    assert subjects_in(dovecot_server, dovecot_user, "Trash") == []


def test_move_to_folder_creates_the_folder(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    seed(dovecot_server, dovecot_user, 2)
    with connector(
        dovecot_server, dovecot_user, tmp_path, after_import="move_to_folder", move_folder="Imported/2024"
    ) as conn:
        conn.dispose(conn.list_ids())
    assert subjects_in(dovecot_server, dovecot_user, "Imported/2024") == ["Help 1", "Help 2"]
    assert subjects_in(dovecot_server, dovecot_user, "INBOX") == []


def test_quarantine_moves_to_the_quarantine_folder(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    seed(dovecot_server, dovecot_user, 2)
    with connector(dovecot_server, dovecot_user, tmp_path, quarantine_folder="Bad Mail") as conn:
        ids = conn.list_ids()
        conn.quarantine(ids[:1])
    assert subjects_in(dovecot_server, dovecot_user, "Bad Mail") == ["Help 1"]
    assert subjects_in(dovecot_server, dovecot_user, "INBOX") == ["Help 2"]


def test_without_move_it_copies_and_uid_expunges(dovecot_no_move: Dovecot, tmp_path: Path) -> None:
    user = dovecot_no_move.new_user()
    seed(dovecot_no_move, user, 3)
    with connector(dovecot_no_move, user, tmp_path) as conn:
        ids = conn.list_ids()
        other = dovecot_no_move.imap(user)
        other.select_folder("INBOX")
        assert b"MOVE" not in other.capabilities()
        other.add_flags([int(ids[2].split("/")[1])], [DELETED])  # someone else's \Deleted message
        other.logout()
        conn.dispose(ids[:2])
    assert subjects_in(dovecot_no_move, user, "Trash") == ["Help 1", "Help 2"]
    assert subjects_in(dovecot_no_move, user, "INBOX") == ["Help 3"]


@pytest.mark.parametrize("after_import", ["move_to_deleted", "delete", "move_to_folder"])
def test_without_move_and_uidplus_nothing_is_expunged(
    dovecot_no_uidplus: Dovecot, tmp_path: Path, after_import: str
) -> None:
    user = dovecot_no_uidplus.new_user()
    seed(dovecot_no_uidplus, user, 2)
    with connector(dovecot_no_uidplus, user, tmp_path, after_import=after_import, move_folder="Done") as conn:
        with pytest.raises(DisposeError, match=r"neither MOVE nor UIDPLUS.*mark_read"):
            conn.dispose(conn.list_ids())
        report_conn = connector(
            dovecot_no_uidplus, user, tmp_path, after_import=after_import, move_folder="Done"
        )
    assert subjects_in(dovecot_no_uidplus, user, "INBOX") == ["Help 1", "Help 2"]
    assert subjects_in(dovecot_no_uidplus, user, "Trash") == []
    report = report_conn.test()
    assert not report.ok
    assert [c.name for c in report.checks if not c.ok] == ["capabilities"]


# ------------------------------------------------------------------------------------------ identity


def test_uidvalidity_change_gives_new_ids(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seed(dovecot_server, dovecot_user, 2)
    state = MemoryState()
    with connector(dovecot_server, dovecot_user, tmp_path, state=state) as conn:
        old_ids = conn.list_ids()
    dovecot_server.renumber(dovecot_user, 4242)
    with (
        caplog.at_level(logging.WARNING),
        connector(dovecot_server, dovecot_user, tmp_path, state=state) as conn,
    ):
        new_ids = conn.list_ids()
        assert [i.split("/")[0] for i in new_ids] == ["4242", "4242"]
        assert set(new_ids).isdisjoint(old_ids)
        assert "UIDVALIDITY" in caplog.text and "changed" in caplog.text
        assert state.get("uidvalidity:INBOX") == "4242"
        caplog.clear()
        assert list(conn.fetch(old_ids)) == []  # stale ids are skipped, not fetched under the new validity
        conn.dispose(old_ids)
        assert "skipped" in caplog.text
    assert subjects_in(dovecot_server, dovecot_user, "INBOX") == ["Help 1", "Help 2"]


def test_watermarks(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    seed(dovecot_server, dovecot_user, 2)
    state = MemoryState()
    with connector(dovecot_server, dovecot_user, tmp_path, state=state) as conn:
        conn.set_watermark()
        assert conn.list_ids() == []
        assert conn.count() == 0
    mark = state.get("watermark:INBOX")
    assert mark is not None and mark.endswith("/2")
    seed(dovecot_server, dovecot_user, 3)  # UIDs 3, 4, 5
    with connector(dovecot_server, dovecot_user, tmp_path, state=state) as conn:
        assert [i.split("/")[1] for i in conn.list_ids()] == ["3", "4", "5"]
        assert conn.count() == 3
    # the config's only_after_uid is honoured too; the higher of the two wins
    with connector(dovecot_server, dovecot_user, tmp_path, state=state, only_after_uid=4) as conn:
        assert [i.split("/")[1] for i in conn.list_ids()] == ["5"]
    with connector(dovecot_server, dovecot_user, tmp_path, only_after_uid=9) as conn:
        assert conn.list_ids() == []  # "n:*" matches the last UID even below n: filtered out


def test_watermark_carried_over_in_another_time_zone_and_season(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """The old emails arrived in summer; the watermark is set on a machine in Berlin in winter, and the
    UIDVALIDITY change is handled after the machine moved to UTC. The arrival times still match."""
    summer = datetime(2026, 7, 1, 12, 0, 0, tzinfo=UTC)
    dovecot_server.append(
        dovecot_user, [message(1), message(2)], arrived=[summer + timedelta(minutes=n) for n in (1, 2)]
    )
    state = MemoryState()
    zone = os.environ.get("TZ")
    try:
        os.environ["TZ"] = "Europe/Berlin"
        time.tzset()
        with connector(dovecot_server, dovecot_user, tmp_path, state=state) as conn:
            conn.set_watermark()
        dovecot_server.renumber(dovecot_user, 5151)
        os.environ["TZ"] = "UTC"
        time.tzset()
        seed(dovecot_server, dovecot_user, 1)  # a new email, arriving now
        with connector(dovecot_server, dovecot_user, tmp_path, state=state) as conn:
            assert [i.split("/")[1] for i in conn.list_ids()] == ["3"]
    finally:
        if zone is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = zone
        time.tzset()


def test_watermark_carried_over_from_a_server_that_quotes_the_field_name(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """Some servers (Courier) answer BODY[HEADER.FIELDS ("MESSAGE-ID")]: the Message-IDs are still read."""
    seed(dovecot_server, dovecot_user, 2)
    state = MemoryState()
    quoting = NetProxy(
        dovecot_server.imap_port,
        server_filter=lambda data: data.replace(b"HEADER.FIELDS (MESSAGE-ID)]", b'HEADER.FIELDS ("MESSAGE-ID")]'),
    )
    with quoting, connector(dovecot_server, dovecot_user, tmp_path, state=state, port=quoting.port) as conn:
        conn.set_watermark()
    known = state.get("watermark_known:INBOX")
    assert known is not None and len(json.loads(known)) == 2
    dovecot_server.renumber(dovecot_user, 5252)
    with connector(dovecot_server, dovecot_user, tmp_path, state=state) as conn:
        assert conn.list_ids() == []


class _FailOnce(MemoryState):
    """A state store whose next write of one key fails, as a locked database would."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_key: str | None = None

    def set(self, key: str, value: str) -> None:
        if key == self.fail_key:
            self.fail_key = None
            raise StoreError("database is locked")
        super().set(key, value)


def test_watermark_carry_over_interrupted_is_done_again(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """The carried-over watermark cannot be saved (the database is locked): the next run carries it over again
    instead of trusting half of it. An old email now above a new one stays old."""
    seed(dovecot_server, dovecot_user, 1)  # m1: old
    state = _FailOnce()
    with connector(dovecot_server, dovecot_user, tmp_path, state=state) as conn:
        conn.set_watermark()
    client = dovecot_server.imap(dovecot_user)
    try:  # the old email moves above a new one: it becomes an "extra" old UID after the carry-over
        client.select_folder("INBOX")
        old = client.fetch(client.search(["ALL"]), ["BODY.PEEK[]", "INTERNALDATE"])
        (data,) = old.values()
        client.delete_messages(list(old))
        client.expunge()
    finally:
        client.logout()
    dovecot_server.renumber(dovecot_user, 5353)
    # a new email, then the old one above it
    dovecot_server.append(
        dovecot_user, [message(2), data[b"BODY[]"]], arrived=[datetime.now(UTC), data[b"INTERNALDATE"]]
    )
    state.fail_key = "watermark_extra:INBOX"
    with pytest.raises(StoreError), connector(dovecot_server, dovecot_user, tmp_path, state=state) as conn:
        conn.list_ids()
    with connector(dovecot_server, dovecot_user, tmp_path, state=state) as conn:
        listed = conn.list_ids()
        fetched = [raw for _, raw in conn.fetch(listed)]
    assert fetched == [message(2)]


def test_an_old_email_without_a_message_id_is_not_recognised(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """Without a Message-ID an arrival time alone is no proof: after the UIDVALIDITY change such an email is
    imported rather than risk leaving a new one behind."""
    anonymous = b"From: a@example.org\r\nSubject: no id\r\n\r\nbody\r\n"
    dovecot_server.append(dovecot_user, [anonymous], arrived=[datetime(2026, 3, 1, tzinfo=UTC)])
    seed(dovecot_server, dovecot_user, 1)
    state = MemoryState()
    with connector(dovecot_server, dovecot_user, tmp_path, state=state) as conn:
        conn.set_watermark()
    dovecot_server.renumber(dovecot_user, 5454)
    with connector(dovecot_server, dovecot_user, tmp_path, state=state) as conn:
        assert [i.split("/")[1] for i in conn.list_ids()] == ["1"]


def test_an_old_watermark_without_its_list_is_dropped_with_a_warning(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A watermark from a UIDVALIDITY that is gone, with no Message-ID list to carry it over: every message
    is listed (imported rather than lost) and the admin is told how to set it again."""
    seed(dovecot_server, dovecot_user, 2)
    state = MemoryState()
    state.set("watermark:INBOX", "1/2")
    with caplog.at_level(logging.WARNING), connector(dovecot_server, dovecot_user, tmp_path, state=state) as conn:
        assert [i.split("/")[1] for i in conn.list_ids()] == ["1", "2"]
    assert "cannot be carried over" in caplog.text and "--only-new" in caplog.text


# ------------------------------------------------------------------------------------------ login & TLS


def test_wrong_password_is_a_secret_error(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    conn = connector(dovecot_server, dovecot_user, tmp_path, password="not-the-password")
    with pytest.raises(SecretError) as err:
        conn.open()
    text = str(err.value)
    assert f"refused the password for {dovecot_user.name}@127.0.0.1" in text
    assert "not-the-password" not in text
    assert err.value.exit_code == 4


def test_a_bye_that_refuses_the_login_is_a_refused_password(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    """Some servers answer a wrong password by closing the session with an untagged BYE, which imaplib
    reports like a dropped connection; its AUTHENTICATIONFAILED code still makes it a refused password."""

    def bye_instead_of_no(data: bytes) -> bytes:
        return re.sub(rb"(?m)^\S+ NO (\[AUTHENTICATIONFAILED\])", rb"* BYE \1", data)

    with NetProxy(dovecot_server.imap_port, server_filter=bye_instead_of_no) as proxy:
        conn = connector(dovecot_server, dovecot_user, tmp_path, port=proxy.port, password="not-the-password")
        with pytest.raises(SecretError) as err:
            conn.open()
    assert "refused the password" in str(err.value) and "BYE" not in str(err.value).split("said:")[0]


def test_xoauth2_login(dovecot_server: Dovecot, tmp_path: Path) -> None:
    cred = Credential(
        host="127.0.0.1",
        port=dovecot_server.imap_port,
        security="none",
        username="alice",
        auth="oauth2",
        timeout=10,
    )
    mailbox = Mailbox(name="O", connection="imap", credentials=(cred,))
    cfg = Config(mailboxes=(mailbox,), path=tmp_path / "integrator.toml")
    marker = uuid.uuid4().hex
    dovecot_server.append(User(name="alice", password="pw-alice"), [message(1).replace(b"Body", marker.encode())])
    tokens = {"access_token": "alice-oauth-token"}
    with make_connector(mailbox, cred, config=cfg, secrets=tokens.__getitem__, state=MemoryState()) as conn:
        fetched = [raw for _, raw in conn.fetch(conn.list_ids())]  # the session logged in with the token reads
    assert any(marker.encode() in raw for raw in fetched)
    bad = {"access_token": "alicepw"}  # the password is not a token
    with pytest.raises(SecretError, match=r"refused the access token for alice@127.0.0.1") as err:
        make_connector(mailbox, cred, config=cfg, secrets=bad.__getitem__, state=MemoryState()).open()
    assert "alicepw" not in str(err.value)


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
@pytest.mark.parametrize("provider", ["microsoft365", "google"])
def test_xoauth2_with_a_token_asked_of_entra_id_or_google_at_login(
    dovecot_server: Dovecot, cloud: FakeCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protocol: str,
    provider: str,
) -> None:
    """With oauth_provider, the login asks Entra ID (an app-only token, for the Outlook scope) or Google (a
    service account acting as the mailbox, for the full-mail scope) for a fresh access token with the
    credential's own secret, instead of using one stored in the keyring, which would expire within the hour."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cloud.ca_file)  # the token endpoint's CA, as a system's would be
    cloud.google_delegated_scopes = {"https://mail.google.com/"}
    cloud.next_tokens = ["alice-oauth-token"]  # the token this Dovecot takes from alice
    cloud.requests.clear()
    cred = Credential(
        host="127.0.0.1",
        port=dovecot_server.pop3_port if protocol == "pop3" else dovecot_server.imap_port,
        security="none",
        username="alice",
        auth="oauth2",
        oauth_provider=provider,
        tenant_id=cloud.tenant,
        client_id=cloud.client_id,
        authority=cloud.authority,
        timeout=10,
    )
    mailbox = Mailbox(name="O", connection=protocol, credentials=(cred,))
    cfg = Config(mailboxes=(mailbox,), path=tmp_path / "integrator.toml")
    marker = uuid.uuid4().hex
    dovecot_server.append(User(name="alice", password="pw-alice"), [message(1).replace(b"Body", marker.encode())])
    stored = {"client_secret": cloud.client_secret, "service_account_json": json.dumps(cloud.service_account_info())}
    asked: list[str] = []

    def secrets(kind: str) -> str:
        asked.append(kind)
        return stored[kind]

    with make_connector(mailbox, cred, config=cfg, secrets=secrets, state=MemoryState()) as conn:
        fetched = [raw for _, raw in conn.fetch(conn.list_ids())]
    assert any(marker.encode() in raw for raw in fetched)
    assert asked == ["client_secret" if provider == "microsoft365" else "service_account_json"]
    (request,) = [r for r in cloud.requests if r.method == "POST"]
    if provider == "microsoft365":
        assert request.form()["scope"] == "https://outlook.office365.com/.default"
    else:
        claims = jwt.decode(request.form()["assertion"], options={"verify_signature": False})
        assert (claims["sub"], claims["scope"]) == ("alice", "https://mail.google.com/")

    wrong = {**stored, "client_secret": "not-it", "service_account_json": "{}"}
    with pytest.raises(SecretError) as err:
        make_connector(mailbox, cred, config=cfg, secrets=wrong.__getitem__, state=MemoryState()).open()
    assert "not-it" not in str(err.value)

    cloud.next_tokens = ["a-token-this-server-does-not-take"]  # issued, but the mailbox was never granted
    with pytest.raises(SecretError) as err:
        make_connector(mailbox, cred, config=cfg, secrets=secrets, state=MemoryState()).open()
    grant = "IMAP.AccessAsApp" if provider == "microsoft365" else "domain-wide delegation"
    assert "refused the access token" in str(err.value) and grant in str(err.value), err.value


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_untrusted_certificate(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, security: str
) -> None:
    conn = connector(dovecot_server, dovecot_user, tmp_path, security=security, ca_file="")
    with pytest.raises(ConnectError) as err:
        conn.open()
    text = str(err.value)
    assert "certificate" in text and "not trusted" in text and "ca_file" in text and "tls_verify" in text


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_certificate_for_another_name(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, security: str
) -> None:
    """A certificate from a trusted CA, but issued for other names (localhost, 127.0.0.1) than the host set
    ("127.1" reaches the same server): the connection stops before any login, and the fix is the host name,
    not ca_file."""
    conn = connector(dovecot_server, dovecot_user, tmp_path, security=security, host="127.1")
    with pytest.raises(ConnectError) as err:
        conn.open()
    text = str(err.value)
    assert "not issued for '127.1'" in text and "Set host to a name the certificate is issued for" in text
    assert "ca_file" not in text


def test_tls_verify_false_works_with_a_warning(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seed(dovecot_server, dovecot_user, 1)
    conn = connector(dovecot_server, dovecot_user, tmp_path, security="ssl", ca_file="", tls_verify=False)
    with caplog.at_level(logging.WARNING), conn:
        assert len(conn.list_ids()) == 1
    assert "TLS certificate checks are OFF" in caplog.text


def test_missing_ca_file_is_a_config_error(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    conn = connector(dovecot_server, dovecot_user, tmp_path, security="ssl", ca_file="missing.pem")
    with pytest.raises(ConfigError, match=r"missing.pem does not exist"):
        conn.open()


def test_wrong_security_for_the_port(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    conn = connector(dovecot_server, dovecot_user, tmp_path, security="ssl", port=dovecot_server.imap_port)
    with pytest.raises(ConnectError, match=r"TLS handshake .* failed.*security"):
        conn.open()


def test_connection_refused(dovecot_user: User, dovecot_server: Dovecot, tmp_path: Path) -> None:
    free = free_port()
    conn = connector(dovecot_server, dovecot_user, tmp_path, port=free)
    with pytest.raises(ConnectError, match=r"refused the connection"):
        conn.open()


def test_dns_failures_are_explained() -> None:
    # getaddrinfo's own error, as a failed lookup raises it (a real lookup could leave the machine)
    problem = describe_connect_error(
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
        protocol="imap",
        host="imap.example.invalid",
        port=993,
        security="ssl",
        timeout=60,
    )
    assert problem.check == "connect"
    assert "Cannot resolve the host name 'imap.example.invalid'" in problem.message
    cert = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert (
        describe_connect_error(cert, protocol="imap", host="h", port=993, security="ssl", timeout=1).check
        == "tls"
    )


# ------------------------------------------------------------------------------------------ broken networks


def test_connection_cut_mid_fetch(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    seed(dovecot_server, dovecot_user, 5, size=20_000)
    with NetProxy(dovecot_server.imap_port) as proxy:
        conn = connector(dovecot_server, dovecot_user, tmp_path, port=proxy.port, batch_size=1)
        with conn:
            ids = conn.list_ids()
            got: list[str] = []
            proxy.cut_after(2 * 20_500 + 5_000)  # two whole messages, then part of the third
            with pytest.raises(RetrievalError, match=r"connection was lost"):
                for sid, raw in conn.fetch(ids):
                    assert raw == message(len(got) + 1, 20_000)
                    got.append(sid)
        assert proxy.cuts == 1
    assert got == ids[:2]


def test_stalled_server_times_out(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    seed(dovecot_server, dovecot_user, 2)
    with NetProxy(dovecot_server.imap_port) as proxy:
        conn = connector(dovecot_server, dovecot_user, tmp_path, port=proxy.port, timeout=1)
        with conn:
            ids = conn.list_ids()
            proxy.stall()
            started = time.monotonic()
            with pytest.raises(RetrievalError, match=r"no answer within 1 s"):
                list(conn.fetch(ids))
            assert time.monotonic() - started < 3
        assert time.monotonic() - started < 4  # close() does not wait again on the dead connection


def test_stalled_greeting_is_a_connect_error(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    with NetProxy(dovecot_server.imap_port) as proxy:
        proxy.stall()
        started = time.monotonic()
        with pytest.raises(ConnectError, match=r"No answer"):
            connector(dovecot_server, dovecot_user, tmp_path, port=proxy.port, timeout=1).open()
        assert time.monotonic() - started < 3


# ------------------------------------------------------------------------------------------ test()


def test_report_when_all_is_well(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    seed(dovecot_server, dovecot_user, 2)
    report = connector(dovecot_server, dovecot_user, tmp_path, security="starttls").test()
    assert report.ok, report.checks
    assert [c.name for c in report.checks] == ["connect", "tls", "login", "folder", "deleted_folder"]
    assert report.folder == "INBOX" and report.deleted_folder == "Trash" and report.message_count == 2
    assert "MOVE" in report.capabilities and "UIDPLUS" in report.capabilities


def _failed(report: Any) -> list[str]:
    return [c.name for c in report.checks if not c.ok]


def test_report_failures(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    free = free_port()
    refused = connector(dovecot_server, dovecot_user, tmp_path, port=free).test()
    assert _failed(refused) == ["connect"]

    untrusted = connector(dovecot_server, dovecot_user, tmp_path, security="ssl", ca_file="").test()
    assert _failed(untrusted) == ["tls"]
    tls = untrusted.checks[-1]
    assert "not trusted" in tls.detail and "ca_file" in tls.fix

    wrong = connector(dovecot_server, dovecot_user, tmp_path, password="nope").test()
    assert _failed(wrong) == ["login"]
    assert "refused the password" in wrong.checks[-1].detail and "nope" not in str(wrong.checks)

    no_folder = connector(dovecot_server, dovecot_user, tmp_path, folder="Missing").test()
    assert _failed(no_folder) == ["folder"]

    no_trash = connector(dovecot_server, dovecot_user, tmp_path, deleted_folder="Gone").test()
    assert _failed(no_trash) == ["deleted_folder"]
    assert "'Gone'" in no_trash.checks[-1].detail

    with NetProxy(dovecot_server.imap_port) as proxy:
        proxy.stall()
        stalled = connector(dovecot_server, dovecot_user, tmp_path, port=proxy.port, timeout=0.5).test()
    assert _failed(stalled) == ["connect"] and "No answer" in stalled.checks[0].detail
