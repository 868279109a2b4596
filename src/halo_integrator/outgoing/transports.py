"""Sending a composed email: SMTP, Microsoft Graph ``sendMail`` and the Gmail API, behind one interface.

Every transport has ``send(message, *, envelope_from=..., recipients=[...]) -> str`` and returns the
server's answer for the outbound log (``"250 2.0.0 Ok: queued as ABC"``, ``"202 Accepted"``). It raises

* :class:`SendError` (an :class:`~halo_integrator.errors.OutgoingError`) when the email was not sent;
  ``.temporary`` says whether sending it again later may work (SMTP 4xx, HTTP 429/5xx, refused connection,
  timeout) or not (SMTP 5xx rejection, HTTP 400, untrusted certificate). ``.retry_after`` carries the
  server's ``Retry-After`` in seconds when it sent one.
* :class:`~halo_integrator.errors.SecretError` when the server refused our credentials (wrong password,
  revoked token, missing permission): fix the credential before trying again.

Build one with :func:`make_transport`. Secrets come only through the ``secrets(kind)`` callable
(``"smtp_password"``, ``"access_token"``, ``"client_secret"``, ``"service_account_json"``) and never
appear in an error message. Certificates are always verified unless the mailbox sets
``tls_verify = false`` (logged as a warning on every connection).

Graph and Gmail take the recipients from the message headers, not from an envelope, so recipients that the
headers do not name are added as Bcc to a copy of the message before it is uploaded.
"""

from __future__ import annotations

import base64
import copy
import email.generator
import io
import json
import logging
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import quote

from halo_integrator.connectors.tls import NAME_MISMATCH_FIX, client_context, is_name_mismatch
from halo_integrator.errors import ConnectError, OutgoingError, SecretError
from halo_integrator.outgoing.tokens import (
    GMAIL_FULL_SCOPE,
    GMAIL_SEND_SCOPE,
    GRAPH_SCOPE,
    OUTLOOK_SCOPE,
    GoogleServiceAccount,
    MsalClientCredentials,
    StaticToken,
    TokenProvider,
    http_session,
)

if TYPE_CHECKING:
    import requests

    from halo_integrator.config import Credential, Mailbox
    from halo_integrator.connectors.base import SecretLookup

log = logging.getLogger(__name__)


GRAPH_ROOT = "https://graph.microsoft.com"
GMAIL_ROOT = "https://gmail.googleapis.com"
DEFAULT_PORTS = {"ssl": 465, "starttls": 587, "none": 25}


class SendError(OutgoingError):
    """An email was not sent. ``temporary``: a later retry may succeed."""

    def __init__(self, message: str, *, temporary: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.retry_after = retry_after


@runtime_checkable
class Transport(Protocol):
    def send(self, message: EmailMessage, *, envelope_from: str, recipients: list[str]) -> str:
        """Send ``message``; return the server's answer. Raises SendError or SecretError."""
        ...


def to_bytes(message: EmailMessage, *, utf8: bool = False) -> bytes:
    """The message as RFC 5322 bytes with CRLF line ends (``utf8``: SMTPUTF8 headers left unencoded)."""
    policy: Any = message.policy
    policy = policy.clone(linesep="\r\n", utf8=True) if utf8 else policy.clone(linesep="\r\n")
    out = io.BytesIO()
    email.generator.BytesGenerator(out, policy=policy).flatten(message, linesep="\r\n")
    return out.getvalue()


def _with_all_recipients(message: EmailMessage, recipients: list[str]) -> EmailMessage:
    """For header-driven APIs: a copy with Bcc naming every envelope recipient the headers leave out."""
    named = {
        addr.lower()
        for _, addr in getaddresses([str(v) for h in ("To", "Cc", "Bcc") for v in message.get_all(h, [])])
    }
    missing = [r for r in recipients if r.lower() not in named]
    if not missing:
        return message
    msg = copy.deepcopy(message)
    existing = [str(v) for v in msg.get_all("Bcc", [])]
    del msg["Bcc"]
    msg["Bcc"] = ", ".join([*existing, *missing])
    return msg


# ------------------------------------------------------------------------------------------------ SMTP


class SmtpTransport:
    """SMTP submission with ``security`` ssl (implicit TLS, 465), starttls (587) or none (25).

    Authentication: ``auth="password"`` logs in with ``username`` and ``secrets("smtp_password")``
    (smtplib picks PLAIN or LOGIN); ``auth="oauth2"`` uses SASL XOAUTH2 with a token from ``tokens``. No
    ``username`` means no AUTH (a relay that trusts the network).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int = 0,
        security: str = "starttls",
        username: str = "",
        auth: str = "password",
        secrets: SecretLookup | None = None,
        tokens: TokenProvider | None = None,
        ca_file: str = "",
        tls_verify: bool = True,
        timeout: float = 60.0,
        local_hostname: str | None = None,
    ) -> None:
        if not host:
            raise SendError("No SMTP host is set; set outgoing.host of the mailbox.", temporary=False)
        if security not in DEFAULT_PORTS:
            raise SendError(
                f"Unknown SMTP security {security!r}; use ssl, starttls or none.", temporary=False
            )
        self.host = host
        self.port = port or DEFAULT_PORTS[security]
        self.security = security
        self.username = username
        self.auth = auth
        self._secrets = secrets
        self._tokens = tokens
        self._ca_file = ca_file
        self._tls_verify = tls_verify
        self.timeout = timeout
        self._local_hostname = local_hostname

    @property
    def where(self) -> str:
        return f"SMTP server {self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"SmtpTransport({self.host}:{self.port}, {self.security}, user={self.username or '-'})"

    # -- connection

    def _connect(self) -> smtplib.SMTP:
        ctx = None
        if self.security != "none":
            ctx = client_context(ca_file=self._ca_file, verify=self._tls_verify, what=f"The {self.where}",
                                 server=self.where)
        smtp: smtplib.SMTP
        if self.security == "ssl":
            smtp = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=ctx, local_hostname=self._local_hostname
            )
        else:
            smtp = smtplib.SMTP(
                self.host, self.port, timeout=self.timeout, local_hostname=self._local_hostname
            )
        try:
            smtp.ehlo()
            if self.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise SendError(
                        f'The {self.where} does not offer STARTTLS; use security = "ssl" (port 465) if it '
                        "speaks implicit TLS, or ask its admin to enable STARTTLS.",
                        temporary=False,
                    )
                smtp.starttls(context=ctx)
                smtp.ehlo()
            self._login(smtp)
        except BaseException:
            _close(smtp)
            raise
        return smtp

    def _login(self, smtp: smtplib.SMTP) -> None:
        if not self.username:
            return
        if not smtp.has_extn("auth"):
            hint = ' before TLS; use security = "starttls" or "ssl"' if self.security == "none" else ""
            raise SendError(
                f"The {self.where} does not offer AUTH{hint}, but a username is configured.", temporary=False
            )
        try:
            if self.auth == "oauth2":
                token = (self._tokens or self._static_token()).token()
                blob = f"user={self.username}\x01auth=Bearer {token}\x01\x01"

                def xoauth2(challenge: bytes | None = None) -> str:
                    # after a failure the server sends a JSON error as a challenge; answer with an empty line
                    return blob if challenge is None else ""

                smtp.auth("XOAUTH2", xoauth2)
            else:
                if self._secrets is None:
                    raise SecretError(f"No secret lookup given for the SMTP password of {self.username}.")
                smtp.login(self.username, self._secrets("smtp_password"))
        except smtplib.SMTPAuthenticationError as exc:
            mech = "XOAUTH2 token" if self.auth == "oauth2" else "password"
            answer = _answer(exc.smtp_code, exc.smtp_error)
            raise SecretError(
                f"The {self.where} refused the {mech} for {self.username} ({answer}). Store the right "
                "one with `integrator credentials add`, and check that SMTP AUTH is enabled for this account."
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise SendError(
                f"The {self.where} offers no AUTH mechanism we can use ({self.auth}).", temporary=False
            ) from None

    def _static_token(self) -> TokenProvider:
        if self._secrets is None:
            raise SecretError(f"No token source for XOAUTH2 as {self.username}.")
        return StaticToken.from_secrets(self._secrets, "access_token")

    # -- sending

    def send(self, message: EmailMessage, *, envelope_from: str, recipients: list[str]) -> str:
        if not recipients:
            raise SendError("No recipients to send to.", temporary=False)
        msg = message
        if "Bcc" in message or "Resent-Bcc" in message:
            msg = copy.deepcopy(message)  # a shallow copy would share the header list with the caller's
            del msg["Bcc"]
            del msg["Resent-Bcc"]
        try:
            smtp = self._connect()
            try:
                return self._deliver(smtp, msg, envelope_from, recipients)
            finally:
                _close(smtp)
        except (SendError, SecretError):
            raise
        except ConnectError as exc:  # the token endpoint was unreachable
            raise SendError(str(exc), temporary=True) from None
        except ssl.SSLCertVerificationError as exc:
            if is_name_mismatch(exc):
                raise SendError(
                    f"The certificate of the {self.where} is not issued for {self.host!r} "
                    f"({exc.verify_message}). Set outgoing.host to {NAME_MISMATCH_FIX}.",
                    temporary=False,
                ) from None
            raise SendError(
                f"The certificate of the {self.where} is not trusted ({exc.verify_message}). If the "
                "server uses a private CA, set outgoing.ca_file to that CA's PEM file.",
                temporary=False,
            ) from None
        except ssl.SSLError as exc:
            raise SendError(
                f"TLS with the {self.where} failed ({exc.reason or exc}); check security and port "
                f"(ssl usually 465, starttls 587).",
                temporary=False,
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise _smtp_error(self.where, "the session", exc.smtp_code, exc.smtp_error) from None
        except smtplib.SMTPServerDisconnected as exc:
            raise SendError(
                f"The {self.where} closed the connection ({exc or 'no reason given'}).", temporary=True
            ) from None
        except socket.gaierror as exc:
            raise SendError(f"Cannot resolve {self.host} ({exc.strerror}).", temporary=True) from None
        except TimeoutError:
            raise SendError(
                f"The {self.where} did not answer within {self.timeout:g} s.", temporary=True
            ) from None
        except ConnectionRefusedError:
            raise SendError(
                f"The {self.where} refused the connection (is it running?).", temporary=True
            ) from None
        except OSError as exc:
            raise SendError(
                f"Cannot talk to the {self.where}: {exc.strerror or exc}.", temporary=True
            ) from None

    def _deliver(
        self, smtp: smtplib.SMTP, msg: EmailMessage, envelope_from: str, recipients: list[str]
    ) -> str:
        international = not (envelope_from.isascii() and all(r.isascii() for r in recipients))
        mail_options: list[str] = []
        if international:
            if not smtp.has_extn("smtputf8"):
                raise SendError(
                    f"The {self.where} does not accept non-ASCII addresses (no SMTPUTF8).", temporary=False
                )
            mail_options.append("SMTPUTF8")
        data = to_bytes(msg, utf8=international)
        if not data.isascii() and smtp.has_extn("8bitmime"):
            mail_options.append("BODY=8BITMIME")
        code, resp = smtp.mail(envelope_from, mail_options)
        if code != 250:
            raise _smtp_error(self.where, f"the sender {envelope_from}", code, resp)
        refused: dict[str, tuple[int, bytes]] = {}
        for rcpt in recipients:
            code, resp = smtp.rcpt(rcpt)
            if code not in (250, 251):
                refused[rcpt] = (code, resp)
        if len(refused) == len(recipients):
            smtp.rset()
            temporary = all(400 <= c < 500 for c, _ in refused.values())
            detail = "; ".join(f"{r}: {_answer(c, m)}" for r, (c, m) in refused.items())
            raise SendError(f"The {self.where} refused every recipient ({detail}).", temporary=temporary)
        code, resp = smtp.data(data)
        if code != 250:
            raise _smtp_error(self.where, "the message", code, resp)
        answer = _answer(code, resp)
        if refused:
            detail = "; ".join(f"{r}: {_answer(c, m)}" for r, (c, m) in refused.items())
            log.warning("The %s refused some recipients: %s", self.where, detail)
            answer += f" (refused: {detail})"
        return answer


def _answer(code: int, resp: bytes | str) -> str:
    text = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else str(resp)
    return f"{code} {' '.join(text.split())}".strip()


def _smtp_error(where: str, what: str, code: int, resp: bytes | str) -> SendError:
    temporary = 400 <= code < 500 or code < 0
    verdict = "try again later" if temporary else "rejected"
    return SendError(f"The {where} refused {what}: {_answer(code, resp)} ({verdict}).", temporary=temporary)


def _close(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


# ------------------------------------------------------------------------------------------------ HTTP APIs


class _HttpTransport:
    service = "the API"

    def __init__(self, *, tokens: TokenProvider, ca_file: str = "", timeout: float = 60.0) -> None:
        self.tokens = tokens
        self.timeout = timeout
        self._ca_file = ca_file
        self._session: requests.Session | None = None

    def _post(self, url: str, **kwargs: Any) -> requests.Response:
        import requests

        if self._session is None:
            self._session = http_session(ca_file=self._ca_file, timeout=self.timeout)
        try:
            token = self.tokens.token()
        except ConnectError as exc:
            raise SendError(str(exc), temporary=True) from None
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        try:
            return self._session.post(url, headers=headers, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise SendError(
                f"The certificate of {self.service} is not trusted ({_reason(exc)}). Behind a TLS-inspecting "
                "proxy, set ca_file of the credential to the proxy's CA.",
                temporary=False,
            ) from None
        except requests.exceptions.Timeout:
            raise SendError(
                f"{self.service} did not answer within {self.timeout:g} s.", temporary=True
            ) from None
        except requests.exceptions.RequestException as exc:
            raise SendError(f"Cannot reach {self.service}: {_reason(exc)}.", temporary=True) from None

    def _error(self, resp: requests.Response, *, permission_hint: str) -> Exception:
        code, message, reason = _api_error(resp)
        status = resp.status_code
        what = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        retry_after = _retry_after(resp.headers.get("Retry-After"))
        if status == 429 or status >= 500 or reason in _GOOGLE_RATE_REASONS:
            wait = f" (Retry-After {retry_after:g} s)" if retry_after is not None else ""
            return SendError(
                f"{self.service} asked us to wait: {what}{wait}.", temporary=True, retry_after=retry_after
            )
        if status == 401:
            return SecretError(
                f"{self.service} refused the access token ({what}). Check the credential with "
                "`integrator credentials test`."
            )
        if status == 403:
            return SecretError(f"{self.service} denied sending ({what}). {permission_hint}")
        return SendError(f"{self.service} rejected the message: {what}.", temporary=False)


_GOOGLE_RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "dailyLimitExceeded", "quotaExceeded"}


def _reason(exc: Exception) -> str:
    inner: BaseException = exc
    while inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    if isinstance(inner, ssl.SSLCertVerificationError):
        return str(inner.verify_message)
    reason = getattr(inner, "reason", None)
    return str(reason or inner)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from datetime import datetime
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(when.tzinfo)).total_seconds())


def _api_error(resp: requests.Response) -> tuple[str, str, str]:
    """(code, message, first reason) from a Graph or Google JSON error body; blanks when there is none."""
    try:
        data = resp.json()
    except ValueError:
        return "", " ".join(resp.text.split())[:200], ""
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        code = str(err.get("status") or err.get("code") or "")
        reasons = err.get("errors") or []
        reason = str(reasons[0].get("reason", "")) if reasons and isinstance(reasons[0], dict) else ""
        return code, str(err.get("message", "")), reason
    if isinstance(err, str):  # OAuth style {"error": "...", "error_description": "..."}
        return err, str(data.get("error_description", "")), ""
    return "", json.dumps(data)[:200], ""


class GraphTransport(_HttpTransport):
    """Microsoft Graph ``POST /users/{address}/sendMail`` with the MIME message, base64, as text/plain.

    Needs the ``Mail.Send`` application permission (scoped to the help-desk mailboxes with RBAC for
    Applications). Graph answers ``202 Accepted`` and saves a copy in Sent Items. ``endpoint`` is the Graph
    root (``https://graph.microsoft.com``; national clouds and tests use another).
    """

    service = "Microsoft Graph"

    def __init__(
        self,
        *,
        user: str,
        tokens: TokenProvider,
        endpoint: str = "",
        ca_file: str = "",
        timeout: float = 60.0,
    ) -> None:
        super().__init__(tokens=tokens, ca_file=ca_file, timeout=timeout)
        self.user = user
        self.url = f"{(endpoint or GRAPH_ROOT).rstrip('/')}/v1.0/users/{quote(user, safe='@')}/sendMail"

    def send(self, message: EmailMessage, *, envelope_from: str, recipients: list[str]) -> str:
        if not recipients:
            raise SendError("No recipients to send to.", temporary=False)
        mime = to_bytes(_with_all_recipients(message, recipients))
        resp = self._post(url=self.url, data=base64.b64encode(mime), headers={"Content-Type": "text/plain"})
        if resp.status_code == 202:
            request_id = resp.headers.get("request-id")
            return "202 Accepted" + (f" (request-id {request_id})" if request_id else "")
        raise self._error(
            resp,
            permission_hint=(
                f"Grant the app the Mail.Send application permission and allow it to send as {self.user} "
                "(RBAC for Applications)."
            ),
        )


class GmailTransport(_HttpTransport):
    """Gmail API ``POST /gmail/v1/users/me/messages/send`` with ``{"raw": base64url(MIME)}``.

    ``users/me`` is the user the token acts for (the service account's subject). Gmail answers 200 with the
    sent message's id. ``endpoint`` is the API root (``https://gmail.googleapis.com``).
    """

    service = "the Gmail API"

    def __init__(
        self, *, tokens: TokenProvider, endpoint: str = "", ca_file: str = "", timeout: float = 60.0
    ) -> None:
        super().__init__(tokens=tokens, ca_file=ca_file, timeout=timeout)
        self.url = f"{(endpoint or GMAIL_ROOT).rstrip('/')}/gmail/v1/users/me/messages/send"

    def send(self, message: EmailMessage, *, envelope_from: str, recipients: list[str]) -> str:
        if not recipients:
            raise SendError("No recipients to send to.", temporary=False)
        mime = to_bytes(_with_all_recipients(message, recipients))
        resp = self._post(url=self.url, json={"raw": base64.urlsafe_b64encode(mime).decode("ascii")})
        if resp.status_code == 200:
            try:
                sent_id = str(resp.json().get("id", ""))
            except ValueError:
                sent_id = ""
            return "200 OK" + (f" (id {sent_id})" if sent_id else "")
        raise self._error(
            resp,
            permission_hint=(
                "Grant the service account domain-wide delegation for the gmail.send scope, and check "
                "that the From address is the mailbox or one of its aliases."
            ),
        )


# ------------------------------------------------------------------------------------------------ factory


def make_transport(
    mailbox: Mailbox,
    credential: Credential | None,
    secrets: SecretLookup,
    *,
    tokens: TokenProvider | None = None,
    base_dir: Path | None = None,
) -> Transport:
    """The transport for ``mailbox.outgoing.method``.

    ``smtp`` takes its settings from ``mailbox.outgoing``; with ``auth = "oauth2"`` the XOAUTH2 token comes
    from ``tokens``, else from the credential (Entra ID app-only for a microsoft365 mailbox, the service
    account for a google one), else ``secrets("access_token")``. ``microsoft365`` and ``google`` use the
    credential (tenant, client id, endpoint, ca_file). Relative CA files are resolved against ``base_dir``
    (the config file's directory).
    """
    out = mailbox.outgoing

    def resolve(path: str) -> str:
        if not path or base_dir is None or Path(path).is_absolute():
            return path
        return str(base_dir / path)

    if out.method == "none":
        raise OutgoingError(
            f'Mailbox {mailbox.name!r} sends no email (outgoing.method = "none"); set outgoing.method to '
            "smtp, microsoft365 or google."
        )
    if out.method == "smtp":
        oauth_from_credential = out.auth == "oauth2" and tokens is None and credential is not None
        if oauth_from_credential and mailbox.connection == "microsoft365":
            assert credential is not None
            tokens = MsalClientCredentials.from_credential(
                credential, secrets, scopes=(OUTLOOK_SCOPE,), ca_file=resolve(credential.ca_file)
            )
        elif oauth_from_credential and mailbox.connection == "google":
            assert credential is not None
            tokens = GoogleServiceAccount(
                secrets=secrets,
                subject=mailbox.address,
                scopes=(GMAIL_FULL_SCOPE,),
                ca_file=resolve(credential.ca_file),
                timeout=credential.timeout,
            )
        return SmtpTransport(
            host=out.host,
            port=out.port,
            security=out.security,
            username=out.username,
            auth=out.auth,
            secrets=secrets,
            tokens=tokens,
            ca_file=resolve(out.ca_file),
            tls_verify=out.tls_verify,
            timeout=out.timeout,
        )
    if credential is None:
        raise OutgoingError(
            f"Mailbox {mailbox.name!r} sends through {out.method} but has no credential for this instance; "
            "add one with `integrator credentials add`."
        )
    ca_file = resolve(credential.ca_file)
    if out.method == "microsoft365":
        if not mailbox.address:
            raise OutgoingError(f"Mailbox {mailbox.name!r} has no address to send as.")
        return GraphTransport(
            user=mailbox.address,
            tokens=tokens
            or MsalClientCredentials.from_credential(
                credential, secrets, scopes=(GRAPH_SCOPE,), ca_file=ca_file
            ),
            endpoint=credential.endpoint,
            ca_file=ca_file,
            timeout=credential.timeout,
        )
    if out.method == "google":
        return GmailTransport(
            tokens=tokens
            or GoogleServiceAccount(
                secrets=secrets,
                subject=mailbox.address,
                scopes=(GMAIL_SEND_SCOPE,),
                ca_file=ca_file,
                timeout=credential.timeout,
            ),
            endpoint=credential.endpoint,
            ca_file=ca_file,
            timeout=credential.timeout,
        )
    raise OutgoingError(f"Unknown outgoing.method {out.method!r}.")  # pragma: no cover - config validates
