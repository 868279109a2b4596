"""Alerts: the admins get one email when a mailbox keeps failing and one when it recovers, against a real
SMTP server on loopback (aiosmtpd with STARTTLS and AUTH)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from helpers import invoke
from smtpserver import SmtpServer
from smtpsetup import SMTP_ENV, SMTP_PASSWORD, desk_config, nothing_more, rows

ALERTS = '[outgoing]\nmailbox = "Desk"\nadmins = ["admin@example.com", "oncall@example.com"]\n\n' \
         "[alerts]\nafter_failed_runs = 2\n"
pytestmark = pytest.mark.usefixtures("env")
GONE = '\n[[mailboxes]]\nname = "Gone"\nconnection = "folder"\npath = "gone"\n'


def test_one_alert_per_incident_and_one_on_recovery(tmp_path: Path, smtp: SmtpServer, ca: trustme.CA) -> None:
    cfg = desk_config(tmp_path, smtp, ca, top=ALERTS, tail=GONE)
    assert invoke(cfg, "run").exit_code == 5  # "Gone" fails once: not yet an incident
    assert nothing_more(smtp)

    assert invoke(cfg, "run").exit_code == 5  # twice in a row: one alert to both admins
    alert = smtp.received()
    assert alert.message["Subject"] == "[halo-integrator] ALERT: Mailbox Gone has failed 2 runs in a row"
    assert sorted(alert.rcpt_tos) == ["admin@example.com", "oncall@example.com"]
    assert alert.message["Auto-Submitted"] == "auto-replied"
    body = alert.message.get_body(("plain",)).get_content()
    assert "does not exist" in body and "integrator mailbox test Gone" in body

    for _ in range(2):  # still failing: no more email
        assert invoke(cfg, "run").exit_code == 5
    assert nothing_more(smtp)

    (tmp_path / "gone").mkdir()
    assert invoke(cfg, "run").exit_code == 0
    recovered = smtp.received()
    assert recovered.message["Subject"] == (
        "[halo-integrator] RECOVERED: Mailbox Gone has failed 2 runs in a row"
    )
    assert invoke(cfg, "run").exit_code == 0
    assert nothing_more(smtp)

    incidents = rows(tmp_path / "tickets.db", "SELECT * FROM incidents")
    assert len(incidents) == 1 and incidents[0]["closed_at"] is not None
    sent = rows(tmp_path / "tickets.db", "SELECT status FROM outbound_log WHERE subject LIKE '%Gone%'")
    assert [r["status"] for r in sent] == ["queued", "sent", "queued", "sent"]


def test_alert_waits_in_the_outbox_while_the_mail_server_is_down(
    tmp_path: Path, smtp: SmtpServer, ca: trustme.CA
) -> None:
    cfg = desk_config(tmp_path, smtp, ca, top=ALERTS, tail=GONE)
    smtp.stop()
    for _ in range(2):
        invoke(cfg, "run")
    queued = rows(tmp_path / "tickets.db", "SELECT status, kind FROM outbound_queue")
    assert queued == [{"status": "queued", "kind": "alert"}]  # kept for a later run, not dropped
    assert len(rows(tmp_path / "tickets.db", "SELECT * FROM incidents WHERE closed_at IS NULL")) == 1


def test_without_admins_incidents_are_recorded_and_doctor_says_alerts_cannot_go(
    tmp_path: Path, smtp: SmtpServer, ca: trustme.CA
) -> None:
    cfg = desk_config(tmp_path, smtp, ca, top="[alerts]\nafter_failed_runs = 1\n", tail=GONE)
    result = invoke(cfg, "run")
    assert result.exit_code == 5
    assert "alerts were not emailed" in result.stderr
    assert nothing_more(smtp)
    assert len(rows(tmp_path / "tickets.db", "SELECT * FROM incidents")) == 1
    doctor = invoke(cfg, "doctor", "--offline")
    assert "alerts" in doctor.stdout and "[outgoing] mailbox and admins" in doctor.stdout


def test_smtp_password_stored_by_the_cli_is_the_one_sending_uses(
    tmp_path: Path, smtp: SmtpServer, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in SMTP_ENV:
        monkeypatch.delenv(key)
    cfg = desk_config(tmp_path, smtp, ca)
    missing = invoke(cfg, "mailbox", "send-test", "Desk", "--to", "someone@example.org")
    assert missing.exit_code == 4
    stored = invoke(cfg, "credentials", "smtp-password", "Desk", "--secret-stdin", input=SMTP_PASSWORD + "\n")
    assert stored.exit_code == 0, stored.stderr
    assert "Desk/outgoing/smtp_password" in stored.stdout and SMTP_PASSWORD not in stored.stdout
    sent = invoke(cfg, "mailbox", "send-test", "Desk", "--to", "someone@example.org")
    assert sent.exit_code == 0, sent.stderr
    assert smtp.received().rcpt_tos == ["someone@example.org"]


def test_sender_of_a_too_big_email_is_told_when_configured(
    tmp_path: Path, smtp: SmtpServer, ca: trustme.CA
) -> None:
    from smtpsetup import customer_email, drop

    cfg = desk_config(tmp_path, smtp, ca, incoming="max_email_mb = 0.01\ntell_sender_when_too_big = true\n")
    drop(tmp_path, "big.eml", customer_email("Scans", message_id="big@customer.test", body="x" * 30000))
    drop(tmp_path, "auto.eml", customer_email("Away", message_id="away@customer.test", body="y" * 30000,
                                              headers={"Auto-Submitted": "auto-replied"}))
    result = invoke(cfg, "run", "--json")
    assert result.exit_code == 0, result.stderr
    notice = smtp.received()
    assert notice.rcpt_tos == ["ann@customer.test"]
    assert notice.message["Subject"] == "Not delivered to Desk: Scans"
    assert notice.message["In-Reply-To"] == "<big@customer.test>"
    assert "0.01 MB" in notice.message.get_body(("plain",)).get_content()
    assert nothing_more(smtp)  # no notice to the auto-reply


def test_sender_is_not_told_by_default(tmp_path: Path, smtp: SmtpServer, ca: trustme.CA) -> None:
    from smtpsetup import customer_email, drop

    cfg = desk_config(tmp_path, smtp, ca, incoming="max_email_mb = 0.01\nacknowledge_new_tickets = false\n")
    drop(tmp_path, "big.eml", customer_email("Scans", message_id="big@customer.test", body="x" * 30000))
    assert invoke(cfg, "run").exit_code == 0
    assert nothing_more(smtp)
