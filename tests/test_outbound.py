"""Acknowledgements and the outbound queue, through `integrator run` against a real SMTP server on loopback
(aiosmtpd with STARTTLS and AUTH, tests/smtpserver.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from halo_integrator import config as config_mod
from halo_integrator.errors import SecretError
from halo_integrator.importer import Importer
from halo_integrator.mail import parse
from halo_integrator.outgoing.outbox import BACKOFF_MINUTES, Outbox, backoff
from halo_integrator.store import Store
from helpers import email_bytes, invoke
from smtpserver import SmtpServer
from smtpsetup import (
    SMTP_PASSWORD,
    SMTP_USER,
    customer_email,
    desk_config,
    drop,
    nothing_more,
    outbound_log,
    rows,
)

GROUP = """
[[message_groups]]
name = "Friendly"

[message_groups.templates.new_ticket]
subject = "Received: {subject}"
body = '''Dear {requester_name} ({requester_email}),

ticket {ticket_id} is {status} at {mailbox_name} <{mailbox_address}>.
You wrote:
{body}'''
"""


def run(cfg: Path, *args: str):
    result = invoke(cfg, "run", *args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


# ------------------------------------------------------------------------------------ acknowledgement


def test_acknowledgement_sent_once_with_headers_and_template(
    tmp_path: Path, smtp: SmtpServer, ca: trustme.CA, env: None
) -> None:
    cfg = desk_config(
        tmp_path, smtp, ca, outgoing='message_group = "Friendly"\nsignature = "The Desk team"', tail=GROUP
    )
    drop(
        tmp_path,
        "1.eml",
        customer_email(
            "Printer broken",
            message_id="p1@customer.test",
            references="<root@customer.test>",
            body="It jams on page 2.",
        ),
    )
    run(cfg)

    got = smtp.received()
    msg = got.message
    assert got.user == SMTP_USER and got.mail_from == "desk@example.com" and got.rcpt_tos == ["ann@customer.test"]
    assert msg["Subject"] == "[#1] Received: Printer broken"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["In-Reply-To"] == "<p1@customer.test>"
    assert msg["References"].split() == ["<root@customer.test>", "<p1@customer.test>"]
    assert msg["Message-ID"].endswith("@example.com>")
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "Dear Ann Customer (ann@customer.test)" in text
    assert "ticket 1 is open at Desk <desk@example.com>" in text
    assert "It jams on page 2." in text
    assert text.rstrip().endswith("-- \nThe Desk team")
    assert msg.get_body(("html",)) is not None

    db = tmp_path / "tickets.db"
    log = outbound_log(db)
    assert [r["status"] for r in log] == ["queued", "sent"]
    assert log[1]["detail"].startswith("250 ") and log[1]["ticket_id"] == 1
    ack_id = msg["Message-ID"].strip("<>")
    actions = rows(db, "SELECT kind, message_id FROM actions WHERE ticket_id = 1 ORDER BY id")
    assert actions == [
        {"kind": "email_in", "message_id": "p1@customer.test"},
        {"kind": "email_out", "message_id": ack_id},
    ]

    run(cfg)  # the email is gone from the folder; nothing is acknowledged or sent again
    assert nothing_more(smtp)
    assert [r["status"] for r in outbound_log(db)] == ["queued", "sent"]


def test_update_gets_no_acknowledgement(tmp_path: Path, smtp: SmtpServer, ca: trustme.CA, env: None) -> None:
    cfg = desk_config(tmp_path, smtp, ca)
    drop(tmp_path, "1.eml", customer_email("VPN down", message_id="v1@customer.test"))
    run(cfg)
    smtp.received()
    drop(tmp_path, "2.eml", customer_email("Re: [#1] VPN down", message_id="v2@customer.test"))
    run(cfg)
    assert nothing_more(smtp)
    assert rows(tmp_path / "tickets.db", "SELECT status FROM inbound_log ORDER BY id")[-1]["status"] == "updated"


def _auto_reply() -> bytes:
    return customer_email("Out of office", message_id="ooo@customer.test", headers={"Auto-Submitted": "auto-replied"})


def _bounce() -> bytes:
    return customer_email(
        "Undelivered Mail Returned to Sender",
        message_id="dsn@mx.customer.test",
        sender="Mail Delivery System <MAILER-DAEMON@mx.customer.test>",
    )


@pytest.mark.parametrize(
    "make, status", [(_auto_reply, "auto_reply"), (_bounce, "bounce")], ids=["auto-reply", "bounce"]
)
def test_no_acknowledgement_to_auto_replies_and_bounces(
    tmp_path: Path, smtp: SmtpServer, ca: trustme.CA, env: None, make: Callable[[], bytes], status: str
) -> None:
    cfg = desk_config(tmp_path, smtp, ca)
    drop(tmp_path, "1.eml", make())
    run(cfg)
    db = tmp_path / "tickets.db"
    assert rows(db, "SELECT status FROM inbound_log")[0]["status"] == status
    assert nothing_more(smtp)
    assert rows(db, "SELECT count(*) AS n FROM outbound_queue")[0]["n"] == 0


@pytest.mark.parametrize(
    "sender, date, reason",
    [
        ("Ann <ann@customer.test>", "Mon, 02 Jan 2023 08:00:00 +0000", "more than a day ago"),
        ("Shop <no-reply@shop.test>", None, "does not take replies"),
        ("Shop <donotreply@shop.test>", None, "does not take replies"),
    ],
    ids=["old", "no-reply", "donotreply"],
)
def test_suppressed_acknowledgements_are_logged(
    tmp_path: Path, smtp: SmtpServer, ca: trustme.CA, env: None, sender: str, date: str | None, reason: str
) -> None:
    cfg = desk_config(tmp_path, smtp, ca)
    drop(tmp_path, "1.eml", customer_email("Question", message_id="q1@x.test", sender=sender, date=date))
    run(cfg)
    assert nothing_more(smtp)
    db = tmp_path / "tickets.db"
    assert rows(db, "SELECT status FROM inbound_log WHERE mailbox = 'Desk'")[0]["status"] == "created"
    log = outbound_log(db)
    assert [r["status"] for r in log] == ["suppressed"]
    assert reason in log[0]["detail"] and log[0]["ticket_id"] == 1


def test_an_email_of_unknown_age_is_not_acknowledged(
    tmp_path: Path, smtp: SmtpServer, ca: trustme.CA, env: None
) -> None:
    """Neither a Date nor a Received header: it may be years old (an archive copied into the inbox), so like
    old mail it opens a ticket and gets no acknowledgement, and the log says why."""
    cfg = desk_config(tmp_path, smtp, ca)
    raw = customer_email("Question", message_id="q1@x.test")
    undated = b"".join(line for line in raw.splitlines(keepends=True) if not line.startswith(b"Date:"))
    assert b"Received:" not in undated and undated != raw
    drop(tmp_path, "1.eml", undated)
    run(cfg)
    assert nothing_more(smtp)
    log = outbound_log(tmp_path / "tickets.db")
    assert [r["status"] for r in log] == ["suppressed"] and "its age is unknown" in log[0]["detail"]


def test_a_rule_turning_the_acknowledgement_off_is_logged(
    tmp_path: Path, smtp: SmtpServer, ca: trustme.CA, env: None
) -> None:
    rule = (
        '\n[[mailboxes.rules]]\nname = "Quiet"\nconditions = [{ field = "subject", op = "contains", '
        'value = "quiet" }]\nactions = { no_acknowledgement = true }\n'
    )
    cfg = desk_config(tmp_path, smtp, ca, tail=rule)
    drop(tmp_path, "1.eml", customer_email("Keep it quiet", message_id="q1@x.test"))
    run(cfg)
    assert nothing_more(smtp)
    log = outbound_log(tmp_path / "tickets.db")
    assert [(r["status"], r["detail"], r["ticket_id"]) for r in log] == [
        ("suppressed", "No acknowledgement: an email rule turned it off.", 1)
    ]


@pytest.mark.parametrize("sender", ["Desk <DESK@example.com>", "Other desk <sales@example.com>"])
def test_no_acknowledgement_to_our_own_mailboxes(
    tmp_path: Path, smtp: SmtpServer, ca: trustme.CA, env: None, sender: str
) -> None:
    other = '\n[[mailboxes]]\nname = "Sales"\naddress = "sales@example.com"\nconnection = "folder"\npath = "sales"\n'
    cfg = desk_config(tmp_path, smtp, ca, tail=other)
    (tmp_path / "sales").mkdir()
    drop(tmp_path, "1.eml", customer_email("Question", message_id="q1@x.test", sender=sender))
    run(cfg)
    assert nothing_more(smtp)
    assert rows(tmp_path / "tickets.db", "SELECT count(*) AS n FROM outbound_queue")[0]["n"] == 0


def test_acknowledgements_over_the_rate_limit_are_suppressed(
    tmp_path: Path, smtp: SmtpServer, ca: trustme.CA, env: None
) -> None:
    cfg = desk_config(tmp_path, smtp, ca, outgoing="ack_limit_per_hour = 2")
    for n in range(1, 4):
        drop(tmp_path, f"{n}.eml", customer_email(f"Problem {n}", message_id=f"r{n}@customer.test"))
    run(cfg)
    got = sorted(smtp.received().message["Subject"] for _ in range(2))
    assert got == ["[#1] Problem 1", "[#2] Problem 2"]
    assert nothing_more(smtp)
    log = outbound_log(tmp_path / "tickets.db")
    suppressed = [r for r in log if r["status"] == "suppressed"]
    assert len(suppressed) == 1 and suppressed[0]["ticket_id"] == 3
    assert "limit 2 per hour" in suppressed[0]["detail"]

    # the queue counts per recipient: someone else still gets theirs
    drop(tmp_path, "4.eml", customer_email("Mine too", message_id="b1@other.test", sender="Bob <bob@other.test>"))
    run(cfg)
    assert smtp.received().rcpt_tos == ["bob@other.test"]


def test_acknowledgement_off_or_method_none_sends_nothing(
    tmp_path: Path, smtp: SmtpServer, ca: trustme.CA, env: None
) -> None:
    cfg = desk_config(tmp_path, smtp, ca, incoming="acknowledge_new_tickets = false")
    drop(tmp_path, "1.eml", customer_email("Hello", message_id="h1@customer.test"))
    run(cfg)
    assert nothing_more(smtp)
    assert outbound_log(tmp_path / "tickets.db") == []


# ------------------------------------------------------------------------------------ queue and retries


def test_smtp_down_during_a_run_then_back_for_the_next(tmp_path: Path, smtp: SmtpServer, ca: trustme.CA) -> None:
    cfg_path = desk_config(tmp_path, smtp, ca)
    drop(tmp_path, "1.eml", customer_email("Disk full", message_id="d1@customer.test"))
    cfg = config_mod.load(cfg_path)
    store = Store.open(cfg.database_path)
    db = cfg.database_path

    def secrets(mailbox: object, credential: object) -> Callable[[str], str]:
        def lookup(kind: str) -> str:
            if kind == "smtp_password":
                return SMTP_PASSWORD
            raise SecretError(f"no {kind}")

        return lookup

    start = datetime.now(UTC)

    def importer_at(when: datetime) -> Importer:
        # the retry schedule needs time to pass: the outbox takes a clock, and so the next run is "later"
        outbox = Outbox(cfg, store, secrets=secrets, clock=lambda: when)
        return Importer(cfg, store, secrets=secrets, outbox=outbox)

    smtp.stop()
    result = importer_at(start).run()
    assert result.exit_code == 0 and result.mailboxes[0].created == 1
    assert [a.status for a in result.outbound] == ["failed"]
    assert result.outbound[0].retry_at is not None
    log = outbound_log(db)
    assert [r["status"] for r in log] == ["queued", "failed"]
    assert "refused the connection" in log[1]["detail"] and "will retry after" in log[1]["detail"]
    queue = rows(db, "SELECT status, attempts FROM outbound_queue")
    assert queue == [{"status": "queued", "attempts": 1}]

    # still down and not yet due: nothing is tried
    assert importer_at(start + timedelta(seconds=10)).run().outbound == []

    smtp.start()
    later = start + backoff(1) + timedelta(seconds=1)
    result = importer_at(later).run()
    assert [a.status for a in result.outbound] == ["sent"]
    assert smtp.received().message["Subject"] == "[#1] Disk full"
    assert importer_at(later + timedelta(hours=2)).run().outbound == []
    assert nothing_more(smtp)  # exactly once
    assert [r["status"] for r in outbound_log(db)] == ["queued", "failed", "sent"]
    assert rows(db, "SELECT status, attempts FROM outbound_queue") == [{"status": "sent", "attempts": 2}]
    store.close()


def test_backoff_schedule_grows_and_is_capped() -> None:
    waits = [backoff(n).total_seconds() / 60 for n in range(1, 10)]
    assert waits[: len(BACKOFF_MINUTES)] == list(BACKOFF_MINUTES)
    assert waits == sorted(waits) and max(waits) == BACKOFF_MINUTES[-1]


def test_failed_run_is_retried_by_outbox_retry(tmp_path: Path, smtp: SmtpServer, ca: trustme.CA, env: None) -> None:
    cfg = desk_config(tmp_path, smtp, ca)
    drop(tmp_path, "1.eml", customer_email("Mail stuck", message_id="m1@customer.test"))
    smtp.stop()
    result = invoke(cfg, "run")
    assert result.exit_code == 0
    assert "not sent" in result.stderr

    listed = json.loads(invoke(cfg, "outbox", "list", "--json").stdout)
    assert [(r["status"], r["attempts"], r["kind"]) for r in listed] == [("queued", 1, "new_ticket")]
    assert "refused the connection" in listed[0]["last_error"]

    smtp.start()
    result = invoke(cfg, "outbox", "retry")
    assert result.exit_code == 0, result.stderr
    assert "Sent email 1 to ann@customer.test: 250" in result.stdout
    assert smtp.received().rcpt_tos == ["ann@customer.test"]
    assert invoke(cfg, "outbox", "retry").stdout.startswith("Nothing to send")
    assert nothing_more(smtp)
    assert json.loads(invoke(cfg, "outbox", "list", "--json").stdout) == []
    assert [r["status"] for r in json.loads(invoke(cfg, "outbox", "list", "--all", "--json").stdout)] == ["sent"]


def test_permanent_rejection_stays_visible_as_failed(
    tmp_path: Path, smtp: SmtpServer, ca: trustme.CA, env: None
) -> None:
    cfg = desk_config(tmp_path, smtp, ca)
    drop(tmp_path, "1.eml", customer_email("Spammy", message_id="s1@customer.test"))
    smtp.data_reply = "554 5.7.1 Message rejected as spam"
    assert invoke(cfg, "run").exit_code == 5  # an email that failed for good makes the run partial
    db = tmp_path / "tickets.db"
    log = outbound_log(db)
    assert [r["status"] for r in log] == ["queued", "failed"]
    assert "554 5.7.1" in log[1]["detail"] and "will not retry" in log[1]["detail"]
    assert rows(db, "SELECT status FROM outbound_queue") == [{"status": "failed"}]
    assert invoke(cfg, "run").exit_code == 0  # a later run does not try it again
    assert len(outbound_log(db)) == 2

    smtp.data_reply = ""
    result = invoke(cfg, "outbox", "retry", "1")
    assert result.exit_code == 0 and "Sent email 1" in result.stdout
    assert smtp.received().message["Subject"] == "[#1] Spammy"


def test_wrong_smtp_password_keeps_the_email_queued(
    tmp_path: Path, smtp: SmtpServer, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTEGRATOR_SECRET_DESK_OUTGOING_SMTP_PASSWORD", "wrong")
    cfg = desk_config(tmp_path, smtp, ca)
    drop(tmp_path, "1.eml", customer_email("Locked out", message_id="l1@customer.test"))
    assert invoke(cfg, "run").exit_code == 0
    log = outbound_log(tmp_path / "tickets.db")
    assert log[-1]["status"] == "failed" and "refused the password" in log[-1]["detail"]
    assert "wrong" not in log[-1]["detail"]
    result = invoke(cfg, "outbox", "retry")
    assert result.exit_code == 4
    monkeypatch.setenv("INTEGRATOR_SECRET_DESK_OUTGOING_SMTP_PASSWORD", SMTP_PASSWORD)
    assert invoke(cfg, "outbox", "retry").exit_code == 0
    assert smtp.received().rcpt_tos == ["ann@customer.test"]


def test_outgoing_service_off_keeps_everything_queued(
    tmp_path: Path, smtp: SmtpServer, ca: trustme.CA, env: None
) -> None:
    cfg = desk_config(tmp_path, smtp, ca, top="[services]\noutgoing = false\n")
    drop(tmp_path, "1.eml", customer_email("Queued please", message_id="o1@customer.test"))
    result = invoke(cfg, "run")
    assert result.exit_code == 0
    assert "outgoing service is off" in result.stderr and "1 email(s) wait" in result.stderr
    assert nothing_more(smtp)
    db = tmp_path / "tickets.db"
    assert [r["status"] for r in outbound_log(db)] == ["queued"]
    assert rows(db, "SELECT status, attempts FROM outbound_queue") == [{"status": "queued", "attempts": 0}]
    assert rows(db, "SELECT kind FROM actions ORDER BY id")[-1]["kind"] == "email_out"  # threading works at once
    assert invoke(cfg, "outbox", "retry").exit_code == 1

    cfg.write_text(cfg.read_text().replace("outgoing = false", "outgoing = true"), encoding="utf-8")
    invoke(cfg, "run")
    assert smtp.received().message["Subject"] == "[#1] Queued please"
    assert [r["status"] for r in outbound_log(db)] == ["queued", "sent"]


def test_incoming_off_still_sends_what_is_queued(tmp_path: Path, smtp: SmtpServer, ca: trustme.CA, env: None) -> None:
    cfg = desk_config(tmp_path, smtp, ca)
    drop(tmp_path, "1.eml", customer_email("First", message_id="f1@customer.test"))
    smtp.stop()
    invoke(cfg, "run")
    smtp.start()
    cfg.write_text(
        cfg.read_text().replace('database = "tickets.db"', 'database = "tickets.db"\n[services]\nincoming = false'),
        encoding="utf-8",
    )
    invoke(cfg, "outbox", "retry")  # due now; incoming = false does not stop outgoing
    assert smtp.received().rcpt_tos == ["ann@customer.test"]


# ------------------------------------------------------------------------------------ the policy itself


def test_acknowledge_policy_logs_auto_replies_and_bounces(tmp_path: Path, smtp: SmtpServer, ca: trustme.CA) -> None:
    """Whatever path makes a ticket from an automatic email, the outbox never acknowledges it."""
    cfg = config_mod.load(desk_config(tmp_path, smtp, ca))
    store = Store.open(cfg.database_path)
    outbox = Outbox(cfg, store, secrets=lambda m, c: lambda kind: SMTP_PASSWORD)
    mailbox = cfg.mailbox("Desk")
    auto = parse(
        email_bytes(
            "Away",
            sender="ann@customer.test",
            date=datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000"),
            headers={"Auto-Submitted": "auto-replied"},
        )
    )
    bounce = parse(
        email_bytes(
            "Undelivered",
            sender="MAILER-DAEMON@mx.test",
            date=datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000"),
        )
    )
    ours = parse(
        email_bytes(
            "Loop?", sender="Desk <Desk@Example.com>", date=datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        )
    )
    with store.transaction():
        ticket = store.create_ticket(subject="x", mailbox="Desk", requester_name="", requester_email="", time="t")
        assert outbox.acknowledge(mailbox, auto, ticket, subject="Away") is None
        assert outbox.acknowledge(mailbox, bounce, ticket, subject="Undelivered") is None
        assert outbox.acknowledge(mailbox, ours, ticket, subject="Loop?") is None
    log = outbound_log(cfg.database_path)
    assert [r["status"] for r in log] == ["suppressed"] * 3
    details = [r["detail"] for r in log]
    assert "automatic reply" in details[0]
    assert "bounce" in details[1]
    assert "one of our own mailboxes" in details[2]
    store.close()
