"""`integrator reply`, sending restrictions, signatures and `mailbox send-test`, against a real SMTP server on
loopback (aiosmtpd with STARTTLS and AUTH)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import trustme

from helpers import invoke
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

AGENTS = """
[[agents]]
name = "nina"
email = "nina.peach@example.com"
teams = ["3rd Line Support"]
signature = "Nina (her own signature)"

[[agents]]
name = "bob"
teams = ["Sales"]
departments = ["Finance"]

[[agents]]
name = "root"
admin = true
"""

RESTRICTED = """send_restrictions = { teams = ["3rd Line Support", "Service Desk"], departments = ["IT"] }
signature = "The Desk"
signature_overrides = { nina = "Nina Peach | 3rd Line Support" }
"""


@pytest.fixture
def desk(tmp_path: Path, smtp: SmtpServer, ca: trustme.CA, env: None) -> Path:
    """A ticket 1 from Ann (acknowledgements off, so the server has received nothing yet)."""
    cfg = desk_config(tmp_path, smtp, ca, incoming="acknowledge_new_tickets = false", outgoing=RESTRICTED, top=AGENTS)
    drop(
        tmp_path,
        "1.eml",
        customer_email("Printer broken", message_id="p1@customer.test", references="<older@customer.test>"),
    )
    assert invoke(cfg, "run").exit_code == 0
    return cfg


def test_reply_by_agent_with_signature_override(desk: Path, smtp: SmtpServer, tmp_path: Path) -> None:
    attachment = tmp_path / "steps.txt"
    attachment.write_text("1. open tray\n2. remove paper\n", encoding="utf-8")
    result = invoke(
        desk,
        "--as",
        "nina",
        "reply",
        "1",
        "--body",
        "Hello Ann,\n\nPlease try the steps attached.",
        "--cc",
        "boss@customer.test",
        "--attach",
        str(attachment),
    )
    assert result.exit_code == 0, result.stderr
    assert "Sent email 1 to ann@customer.test,boss@customer.test: 250" in result.stdout

    got = smtp.received()
    assert sorted(got.rcpt_tos) == ["ann@customer.test", "boss@customer.test"]
    msg = got.message
    assert msg["Subject"] == "[#1] Printer broken"
    assert msg["In-Reply-To"] == "<p1@customer.test>"
    assert msg["References"].split() == ["<older@customer.test>", "<p1@customer.test>"]
    assert msg["Cc"] == "boss@customer.test"
    assert msg["Auto-Submitted"] is None
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "Please try the steps attached." in text
    assert text.rstrip().endswith("-- \nNina Peach | 3rd Line Support")
    [att] = list(msg.iter_attachments())
    assert att.get_filename() == "steps.txt" and att.get_content().startswith("1. open tray")

    ticket = json.loads(invoke(desk, "tickets", "show", "1", "--json").stdout)
    out = ticket["actions"][-1]
    assert out["kind"] == "email_out"
    assert out["message_id"] == msg["Message-ID"].strip("<>")
    assert [a["filename"] for a in out["attachments"]] == ["steps.txt"]
    assert [r["status"] for r in outbound_log(tmp_path / "tickets.db")] == ["queued", "sent"]


def test_second_reply_threads_to_the_newest_email(desk: Path, smtp: SmtpServer) -> None:
    assert invoke(desk, "--as", "nina", "reply", "1", "--body", "First").exit_code == 0
    first = smtp.received().message
    assert invoke(desk, "--as", "root", "reply", "1", "--body", "Second").exit_code == 0
    second = smtp.received().message
    assert second["In-Reply-To"] == first["Message-ID"]
    assert second["References"].split()[-1] == first["Message-ID"]
    text = second.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.rstrip().endswith("-- \nThe Desk")  # root has no override and no signature of its own


def test_agent_outside_the_sending_restrictions_is_refused(desk: Path, smtp: SmtpServer, tmp_path: Path) -> None:
    result = invoke(desk, "--as", "bob", "reply", "1", "--body", "I am from Sales")
    assert result.exit_code == 2
    assert "'bob' may not send from mailbox 'Desk'" in result.stderr
    assert "'3rd Line Support', 'Service Desk'" in result.stderr and "'IT'" in result.stderr
    assert nothing_more(smtp)
    db = tmp_path / "tickets.db"
    assert rows(db, "SELECT count(*) AS n FROM outbound_queue")[0]["n"] == 0
    assert rows(db, "SELECT count(*) AS n FROM actions WHERE kind = 'email_out'")[0]["n"] == 0


def test_unknown_agent_and_missing_ticket(desk: Path, smtp: SmtpServer) -> None:
    result = invoke(desk, "--as", "mallory", "reply", "1", "--body", "hi")
    assert result.exit_code == 2 and "No agent named 'mallory'" in result.stderr
    result = invoke(desk, "--as", "nina", "reply", "99", "--body", "hi")
    assert result.exit_code == 1 and "No ticket 99" in result.stderr
    result = invoke(desk, "--as", "nina", "reply", "1", "--body", "a", "--body-file", "-", input="b")
    assert result.exit_code == 2
    assert nothing_more(smtp)


def test_reply_from_body_file_and_close(desk: Path, smtp: SmtpServer, tmp_path: Path) -> None:
    result = invoke(desk, "--as", "nina", "reply", "1", "--body-file", "-", "--close", input="Fixed it.\n")
    assert result.exit_code == 0, result.stderr
    assert "Ticket 1 is closed." in result.stdout
    assert "Fixed it." in smtp.received().message.get_body(("plain",)).get_content()
    assert rows(tmp_path / "tickets.db", "SELECT status FROM tickets")[0]["status"] == "closed"


def test_close_without_body_sends_the_closed_template(desk: Path, smtp: SmtpServer) -> None:
    assert invoke(desk, "--as", "nina", "reply", "1", "--close").exit_code == 0
    text = smtp.received().message.get_body(("plain",)).get_content()
    assert "Ticket 1 is now closed" in text


def test_reply_written_in_the_editor(desk: Path, smtp: SmtpServer, tmp_path: Path) -> None:
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import sys\np = sys.argv[1]\ntext = open(p).read()\nopen(p, 'w').write('Typed in the editor.\\n' + text)\n",
        encoding="utf-8",
    )
    result = invoke(desk, "--as", "nina", "reply", "1", env={"EDITOR": f"{sys.executable} {editor}"})
    assert result.exit_code == 0, result.stderr
    text = smtp.received().message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.startswith("Typed in the editor.\n")
    assert "# " not in text  # the instructions and the quoted email are left out


def test_reply_when_the_server_is_down_stays_queued(desk: Path, smtp: SmtpServer) -> None:
    smtp.stop()
    result = invoke(desk, "--as", "nina", "reply", "1", "--body", "Are you there?")
    assert result.exit_code == 1
    assert "refused the connection" in result.stderr and "stays in the outbox" in result.stdout
    smtp.start()
    assert invoke(desk, "outbox", "retry").exit_code == 0
    assert "Are you there?" in smtp.received().message.get_body(("plain",)).get_content()


# ------------------------------------------------------------------------------------ send-test


def test_send_test_prints_the_server_answer(desk: Path, smtp: SmtpServer, tmp_path: Path) -> None:
    result = invoke(desk, "--as", "root", "mailbox", "send-test", "Desk", "--to", "me@example.org")
    assert result.exit_code == 0, result.stderr
    assert "The server answered: 250 2.0.0 Ok: queued as" in result.stdout
    got = smtp.received()
    assert got.rcpt_tos == ["me@example.org"] and "Test email" in got.message["Subject"]
    assert outbound_log(tmp_path / "tickets.db")[-1]["status"] == "sent"


def test_send_test_failures_have_clear_exit_codes(
    desk: Path, smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTEGRATOR_SECRET_DESK_OUTGOING_SMTP_PASSWORD", "not-it")
    result = invoke(desk, "--as", "root", "mailbox", "send-test", "Desk", "--to", "me@example.org")
    assert result.exit_code == 4 and "refused the password" in result.stderr and "not-it" not in result.stderr
    monkeypatch.setenv("INTEGRATOR_SECRET_DESK_OUTGOING_SMTP_PASSWORD", SMTP_PASSWORD)
    smtp.stop()
    result = invoke(desk, "--as", "root", "mailbox", "send-test", "Desk", "--to", "me@example.org")
    assert result.exit_code == 1 and "refused the connection" in result.stderr
    assert [r["status"] for r in outbound_log(tmp_path / "tickets.db")] == ["failed", "failed"]


def test_send_test_uses_the_outgoing_defaults_mailbox(
    tmp_path: Path, smtp: SmtpServer, ca: trustme.CA, env: None
) -> None:
    quiet = '\n[[mailboxes]]\nname = "Quiet"\naddress = "quiet@example.com"\nconnection = "folder"\npath = "quiet"\n'
    cfg = desk_config(tmp_path, smtp, ca, top='[outgoing]\nmailbox = "Desk"\n', tail=quiet)
    result = invoke(cfg, "mailbox", "send-test", "Quiet", "--to", "me@example.org")
    assert result.exit_code == 0, result.stderr
    assert "using the outgoing defaults mailbox Desk" in result.stdout
    assert smtp.received().mail_from == "desk@example.com"


def test_smtp_password_falls_back_to_the_credential_password(
    tmp_path: Path, smtp: SmtpServer, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An IMAP mailbox whose SMTP login is the IMAP login uses the IMAP password when no smtp_password is stored."""
    ca.cert_pem.write_to_path(str(tmp_path / "smtp-ca.pem"))
    cfg = tmp_path / "integrator.toml"
    cfg.write_text(
        'instance = "test"\ndatabase = "tickets.db"\n[[mailboxes]]\nname = "Support"\naddress = "support@example.com"\n'
        'connection = "imap"\n[mailboxes.outgoing]\nmethod = "smtp"\nhost = "127.0.0.1"\n'
        f'port = {smtp.port}\nusername = "{SMTP_USER}"\nca_file = "smtp-ca.pem"\n'
        f'[[mailboxes.credentials]]\nname = "default"\nhost = "127.0.0.1"\nusername = "{SMTP_USER}"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("INTEGRATOR_SECRET_SUPPORT_DEFAULT_PASSWORD", SMTP_PASSWORD)
    result = invoke(cfg, "mailbox", "send-test", "Support", "--to", "me@example.org")
    assert result.exit_code == 0, result.stderr
    assert smtp.received().user == SMTP_USER
