"""Shared set-up for the IMAP and POP3 connector tests against the real Dovecot of tests/dovecot.py: numbered
test emails, seeding a folder, reading a folder back without changing it, and a connector for a Dovecot user."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from dovecot import Dovecot, User
from halo_integrator.config import Config, Credential, Incoming, Mailbox
from halo_integrator.connectors import make_connector
from halo_integrator.connectors.base import Connector, MemoryState


def message(n: int, size: int = 0) -> bytes:
    body = f"Body of message {n}.\r\n" + ("x" * 70 + "\r\n") * (size // 72)
    return (
        f"From: Customer {n} <c{n}@example.org>\r\nTo: support@example.com\r\nSubject: Help {n}\r\n"
        f"Message-ID: <m{n}@example.org>\r\nDate: Mon, 2 Sep 2024 10:00:00 +0000\r\n\r\n{body}"
    ).encode()


def seed(server: Dovecot, user: User, count: int, folder: str = "INBOX", size: int = 0) -> None:
    server.append(user, [message(n, size) for n in range(1, count + 1)], folder)


def fetched_in(server: Dovecot, user: User, folder: str, items: list[str]) -> dict[int, dict[bytes, Any]]:
    """FETCH ``items`` of every message in a folder, read-only (nothing is marked seen or moved)."""
    client = server.imap(user)
    try:
        client.select_folder(folder, readonly=True)
        uids = client.search(["ALL"])
        return dict(client.fetch(uids, items)) if uids else {}
    finally:
        client.logout()


def uids_in(server: Dovecot, user: User, folder: str) -> dict[int, dict[bytes, Any]]:
    return fetched_in(server, user, folder, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])


def subjects_in(server: Dovecot, user: User, folder: str) -> list[str]:
    return sorted(
        d[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().strip().removeprefix("Subject: ")
        for d in uids_in(server, user, folder).values()
    )


def connector(
    server: Dovecot,
    user: User,
    tmp_path: Path,
    *,
    security: str = "none",
    port: int | None = None,
    state: MemoryState | None = None,
    ca_file: str | None = None,
    password: str | None = None,
    timeout: float = 10.0,
    tls_verify: bool = True,
    protocol: str = "imap",
    host: str = "127.0.0.1",
    **incoming: Any,
) -> Connector:
    """An IMAP (or, with ``protocol="pop3"``, POP3) connector for a Dovecot user, with the server's CA."""
    if port is None:
        if protocol == "pop3":
            port = server.pop3s_port if security == "ssl" else server.pop3_port
        else:
            port = server.imaps_port if security == "ssl" else server.imap_port
    if ca_file is None:
        shutil.copy(server.ca, tmp_path / "server-ca.pem")
        ca_file = "server-ca.pem"  # relative to the config file
    cred = Credential(
        host=host,
        port=port,
        security=security,
        username=user.name,
        ca_file=ca_file,
        timeout=timeout,
        tls_verify=tls_verify,
    )
    mailbox = Mailbox(name="Support", connection=protocol, credentials=(cred,), incoming=Incoming(**incoming))
    cfg = Config(mailboxes=(mailbox,), path=tmp_path / "integrator.toml")
    secret = user.password if password is None else password

    def secrets(kind: str) -> str:
        assert kind == "password"
        return secret

    return make_connector(mailbox, cred, config=cfg, secrets=secrets, state=state or MemoryState())
