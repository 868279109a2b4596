"""Token providers and the Graph / Gmail transports against tests/fakecloud.py over HTTPS on 127.0.0.1."""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import json
import sys
from datetime import UTC, datetime, timedelta

import jwt
import pytest
import trustme

from fakecloud import GMAIL_SEND, FakeCloud
from halo_integrator.config import Credential, Mailbox, Outgoing
from halo_integrator.errors import ConnectError, SecretError
from halo_integrator.outgoing import (
    GmailTransport,
    GoogleServiceAccount,
    GraphTransport,
    MsalClientCredentials,
    SendError,
    compose,
    make_transport,
)
from smtpserver import SmtpServer


@pytest.fixture(autouse=True)
def _fresh(cloud: FakeCloud) -> None:
    cloud.requests.clear()
    cloud._canned.clear()


def secrets_for(cloud: FakeCloud, **override: str):
    values = {
        "client_secret": cloud.client_secret,
        "service_account_json": json.dumps(cloud.service_account_info()),
        **override,
    }

    def lookup(kind: str) -> str:
        if kind not in values:
            raise SecretError(f"no {kind} stored")
        return values[kind]

    return lookup


def m365_mailbox(cloud: FakeCloud, **credential: str) -> tuple[Mailbox, Credential]:
    cred = Credential(
        name="prod",
        tenant_id=cloud.tenant,
        client_id=cloud.client_id,
        authority=cloud.authority,
        endpoint=cloud.url,
        ca_file=cloud.ca_file,
        timeout=10.0,
        **credential,  # type: ignore[arg-type]
    )
    mb = Mailbox(
        name="Support",
        address="support@contoso.test",
        connection="microsoft365",
        outgoing=Outgoing(method="microsoft365"),
        credentials=(cred,),
    )
    return mb, cred


def google_mailbox(cloud: FakeCloud) -> tuple[Mailbox, Credential]:
    cred = Credential(name="prod", endpoint=cloud.url, ca_file=cloud.ca_file, timeout=10.0)
    mb = Mailbox(
        name="Help",
        address="help@example.org",
        connection="google",
        outgoing=Outgoing(method="google"),
        credentials=(cred,),
    )
    return mb, cred


def mail_from(mb: Mailbox, **kwargs: object):
    args: dict[str, object] = {
        "to": ["ann@customer.test"],
        "subject": "Printer broken",
        "body": "We are on it.",
        "ticket_id": 42,
        **kwargs,
    }
    return compose(mb, **args)  # type: ignore[arg-type]


def send(transport, mail) -> str:
    return transport.send(mail.message, envelope_from="ignored@api", recipients=list(mail.recipients))


# ------------------------------------------------------------------------------------------ Entra ID / msal


def test_msal_client_credentials_token_request(cloud: FakeCloud) -> None:
    _, cred = m365_mailbox(cloud)
    tokens = MsalClientCredentials.from_credential(cred, secrets_for(cloud))
    assert tokens.expires_at() is None
    first = tokens.token()
    assert cloud.issued[first] == "microsoft"
    token_calls = cloud.requests_to("/oauth2/v2.0/token")
    assert len(token_calls) == 1
    form = token_calls[0].form()
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "https://graph.microsoft.com/.default"
    assert form["client_id"] == cloud.client_id
    assert form["client_secret"] == cloud.client_secret
    assert token_calls[0].headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert cloud.requests_to(
        "/v2.0/.well-known/openid-configuration"
    )  # tenant discovery, no instance discovery
    expires = tokens.expires_at()
    assert expires is not None
    assert timedelta(minutes=55) < expires - datetime.now(UTC) <= timedelta(seconds=3600)

    assert tokens.token() == first  # cached: no second token request
    assert len(cloud.requests_to("/oauth2/v2.0/token")) == 1


def test_msal_wrong_secret_is_a_secret_error(cloud: FakeCloud) -> None:
    _, cred = m365_mailbox(cloud)
    tokens = MsalClientCredentials.from_credential(cred, secrets_for(cloud, client_secret="not-the-secret"))
    with pytest.raises(SecretError) as info:
        tokens.token()
    message = str(info.value)
    assert "invalid_client" in message and "AADSTS7000215" in message and "secret is wrong" in message
    assert "not-the-secret" not in message


def test_msal_unknown_tenant(cloud: FakeCloud) -> None:
    _, cred = m365_mailbox(cloud)
    cred = dataclasses.replace(cred, authority=f"{cloud.url}/no-such-tenant")
    with pytest.raises(SecretError, match="tenant_id"):
        MsalClientCredentials.from_credential(cred, secrets_for(cloud)).token()


def test_msal_token_endpoint_outage_is_a_connect_error(cloud: FakeCloud) -> None:
    _, cred = m365_mailbox(cloud)
    tokens = MsalClientCredentials.from_credential(cred, secrets_for(cloud))
    cloud.fail("/oauth2/v2.0/token", 503, {"error": "temporarily_unavailable"})
    with pytest.raises(ConnectError):
        tokens.token()


def test_msal_needs_the_test_ca(cloud: FakeCloud) -> None:
    # ca_file is honoured even though $REQUESTS_CA_BUNDLE may name the system bundle; without it: refused
    _, cred = m365_mailbox(cloud)
    tokens = MsalClientCredentials.from_credential(dataclasses.replace(cred, ca_file=""), secrets_for(cloud))
    with pytest.raises(ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        tokens.token()


# ------------------------------------------------------------------------------------------ Graph sendMail


def test_graph_send_mail(cloud: FakeCloud) -> None:
    mb, cred = m365_mailbox(cloud)
    transport = make_transport(mb, cred, secrets_for(cloud))
    assert isinstance(transport, GraphTransport)
    mail = mail_from(mb, bcc=["audit@contoso.test"], auto=True)
    answer = send(transport, mail)
    assert answer.startswith("202 Accepted (request-id ")

    (call,) = cloud.requests_to("/sendMail")
    assert call.path == "/v1.0/users/support@contoso.test/sendMail"
    assert call.headers["content-type"] == "text/plain"
    assert call.headers["authorization"].startswith("Bearer ")
    assert cloud.issued[call.headers["authorization"][7:]] == "microsoft"
    mime = base64.b64decode(call.body, validate=True)
    msg = email.message_from_bytes(mime, policy=email.policy.default)
    assert msg["Subject"] == "[#42] Printer broken"
    assert msg["Message-ID"] == f"<{mail.message_id}>"
    assert msg["Bcc"] == "audit@contoso.test"  # Graph takes recipients from the MIME headers
    assert msg["Auto-Submitted"] == "auto-replied"
    assert b"\r\n" in mime


def test_graph_envelope_recipients_missing_from_headers_become_bcc(cloud: FakeCloud) -> None:
    mb, cred = m365_mailbox(cloud)
    transport = make_transport(mb, cred, secrets_for(cloud))
    mail = mail_from(mb)
    transport.send(mail.message, envelope_from=mb.address, recipients=["ann@customer.test", "extra@x.test"])
    (call,) = cloud.requests_to("/sendMail")
    msg = email.message_from_bytes(base64.b64decode(call.body), policy=email.policy.default)
    assert msg["Bcc"] == "extra@x.test"
    assert "Bcc" not in mail.message  # the caller's message is untouched


def test_graph_429_is_temporary_with_retry_after(cloud: FakeCloud) -> None:
    mb, cred = m365_mailbox(cloud)
    transport = make_transport(mb, cred, secrets_for(cloud))
    cloud.fail(
        "/sendMail",
        429,
        {"error": {"code": "TooManyRequests", "message": "Please retry again later."}},
        {"Retry-After": "17"},
    )
    with pytest.raises(SendError) as info:
        send(transport, mail_from(mb))
    assert info.value.temporary is True
    assert info.value.retry_after == 17
    assert "TooManyRequests" in str(info.value)
    assert send(transport, mail_from(mb)).startswith("202")  # the next attempt goes through


def test_graph_503_is_temporary(cloud: FakeCloud) -> None:
    mb, cred = m365_mailbox(cloud)
    transport = make_transport(mb, cred, secrets_for(cloud))
    cloud.fail("/sendMail", 503, {"error": {"code": "ServiceUnavailable", "message": "Service unavailable"}})
    with pytest.raises(SendError) as info:
        send(transport, mail_from(mb))
    assert info.value.temporary is True


def test_graph_401_and_403_are_secret_errors(cloud: FakeCloud) -> None:
    mb, cred = m365_mailbox(cloud)
    transport = make_transport(mb, cred, secrets_for(cloud))
    cloud.fail(
        "/sendMail",
        401,
        {"error": {"code": "InvalidAuthenticationToken", "message": "Lifetime validation failed"}},
    )
    with pytest.raises(SecretError, match="InvalidAuthenticationToken"):
        send(transport, mail_from(mb))
    cloud.fail(
        "/sendMail",
        403,
        {"error": {"code": "ErrorAccessDenied", "message": "Access to OData is disabled."}},
    )
    with pytest.raises(SecretError, match=r"ErrorAccessDenied.*Mail\.Send"):
        send(transport, mail_from(mb))


def test_graph_400_is_permanent(cloud: FakeCloud) -> None:
    mb, cred = m365_mailbox(cloud)
    transport = make_transport(mb, cred, secrets_for(cloud))
    cloud.fail(
        "/sendMail",
        400,
        {
            "error": {
                "code": "ErrorMimeContentInvalidBase64String",
                "message": "Invalid base64 string for MIME.",
            }
        },
    )
    with pytest.raises(SendError) as info:
        send(transport, mail_from(mb))
    assert info.value.temporary is False
    assert "ErrorMimeContentInvalidBase64String" in str(info.value)


def test_graph_wrong_client_secret_surfaces_as_secret_error(cloud: FakeCloud) -> None:
    mb, cred = m365_mailbox(cloud)
    transport = make_transport(mb, cred, secrets_for(cloud, client_secret="expired"))
    with pytest.raises(SecretError, match="AADSTS7000215"):
        send(transport, mail_from(mb))
    assert not cloud.requests_to("/sendMail")


def test_graph_unreachable_is_temporary(cloud: FakeCloud) -> None:
    mb, cred = m365_mailbox(cloud)
    from helpers import free_port

    dead = f"https://127.0.0.1:{free_port()}"
    transport = GraphTransport(
        user=mb.address,
        tokens=MsalClientCredentials.from_credential(cred, secrets_for(cloud)),
        endpoint=dead,
        ca_file=cloud.ca_file,
        timeout=5,
    )
    with pytest.raises(SendError) as info:
        send(transport, mail_from(mb))
    assert info.value.temporary is True
    assert "Cannot reach Microsoft Graph" in str(info.value)


def test_graph_ca_file_beats_requests_ca_bundle(
    cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # requests lets $REQUESTS_CA_BUNDLE override a session's verify; the configured ca_file must still win
    other = tmp_path_factory.mktemp("other") / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
    mb, cred = m365_mailbox(cloud)
    assert send(make_transport(mb, cred, secrets_for(cloud)), mail_from(mb)).startswith("202")


def test_smtp_xoauth2_with_an_entra_app_token(cloud: FakeCloud, ca: trustme.CA) -> None:
    # SMTP AUTH XOAUTH2 as Exchange Online does it app-only: a token for outlook.office365.com/.default
    mb, cred = m365_mailbox(cloud)
    with SmtpServer(ca, mode="starttls") as server:
        server.token_ok = lambda user, token: user == mb.address and cloud.issued.get(token) == "microsoft"
        mb = dataclasses.replace(
            mb,
            outgoing=Outgoing(
                method="smtp",
                host=server.host,
                port=server.port,
                username=mb.address,
                auth="oauth2",
                ca_file=cloud.ca_file,
                timeout=5.0,
            ),
        )
        mail = mail_from(mb)
        transport = make_transport(mb, cred, secrets_for(cloud))
        assert transport.send(mail.message, envelope_from=mb.address, recipients=list(mail.recipients))
        got = server.received()
    assert (got.user, got.mechanism) == (mb.address, "XOAUTH2")
    (call,) = cloud.requests_to("/oauth2/v2.0/token")
    assert call.form()["scope"] == "https://outlook.office365.com/.default"


# ------------------------------------------------------------------------------------------ Google / Gmail


def test_google_service_account_token(cloud: FakeCloud) -> None:
    tokens = GoogleServiceAccount(
        secrets=secrets_for(cloud), subject="help@example.org", scopes=[GMAIL_SEND], ca_file=cloud.ca_file
    )
    token = tokens.token()
    assert cloud.issued[token] == "google"
    (call,) = cloud.requests_to("/token")
    form = call.form()
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    claims = jwt.decode(form["assertion"], options={"verify_signature": False})
    assert claims["iss"] == cloud.sa_email
    assert claims["sub"] == "help@example.org"
    assert claims["scope"] == GMAIL_SEND
    expires = tokens.expires_at()
    assert expires is not None and expires.tzinfo is not None
    assert tokens.token() == token
    assert len(cloud.requests_to("/token")) == 1


def test_google_scope_not_delegated(cloud: FakeCloud) -> None:
    tokens = GoogleServiceAccount(
        secrets=secrets_for(cloud),
        subject="help@example.org",
        scopes=["https://www.googleapis.com/auth/gmail.modify"],
        ca_file=cloud.ca_file,
    )
    with pytest.raises(SecretError, match=r"unauthorized_client.*domain-wide delegation"):
        tokens.token()


def test_google_bad_key_json(cloud: FakeCloud) -> None:
    tokens = GoogleServiceAccount(
        secrets=secrets_for(cloud, service_account_json="{not json"), subject="help@example.org"
    )
    with pytest.raises(SecretError, match="not a usable JSON key"):
        tokens.token()


def test_gmail_send(cloud: FakeCloud) -> None:
    mb, cred = google_mailbox(cloud)
    transport = make_transport(mb, cred, secrets_for(cloud))
    assert isinstance(transport, GmailTransport)
    mail = mail_from(mb, answered_message_id="<x@customer.test>")
    answer = send(transport, mail)
    assert answer.startswith("200 OK (id ")

    (call,) = cloud.requests_to("/messages/send")
    assert call.path == "/gmail/v1/users/me/messages/send"
    assert call.headers["content-type"] == "application/json"
    assert cloud.issued[call.headers["authorization"][7:]] == "google"
    raw = call.json()["raw"]
    assert "+" not in raw and "/" not in raw  # base64url
    msg = email.message_from_bytes(base64.urlsafe_b64decode(raw), policy=email.policy.default)
    assert msg["From"] == "Help <help@example.org>"
    assert msg["In-Reply-To"] == "<x@customer.test>"
    assert msg["Message-ID"].endswith("@example.org>")
    (token_call,) = cloud.requests_to("/token")
    assert (
        jwt.decode(token_call.form()["assertion"], options={"verify_signature": False})["scope"] == GMAIL_SEND
    )


@pytest.mark.parametrize(
    ("status", "reason", "kind", "temporary"),
    [
        (429, "rateLimitExceeded", SendError, True),
        (403, "userRateLimitExceeded", SendError, True),
        (500, "backendError", SendError, True),
        (400, "invalidArgument", SendError, False),
        (401, "authError", SecretError, None),
        (403, "insufficientPermissions", SecretError, None),
    ],
)
def test_gmail_errors(cloud: FakeCloud, status: int, reason: str, kind: type, temporary: bool | None) -> None:
    mb, cred = google_mailbox(cloud)
    transport = make_transport(mb, cred, secrets_for(cloud))
    cloud.fail(
        "/messages/send",
        status,
        {
            "error": {
                "code": status,
                "message": f"canned {reason}",
                "errors": [{"message": f"canned {reason}", "domain": "global", "reason": reason}],
                "status": "X",
            }
        },
    )
    with pytest.raises(kind) as info:
        send(transport, mail_from(mb))
    if temporary is not None:
        assert info.value.temporary is temporary
    assert f"canned {reason}" in str(info.value)


def test_heavy_libraries_stay_unloaded_on_import() -> None:
    import subprocess

    code = (
        "import sys, halo_integrator.outgoing; "
        "print(sorted(m for m in ('msal', 'google.auth', 'requests') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
