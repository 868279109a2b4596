"""The whole loop on loopback: a customer email is imported from a real Dovecot over IMAP, acknowledged over a
real SMTP server (aiosmtpd, STARTTLS + AUTH), the customer answers the acknowledgement, and the answer, put in
the IMAP inbox, lands on the same ticket in the next run."""

from __future__ import annotations

import json
import shutil
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
import trustme

from dovecot import Dovecot, User
from helpers import invoke, invoke_json
from smtpserver import SmtpServer
from smtpsetup import (
    SMTP_PASSWORD,
    customer_email,
    nothing_more,
    outbound_log,
    outgoing_toml,
    rows,
)

pytestmark = pytest.mark.dovecot


def test_customer_answer_to_the_acknowledgement_lands_on_the_same_ticket(
    tmp_path: Path,
    dovecot_server: Dovecot,
    dovecot_user: User,
    smtp: SmtpServer,
    ca: trustme.CA,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shutil.copy(dovecot_server.ca, tmp_path / "server-ca.pem")
    ca.cert_pem.write_to_path(str(tmp_path / "smtp-ca.pem"))
    address = f"{dovecot_user.name}@example.com"
    cfg = tmp_path / "integrator.toml"
    cfg.write_text(
        f"""instance = "test"
database = "tickets.db"

[[mailboxes]]
name = "Support"
address = "{address}"
connection = "imap"

[mailboxes.incoming]
acknowledge_new_tickets = true
"""
        + outgoing_toml(smtp)
        + f"""
[[mailboxes.credentials]]
name = "default"
host = "127.0.0.1"
port = {dovecot_server.imap_port}
security = "starttls"
username = "{dovecot_user.name}"
ca_file = "server-ca.pem"
timeout = 10
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("INTEGRATOR_SECRET_SUPPORT_DEFAULT_PASSWORD", dovecot_user.password)
    monkeypatch.setenv("INTEGRATOR_SECRET_SUPPORT_DEFAULT_SMTP_PASSWORD", SMTP_PASSWORD)

    dovecot_server.append(
        dovecot_user,
        [customer_email("Laptop will not boot", message_id="boot-1@customer.test", body="It shows a black screen.")],
    )
    result = invoke(cfg, "run")
    assert result.exit_code == 0, result.stderr

    ack = smtp.received()
    assert ack.rcpt_tos == ["ann@customer.test"] and ack.mail_from == address
    ack_msg = ack.message
    assert ack_msg["Subject"] == "[#1] Laptop will not boot"
    assert ack_msg["Auto-Submitted"] == "auto-replied"
    assert ack_msg["In-Reply-To"] == "<boot-1@customer.test>"

    # the customer answers the acknowledgement from a client that drops the ticket tag from the subject
    answer = EmailMessage()
    answer["From"] = "Ann Customer <ann@customer.test>"
    answer["To"] = address
    answer["Subject"] = "Re: Laptop will not boot"
    answer["Date"] = ack_msg["Date"]
    answer["Message-ID"] = make_msgid(domain="customer.test")
    answer["In-Reply-To"] = ack_msg["Message-ID"]
    answer["References"] = f"{ack_msg['References']} {ack_msg['Message-ID']}"
    answer.set_content("Thanks. It still does not boot after a restart.")
    dovecot_server.append(dovecot_user, [answer.as_bytes()])

    result = invoke(cfg, "run")
    assert result.exit_code == 0, result.stderr
    assert nothing_more(smtp)  # an update is not acknowledged

    db = tmp_path / "tickets.db"
    assert [r["status"] for r in rows(db, "SELECT status FROM inbound_log ORDER BY id")] == ["created", "updated"]
    last = rows(db, "SELECT decision_json, ticket_id FROM inbound_log ORDER BY id DESC LIMIT 1")[0]
    assert last["ticket_id"] == 1
    assert json.loads(last["decision_json"])["thread"]["how"] == "in_reply_to"
    tickets = invoke_json(cfg, "tickets", "list")
    assert len(tickets) == 1 and tickets[0]["action_count"] == 3
    shown = invoke_json(cfg, "tickets", "show", "1")
    assert [a["kind"] for a in shown["actions"]] == ["email_in", "email_out", "email_in"]
    assert [r["status"] for r in outbound_log(db)] == ["queued", "sent"]

    # both customer emails were moved off the inbox after their commit
    client = dovecot_server.imap(dovecot_user)
    try:
        client.select_folder("INBOX", readonly=True)
        assert client.search(["ALL"]) == []
    finally:
        client.logout()
    assert invoke(cfg, "outbox", "list", "--json").stdout.strip() == "[]"
