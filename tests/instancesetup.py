"""Shared set-up for the instance and credential tests: a config with one IMAP mailbox and several credentials
on the test Dovecot, passwords in the (in-memory) keyring, and seeding and counting an inbox."""

from __future__ import annotations

import textwrap
from pathlib import Path

from dovecot import Dovecot, User
from halo_integrator.config import SecretsSettings
from halo_integrator.keystore import Keystore
from helpers import email_bytes


def imap_config(
    directory: Path,
    server: Dovecot,
    credentials: dict[str, tuple[str, str]],
    *,
    instance: str = "prod",
    mailbox: str = "Support",
    extra: str = "",
) -> Path:
    """A config with one IMAP mailbox on the test Dovecot (plain IMAP on loopback); ``credentials`` maps
    a credential name to (server user, instance)."""
    creds = "".join(
        textwrap.dedent(
            f"""
            [[mailboxes.credentials]]
            name = "{name}"
            instance = "{inst}"
            host = "127.0.0.1"
            port = {server.imap_port}
            security = "none"
            username = "{user}"
            timeout = 10
            """
        )
        for name, (user, inst) in credentials.items()
    )
    path = directory / "integrator.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            instance = "{instance}"
            database = "tickets.db"
            {extra}
            [[mailboxes]]
            name = "{mailbox}"
            address = "support@example.com"
            connection = "imap"
            """
        )
        + creds,
        encoding="utf-8",
    )
    return path


def store_password(mailbox: str, credential: str, password: str) -> None:
    Keystore(SecretsSettings()).set(mailbox, credential, "password", password)


def seed_subjects(server: Dovecot, user: User, *subjects: str) -> None:
    server.append(user, [email_bytes(s, message_id=f"{s.replace(' ', '-')}@example.org") for s in subjects])


def inbox_count(server: Dovecot, user: User) -> int:
    client = server.imap(user)
    try:
        return int(client.select_folder("INBOX", readonly=True)[b"EXISTS"])
    finally:
        client.logout()


class PortOnly:
    """Only a port number, for configs that are never connected to."""

    imap_port = 1143
