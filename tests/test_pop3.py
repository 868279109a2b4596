"""The POP3 connector against a real Dovecot on loopback (tests/dovecot.py), no mocks.

Dovecot's POP3 always offers UIDL, so the no-UIDL test puts tests/netproxy.py in between: it turns the
client's UIDL command into an unknown one (the server answers -ERR) and drops UIDL from the CAPA list.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from dovecot import Dovecot, User
from halo_integrator.config import Config, Credential, Mailbox
from halo_integrator.connectors import make_connector
from halo_integrator.connectors.base import Connector, MemoryState
from halo_integrator.errors import ConfigError, ConnectError, RetrievalError, SecretError
from mailsetup import connector as imap_connector
from mailsetup import message, seed, subjects_in
from netproxy import NetProxy

pytestmark = pytest.mark.dovecot


def connector(server: Dovecot, user: User, tmp_path: Path, **settings: Any) -> Connector:
    return imap_connector(server, user, tmp_path, protocol="pop3", **settings)


@pytest.mark.parametrize("security", ["ssl", "starttls", "none"])
def test_list_fetch_delete_over_each_security(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, security: str
) -> None:
    seed(dovecot_server, dovecot_user, 3)
    with connector(dovecot_server, dovecot_user, tmp_path, security=security) as conn:
        ids = conn.list_ids()
        assert len(ids) == 3 and len(set(ids)) == 3
        assert all(re.fullmatch(r"[0-9a-fA-F]{16}", i) for i in ids)  # Dovecot's %08Xu%08Xv UIDLs
        got = list(conn.fetch(ids))
        assert [raw for _, raw in got] == [message(n) for n in (1, 2, 3)]
        assert conn.count() == 3
        conn.dispose(ids[:2])
        # dispose ended the session with QUIT; the connector opens a new one when asked again
        assert conn.list_ids() == ids[2:]
    assert subjects_in(dovecot_server, dovecot_user, "INBOX") == ["Help 3"]


def test_ids_are_stable_across_sessions(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    seed(dovecot_server, dovecot_user, 3)
    with connector(dovecot_server, dovecot_user, tmp_path) as conn:
        first = conn.list_ids()
        conn.dispose(first[:1])
    with connector(dovecot_server, dovecot_user, tmp_path) as conn:
        second = conn.list_ids()
        # message numbers shifted (2, 3 -> 1, 2) but ids did not
        assert second == first[1:]
        assert [raw for _, raw in conn.fetch([first[2]])] == [message(3)]


def test_nothing_is_deleted_before_dispose(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    seed(dovecot_server, dovecot_user, 2)
    with connector(dovecot_server, dovecot_user, tmp_path) as conn:
        list(conn.fetch(conn.list_ids()))
    assert subjects_in(dovecot_server, dovecot_user, "INBOX") == ["Help 1", "Help 2"]


@pytest.mark.parametrize("after_import", ["move_to_deleted", "delete"])
def test_delete_and_move_to_deleted_both_delete(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, after_import: str
) -> None:
    seed(dovecot_server, dovecot_user, 2)
    with connector(dovecot_server, dovecot_user, tmp_path, after_import=after_import) as conn:
        conn.dispose(conn.list_ids())
    assert subjects_in(dovecot_server, dovecot_user, "INBOX") == []


def test_mark_read_leaves_messages(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    seed(dovecot_server, dovecot_user, 2)
    with connector(dovecot_server, dovecot_user, tmp_path, after_import="mark_read") as conn:
        ids = conn.list_ids()
        conn.dispose(ids)
        assert conn.list_ids() == ids
    assert subjects_in(dovecot_server, dovecot_user, "INBOX") == ["Help 1", "Help 2"]


def test_move_to_folder_is_refused_at_open(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    conn = connector(dovecot_server, dovecot_user, tmp_path, after_import="move_to_folder", move_folder="X")
    with pytest.raises(ConfigError, match=r"no folders"):
        conn.open()
    assert [c.name for c in conn.test().checks if not c.ok] == ["connect"]


def test_watermark(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    seed(dovecot_server, dovecot_user, 2)
    state = MemoryState()
    with connector(dovecot_server, dovecot_user, tmp_path, state=state) as conn:
        conn.set_watermark()
        assert conn.list_ids() == []
    seed(dovecot_server, dovecot_user, 1)
    with connector(dovecot_server, dovecot_user, tmp_path, state=state) as conn:
        ids = conn.list_ids()
        assert len(ids) == 1 and conn.count() == 1
        assert [raw for _, raw in conn.fetch(ids)] == [message(1)]


def test_changed_ids_without_a_header_record_are_all_new(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An only-new list from before headers were recorded, none of whose ids is on the server any more: every
    message is listed (imported rather than lost), the admin is told how to set it again, and the next
    listing does not warn again."""
    seed(dovecot_server, dovecot_user, 2)
    state = MemoryState()
    state.set("pop3:old_ids", '["gone-1", "gone-2"]')
    with caplog.at_level(logging.WARNING), connector(dovecot_server, dovecot_user, tmp_path, state=state) as conn:
        assert len(conn.list_ids()) == 2
        assert "no record of their headers" in caplog.text and "--only-new" in caplog.text
        caplog.clear()
        assert len(conn.list_ids()) == 2
        assert caplog.text == ""


def test_watermark_on_a_server_without_top(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """TOP is optional in POP3: without it the only-new list still works by id, with a warning that a later
    migration cannot be recognised; and a migration seen without TOP imports everything rather than fail."""
    seed(dovecot_server, dovecot_user, 2)
    state = MemoryState()
    no_top = NetProxy(dovecot_server.pop3_port, client_filter=lambda data: data.replace(b"TOP ", b"XTOP "))
    with no_top, caplog.at_level(logging.WARNING):
        with connector(dovecot_server, dovecot_user, tmp_path, state=state, port=no_top.port) as conn:
            conn.set_watermark()
            assert conn.list_ids() == []
        assert "refused TOP" in caplog.text and "remembered by their ids only" in caplog.text
        # as after a migration, with headers recorded before (on a server that had TOP): no old id is there
        state.set("pop3:old_ids", '["gone-1"]')
        state.set("pop3:old_known", '["0123456789abcdef"]')
        caplog.clear()
        with connector(dovecot_server, dovecot_user, tmp_path, state=state, port=no_top.port) as conn:
            assert len(conn.list_ids()) == 2
        assert "does not answer TOP" in caplog.text


def test_wrong_password_is_a_secret_error(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path
) -> None:
    conn = connector(dovecot_server, dovecot_user, tmp_path, password="wrong-secret")
    with pytest.raises(SecretError) as err:
        conn.open()
    assert f"refused the password for {dovecot_user.name}@127.0.0.1" in str(err.value)
    assert "wrong-secret" not in str(err.value)


def test_xoauth2(dovecot_server: Dovecot, tmp_path: Path) -> None:
    cred = Credential(
        host="127.0.0.1",
        port=dovecot_server.pop3_port,
        security="starttls",
        username="alice",
        auth="oauth2",
        ca_file=str(dovecot_server.ca),
        timeout=10,
    )
    mailbox = Mailbox(name="O", connection="pop3", credentials=(cred,))
    cfg = Config(mailboxes=(mailbox,), path=tmp_path / "integrator.toml")
    marker = uuid.uuid4().hex
    dovecot_server.append(User(name="alice", password="pw-alice"), [message(1).replace(b"Body", marker.encode())])
    good = {"access_token": "alice-oauth-token"}
    with make_connector(mailbox, cred, config=cfg, secrets=good.__getitem__, state=MemoryState()) as conn:
        fetched = [raw for _, raw in conn.fetch(conn.list_ids())]  # the session logged in with the token reads
    assert any(marker.encode() in raw for raw in fetched)
    bad = {"access_token": "bob-oauth-token"}
    with pytest.raises(SecretError, match=r"refused the access token for alice@127.0.0.1") as err:
        make_connector(mailbox, cred, config=cfg, secrets=bad.__getitem__, state=MemoryState()).open()
    assert "bob-oauth-token" not in str(err.value)


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_untrusted_certificate(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, security: str
) -> None:
    with pytest.raises(ConnectError, match=r"certificate .* not trusted.*ca_file"):
        connector(dovecot_server, dovecot_user, tmp_path, security=security, ca_file="").open()


def _hide_uidl_command(data: bytes) -> bytes:
    return re.sub(rb"(?im)^UIDL\b", b"XUIDL", data)


def _hide_uidl_capability(data: bytes) -> bytes:
    return data.replace(b"\r\nUIDL\r\n", b"\r\n")


def test_server_without_uidl_uses_header_hashes(
    dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seed(dovecot_server, dovecot_user, 3)
    with NetProxy(
        dovecot_server.pop3_port, client_filter=_hide_uidl_command, server_filter=_hide_uidl_capability
    ) as proxy:
        with connector(dovecot_server, dovecot_user, tmp_path, port=proxy.port) as conn:
            ids = conn.list_ids()
            assert len(ids) == 3 and all(re.fullmatch(r"sha256:[0-9a-f]{64}", i) for i in ids)
            assert [raw for _, raw in conn.fetch(ids)] == [message(n) for n in (1, 2, 3)]
            conn.dispose(ids[:1])
        assert "no UIDL" in caplog.text
        report = connector(dovecot_server, dovecot_user, tmp_path, port=proxy.port).test()
        assert report.ok and "UIDL" not in report.capabilities
        assert "header hashes" in str(report.checks)
        with connector(dovecot_server, dovecot_user, tmp_path, port=proxy.port) as conn:
            assert conn.list_ids() == ids[1:]
    assert subjects_in(dovecot_server, dovecot_user, "INBOX") == ["Help 2", "Help 3"]


def test_connection_cut_mid_retr(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    seed(dovecot_server, dovecot_user, 4, size=20_000)
    with NetProxy(dovecot_server.pop3_port) as proxy:
        with connector(dovecot_server, dovecot_user, tmp_path, port=proxy.port) as conn:
            ids = conn.list_ids()
            got: list[str] = []
            proxy.cut_after(2 * 20_600 + 3_000)
            with pytest.raises(RetrievalError, match=r"connection was lost"):
                for sid, raw in conn.fetch(ids):
                    assert raw == message(len(got) + 1, 20_000)
                    got.append(sid)
        assert proxy.cuts == 1
    assert got == ids[:2]
    assert len(subjects_in(dovecot_server, dovecot_user, "INBOX")) == 4


def test_stalled_server_times_out(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    seed(dovecot_server, dovecot_user, 2)
    with NetProxy(dovecot_server.pop3_port) as proxy:
        conn = connector(dovecot_server, dovecot_user, tmp_path, port=proxy.port, timeout=1)
        with conn:
            ids = conn.list_ids()
            proxy.stall()
            started = time.monotonic()
            with pytest.raises(RetrievalError, match=r"no answer within 1 s"):
                list(conn.fetch(ids))
            assert time.monotonic() - started < 3


def test_stalled_greeting_is_a_connect_error(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    """A server that takes the connection but never greets: the connect timeout ends the wait."""
    with NetProxy(dovecot_server.pop3_port) as proxy:
        proxy.stall()
        with pytest.raises(ConnectError, match=r"No answer"):
            connector(dovecot_server, dovecot_user, tmp_path, port=proxy.port, timeout=1).open()


def test_report(dovecot_server: Dovecot, dovecot_user: User, tmp_path: Path) -> None:
    seed(dovecot_server, dovecot_user, 2)
    report = connector(dovecot_server, dovecot_user, tmp_path, security="ssl").test()
    assert report.ok, report.checks
    assert report.message_count == 2 and "UIDL" in report.capabilities
    assert [c.name for c in report.checks] == ["connect", "tls", "login", "folder", "after_import"]

    untrusted = connector(dovecot_server, dovecot_user, tmp_path, security="ssl", ca_file="").test()
    assert [c.name for c in untrusted.checks if not c.ok] == ["tls"]
    wrong = connector(dovecot_server, dovecot_user, tmp_path, password="nope").test()
    assert [c.name for c in wrong.checks if not c.ok] == ["login"]
