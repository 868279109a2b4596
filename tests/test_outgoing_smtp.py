"""SMTP transport against a real aiosmtpd server on 127.0.0.1 (tests/smtpserver.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from halo_integrator.config import Credential, Mailbox, Outgoing
from halo_integrator.errors import ConfigError, OutgoingError, SecretError
from halo_integrator.mail.model import Address
from halo_integrator.outgoing import (
    OutgoingAttachment,
    SendError,
    SmtpTransport,
    StaticToken,
    compose,
    make_transport,
)
from smtpserver import SmtpServer

# aiosmtpd warns (in its own thread) when AUTH is allowed without STARTTLS; on SMTPS that is intended
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def starttls_server(ca: trustme.CA) -> Iterator[SmtpServer]:
    with SmtpServer(ca, mode="starttls") as server:
        yield server


def secrets_with(**values: str):
    def lookup(kind: str) -> str:
        if kind not in values:
            raise SecretError(f"no {kind} stored")
        return values[kind]

    return lookup


def mailbox(server: SmtpServer, ca_file: str, **outgoing: object) -> Mailbox:
    settings = {
        "method": "smtp",
        "host": server.host,
        "port": server.port,
        "security": server.mode if server.mode != "plain" else "none",
        "username": "agent",
        "ca_file": ca_file,
        "timeout": 5.0,
        **outgoing,
    }
    return Mailbox(
        name="Support",
        address="support@example.com",
        connection="imap",
        outgoing=Outgoing(**settings),  # type: ignore[arg-type]
    )


def ticket_mail(mb: Mailbox, **kwargs: object):
    args: dict[str, object] = {
        "to": [Address("Ann Customer", "ann@customer.test")],
        "cc": ["boss@customer.test"],
        "subject": "Re: Printer broken",
        "body": "Hello Ann,\n\nWe are on it.\nA technician comes at 3 pm.\n\nRegards",
        "ticket_id": 123,
        "signature": "Service Desk\n+1 555 0100",
        "answered_message_id": "<orig-2@customer.test>",
        "answered_references": ["<orig-1@customer.test>"],
        "attachments": [OutgoingAttachment("report.pdf", "application/pdf", b"%PDF-1.4 fake\x00\xff")],
        **kwargs,
    }
    return compose(mb, **args)  # type: ignore[arg-type]


def send(mb: Mailbox, mail, secrets=None) -> str:
    transport = make_transport(mb, None, secrets or secrets_with(smtp_password="agentpw"))
    return transport.send(mail.message, envelope_from=mb.address, recipients=list(mail.recipients))


def test_starttls_auth_delivers_the_composed_email(starttls_server: SmtpServer, ca_file: str) -> None:
    mb = mailbox(starttls_server, ca_file)
    mail = ticket_mail(mb, auto=True, bcc=["audit@example.com"])
    answer = send(mb, mail)
    assert answer.startswith("250 2.0.0 Ok: queued as Q")

    got = starttls_server.received()
    assert got.user == "agent"
    assert got.mechanism == "PLAIN"  # smtplib prefers PLAIN over LOGIN
    assert got.mail_from == "support@example.com"
    assert got.rcpt_tos == ["ann@customer.test", "boss@customer.test", "audit@example.com"]
    msg = got.message
    assert "Bcc" not in msg  # the envelope carries Bcc, the headers must not
    assert msg["Subject"] == "[#123] Re: Printer broken"
    assert msg["From"] == "Support <support@example.com>"
    assert msg["To"] == "Ann Customer <ann@customer.test>"
    assert msg["Cc"] == "boss@customer.test"
    assert msg["Message-ID"] == f"<{mail.message_id}>"
    assert mail.message_id.endswith("@example.com")
    assert msg["In-Reply-To"] == "<orig-2@customer.test>"
    assert msg["References"] == "<orig-1@customer.test> <orig-2@customer.test>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["Date"]

    assert msg.get_content_type() == "multipart/mixed"
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    text = plain.get_content().replace("\r\n", "\n")
    assert "A technician comes at 3 pm." in text
    assert text.rstrip().endswith("-- \nService Desk\n+1 555 0100")
    page = html.get_content().replace("\r\n", "\n")
    assert "<p>Hello Ann,</p>" in page
    assert "We are on it.<br>\nA technician comes at 3 pm." in page
    attachments = list(msg.iter_attachments())
    assert [(a.get_filename(), a.get_content_type(), a.get_content()) for a in attachments] == [
        ("report.pdf", "application/pdf", b"%PDF-1.4 fake\x00\xff")
    ]


def test_auth_login_and_non_ascii_content(ca: trustme.CA, ca_file: str) -> None:
    # a server that offers only AUTH LOGIN (older Exchange does); smtplib must fall back to it
    with SmtpServer(ca, mode="starttls", mechanisms_off=("PLAIN",)) as server:
        mb = mailbox(server, ca_file)
        mail = ticket_mail(mb, subject="Drucker kaputt – Grüße", body="Grüße aus Köln ✓", attachments=[])
        transport = make_transport(mb, None, secrets_with(smtp_password="agentpw"))
        assert isinstance(transport, SmtpTransport)
        transport.send(mail.message, envelope_from=mb.address, recipients=["ann@customer.test"])
        got = server.received()
    assert (got.user, got.mechanism) == ("agent", "LOGIN")
    msg = got.message
    assert msg["Subject"] == "[#123] Drucker kaputt – Grüße"
    body = msg.get_body(("plain",))
    assert body is not None
    assert body["Content-Transfer-Encoding"] == "quoted-printable"
    assert "Grüße aus Köln ✓" in body.get_content()
    assert got.data.isascii()  # nothing 8-bit on the wire


def test_implicit_tls(ca: trustme.CA, ca_file: str) -> None:
    with SmtpServer(ca, mode="ssl") as server:
        mb = mailbox(server, ca_file)
        mail = ticket_mail(mb)
        assert send(mb, mail).startswith("250 ")
        assert server.received().message["Message-ID"] == f"<{mail.message_id}>"


def test_plain_relay_without_auth(ca: trustme.CA, ca_file: str) -> None:
    with SmtpServer(ca, mode="plain", auth_required=False) as server:
        mb = mailbox(server, ca_file, username="")
        send(mb, ticket_mail(mb))
        got = server.received()
        assert got.user is None


def test_wrong_password_is_a_secret_error(starttls_server: SmtpServer, ca_file: str) -> None:
    mb = mailbox(starttls_server, ca_file)
    with pytest.raises(SecretError) as info:
        send(mb, ticket_mail(mb), secrets_with(smtp_password="wrong-password"))
    message = str(info.value)
    assert "535" in message and "agent" in message and "integrator credentials add" in message
    assert "wrong-password" not in message
    assert starttls_server.messages.empty()


def test_xoauth2_with_a_token(ca: trustme.CA, ca_file: str) -> None:
    with SmtpServer(ca, mode="starttls", tokens={"support@example.com": "good-token"}) as server:
        mb = mailbox(server, ca_file, username="support@example.com", auth="oauth2")
        transport = make_transport(mb, None, secrets_with(), tokens=StaticToken("good-token"))
        mail = ticket_mail(mb)
        transport.send(mail.message, envelope_from=mb.address, recipients=list(mail.recipients))
        got = server.received()
        assert (got.user, got.mechanism) == ("support@example.com", "XOAUTH2")

        # without a provider the token comes from the keyring's "access_token"
        send(mb, ticket_mail(mb), secrets_with(access_token="good-token"))
        assert server.received().mechanism == "XOAUTH2"

        with pytest.raises(SecretError, match=r"refused the XOAUTH2 token for support@example.com \(535"):
            send(mb, ticket_mail(mb), secrets_with(access_token="expired-token"))


def test_server_down_is_temporary(ca: trustme.CA, ca_file: str) -> None:
    server = SmtpServer(ca, mode="starttls").start()
    mb = mailbox(server, ca_file)
    server.stop()
    with pytest.raises(SendError) as info:
        send(mb, ticket_mail(mb))
    assert info.value.temporary is True
    assert isinstance(info.value, OutgoingError)
    assert f"127.0.0.1:{server.port}" in str(info.value)

    server.start()  # back up: the same transport settings work again
    try:
        send(mb, ticket_mail(mb))
        server.received()
    finally:
        server.stop()


def test_untrusted_certificate(starttls_server: SmtpServer, ca_file: str) -> None:
    mb = mailbox(starttls_server, ca_file="")  # only the system CAs: the test CA is not among them
    with pytest.raises(SendError) as info:
        send(mb, ticket_mail(mb))
    assert info.value.temporary is False
    assert "not trusted" in str(info.value) and "ca_file" in str(info.value)


def test_certificate_for_another_name(starttls_server: SmtpServer, ca_file: str) -> None:
    """The CA is trusted, but the certificate names localhost and 127.0.0.1, not "127.1" (the same server)."""
    mb = mailbox(starttls_server, ca_file, host="127.1")
    with pytest.raises(SendError) as info:
        send(mb, ticket_mail(mb))
    assert info.value.temporary is False
    text = str(info.value)
    assert "not issued for '127.1'" in text and "Set outgoing.host to a name the certificate is issued for" in text
    assert "ca_file" not in text


def test_missing_ca_file_is_a_config_error(starttls_server: SmtpServer, tmp_path: Path) -> None:
    """The same check and message as the mailbox connectors (connectors/tls.py client_context)."""
    mb = mailbox(starttls_server, ca_file=str(tmp_path / "nowhere.pem"))
    with pytest.raises(ConfigError) as info:
        send(mb, ticket_mail(mb))
    assert "nowhere.pem does not exist" in str(info.value) and "SMTP server" in str(info.value)


def test_tls_verify_false_sends_with_a_warning(
    starttls_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    mb = mailbox(starttls_server, ca_file="", tls_verify=False)
    send(mb, ticket_mail(mb))
    starttls_server.received()
    assert "TLS certificate checks are OFF" in caplog.text


def test_wrong_security_mode_is_clear(starttls_server: SmtpServer, ca_file: str) -> None:
    mb = mailbox(starttls_server, ca_file, security="ssl")  # SMTPS against a STARTTLS port
    with pytest.raises(SendError) as info:
        send(mb, ticket_mail(mb))
    assert info.value.temporary is False
    assert "TLS with the SMTP server" in str(info.value) and "starttls 587" in str(info.value)


@pytest.mark.parametrize(
    ("where", "answer", "temporary"),
    [
        ("data", "554 5.7.1 Message rejected as spam", False),
        ("data", "451 4.3.0 Mail server temporarily rejected message", True),
        ("rcpt", "550 5.1.1 <ann@customer.test>: Recipient address rejected", False),
        ("rcpt", "452 4.2.2 Mailbox full", True),
    ],
)
def test_rejections(
    starttls_server: SmtpServer, ca_file: str, where: str, answer: str, temporary: bool
) -> None:
    if where == "data":
        starttls_server.data_reply = answer
    else:
        starttls_server.rcpt_reply["*"] = answer
    mb = mailbox(starttls_server, ca_file)
    mail = ticket_mail(mb)
    with pytest.raises(SendError) as info:
        send(mb, mail)
    assert info.value.temporary is temporary
    assert answer.split(maxsplit=1)[0] in str(info.value)


def test_some_recipients_refused_still_sends(starttls_server: SmtpServer, ca_file: str) -> None:
    starttls_server.rcpt_reply["boss@customer.test"] = "550 5.1.1 No such user"
    mb = mailbox(starttls_server, ca_file)
    answer = send(mb, ticket_mail(mb))
    assert answer.startswith("250 ") and "boss@customer.test: 550 5.1.1 No such user" in answer
    assert starttls_server.received().rcpt_tos == ["ann@customer.test"]


def test_make_transport_settings(tmp_path: Path) -> None:
    mb = Mailbox(
        name="Support",
        address="support@example.com",
        connection="imap",
        outgoing=Outgoing(method="smtp", host="smtp.example.com", security="ssl", ca_file="private-ca.pem"),
    )
    transport = make_transport(mb, None, secrets_with(), base_dir=tmp_path)
    assert isinstance(transport, SmtpTransport)
    assert transport.port == 465
    assert transport._ca_file == str(tmp_path / "private-ca.pem")
    none = dataclasses.replace(mb, outgoing=Outgoing(method="none"))
    with pytest.raises(OutgoingError, match=r"outgoing\.method"):
        make_transport(none, None, secrets_with())
    graph = dataclasses.replace(mb, outgoing=Outgoing(method="microsoft365"))
    with pytest.raises(OutgoingError, match="no credential"):
        make_transport(graph, None, secrets_with())
    assert make_transport(graph, Credential(tenant_id="t", client_id="c"), secrets_with()) is not None
