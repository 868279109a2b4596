"""Shared set-up for the outbound tests: a config whose mailbox sends through the real aiosmtpd of
tests/smtpserver.py (STARTTLS + AUTH on 127.0.0.1), recent customer emails, and read-only store queries."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import trustme

from helpers import email_bytes
from smtpserver import SmtpServer

SMTP_USER = "desk-smtp"
SMTP_PASSWORD = "smtp-secret-1"
# the folder mailbox "Desk" has no credentials, so its SMTP password lives under credential "outgoing"
SMTP_ENV = {"INTEGRATOR_SECRET_DESK_OUTGOING_SMTP_PASSWORD": SMTP_PASSWORD}


def recent(minutes: int = 5) -> str:
    return format_datetime(datetime.now(UTC) - timedelta(minutes=minutes))


def customer_email(
    subject: str,
    *,
    message_id: str,
    sender: str = "Ann Customer <ann@customer.test>",
    date: str | None = None,
    **kw: Any,
) -> bytes:
    return email_bytes(subject, sender=sender, message_id=message_id, date=date or recent(), **kw)


def outgoing_toml(server: SmtpServer, *, ca_file: str = "smtp-ca.pem", extra: str = "") -> str:
    return f"""
[mailboxes.outgoing]
method = "smtp"
host = "127.0.0.1"
port = {server.port}
security = "starttls"
username = "{SMTP_USER}"
ca_file = "{ca_file}"
timeout = 10
{extra}
"""


def desk_config(
    tmp_path: Path,
    server: SmtpServer,
    ca: trustme.CA,
    *,
    incoming: str = "",
    outgoing: str = "",
    top: str = "",
    tail: str = "",
) -> Path:
    """One folder mailbox "Desk" <desk@example.com> over tmp_path/mail, sending through ``server``."""
    (tmp_path / "mail").mkdir(exist_ok=True)
    ca.cert_pem.write_to_path(str(tmp_path / "smtp-ca.pem"))
    path = tmp_path / "integrator.toml"
    path.write_text(
        f'instance = "test"\ndatabase = "tickets.db"\n{top}\n'
        '[[mailboxes]]\nname = "Desk"\naddress = "desk@example.com"\nconnection = "folder"\npath = "mail"\n'
        f"\n[mailboxes.incoming]\n{incoming}\n" + outgoing_toml(server, extra=outgoing) + tail,
        encoding="utf-8",
    )
    return path


def drop(tmp_path: Path, name: str, data: bytes) -> None:
    (tmp_path / "mail" / name).write_bytes(data)


def rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql, params)]
    finally:
        con.close()


def outbound_log(db: Path) -> list[dict[str, Any]]:
    return rows(db, "SELECT * FROM outbound_log ORDER BY id")


def nothing_more(server: SmtpServer) -> bool:
    return server.messages.empty()


def copy_ca(ca_path: Path, target: Path) -> None:
    shutil.copy(ca_path, target)
