"""Turning socket and TLS failures of the mail connectors into messages that say what to do."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from halo_integrator.connectors.base import DEFAULT_PORTS, Check, Connector, TestReport
from halo_integrator.connectors.tls import NAME_MISMATCH_FIX, is_name_mismatch
from halo_integrator.errors import ConfigError, ConnectError, IntegratorError, SecretError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from halo_integrator.config import Credential


@dataclass(frozen=True, kw_only=True)
class NetProblem:
    """What went wrong while connecting: which check failed (``connect`` or ``tls``), why, and the fix."""

    check: str
    detail: str
    fix: str

    @property
    def message(self) -> str:
        return f"{self.detail} {self.fix}".strip()


class ConnectFailed(ConnectError):
    """A :class:`ConnectError` that also says which check failed (``connect`` or ``tls``)."""

    def __init__(self, problem: NetProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class ServerConnector(Connector):
    """What the IMAP and POP3 connectors share: one credential naming a server, its port and login."""

    protocol = ""  # "imap" | "pop3"

    @property
    def cred(self) -> Credential:
        if self.credential is None:
            raise ConfigError(f"Mailbox {self.mailbox.name!r} ({self.protocol.upper()}) needs a credential.")
        return self.credential

    @property
    def port(self) -> int:
        return self.cred.port or DEFAULT_PORTS[(self.protocol, self.cred.security)]

    @property
    def user(self) -> str:
        return self.cred.username or self.mailbox.address

    @property
    def _where(self) -> str:
        return f"{self.cred.host}:{self.port}"

    @property
    def _secret_kind(self) -> str:
        """What the server checks at login: ``password``, or ``access_token`` for XOAUTH2."""
        return "access_token" if self.cred.auth == "oauth2" else "password"

    def _login_secret(self) -> str:
        """The password, or for XOAUTH2 an access token: stored as is, or asked of Entra ID or Google with
        the credential's own secret (``oauth_provider``), once per connector."""
        if self.cred.auth != "oauth2":
            return self.secrets("password")
        tokens = self.__dict__.get("_tokens")
        if tokens is None:
            from halo_integrator.outgoing.tokens import for_xoauth2

            tokens = self.__dict__["_tokens"] = for_xoauth2(self.mailbox, self.cred, self.secrets)
        return str(tokens.token())

    def _stored_set(self, key: str) -> set[str] | None:
        """A set of strings kept in ``state`` as a JSON list (the only-new lists); None when there is none or
        it is unreadable (said in the log)."""
        text = self.state.get(key)
        if text is None:
            return None
        try:
            return {str(item) for item in json.loads(text)}
        except (ValueError, TypeError):
            log.warning("Mailbox %s: the stored list %s is unreadable and is ignored.", self.mailbox.name, key)
            return None

    def _store_set(self, key: str, values: Iterable[str]) -> None:
        self.state.set(key, json.dumps(sorted(values), separators=(",", ":")))

    def _refused(self, said: str) -> SecretError:
        """The server said no to the login (``said``: its answer, secrets scrubbed)."""
        what = self._secret_kind.replace("_", " ")
        issuer = {"microsoft365": "Entra ID", "google": "Google"}.get(self.cred.oauth_provider)
        if self.cred.auth == "oauth2" and issuer:  # a fresh token: the grant is what is missing, not a secret
            grant = (
                f"that the app {self.cred.client_id} has the IMAP.AccessAsApp / POP.AccessAsApp permission with "
                "admin consent and that its service principal was given access to this mailbox "
                "(Add-MailboxPermission)" if issuer == "Entra ID" else
                "that the service account's client id is granted https://mail.google.com/ under domain-wide "
                "delegation, and that IMAP or POP is on for this mailbox"
            )
            return SecretError(
                f"The server refused the access token {issuer} issued for {self.user}@{self.cred.host} (it said: "
                f"{said}). Check {grant}."
            )
        return SecretError(
            f"The server refused the {what} for {self.user}@{self.cred.host} (it said: {said}). Check the "
            f"username, then store the right {what} with `integrator credentials add {self.mailbox.name}`."
        )

    @property
    def folder(self) -> str:
        return "INBOX"

    def test(self) -> TestReport:
        """Connect, check TLS, log in, then the protocol's own checks; a report, never an exception."""
        report = TestReport(folder=self.folder)
        checks = report.checks
        if not record_connect(checks, self._where, self._open_connection):
            return report
        try:
            record_tls(checks, self.cred)
            self._before_login(report)
            if not record_login(checks, self.mailbox.name, self.user, self.cred, self._login):
                return report
            self._after_login(report)
        except IntegratorError as exc:
            checks.append(Check(name="connection", ok=False, detail=str(exc)))
        finally:
            self.close()
        return report

    def _open_connection(self) -> None:
        """Connect (no login yet), for :meth:`test`."""
        raise NotImplementedError

    def _login(self) -> None:
        raise NotImplementedError

    def _before_login(self, report: TestReport) -> None:
        """What :meth:`test` records before the login (e.g. the server's capabilities)."""

    def _after_login(self, report: TestReport) -> None:
        """What :meth:`test` checks once logged in: the folders, the count."""

    def _connect_failed(self, exc: BaseException) -> ConnectFailed:
        cred = self.cred
        return ConnectFailed(
            describe_connect_error(
                exc, protocol=self.protocol, host=cred.host, port=self.port, security=cred.security,
                timeout=cred.timeout,
            )
        )


def describe_connect_error(
    exc: BaseException, *, protocol: str, host: str, port: int, security: str, timeout: float
) -> NetProblem:
    """Explain an exception raised while opening a connection (before login)."""
    where = f"{protocol.upper()} server {host}:{port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc)
        if is_name_mismatch(exc):
            return NetProblem(
                check="tls",
                detail=f"The TLS certificate of {where} is not issued for {host!r} ({reason}).",
                fix=(
                    f"Set host to {NAME_MISMATCH_FIX}. tls_verify = false turns every certificate check off "
                    "(not recommended)."
                ),
            )
        return NetProblem(
            check="tls",
            detail=f"The TLS certificate of {where} is not trusted ({reason}).",
            fix=(
                "If the server uses a private or self-signed certificate, set ca_file in the credential to "
                "the PEM file of the CA that signed it; tls_verify = false turns verification off (not "
                "recommended)."
            ),
        )
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or str(exc)
        return NetProblem(
            check="tls",
            detail=f"The TLS handshake with {where} failed ({reason}).",
            fix=(
                f"Check that security = {security!r} matches the port: implicit TLS is usually "
                f'{DEFAULT_PORTS[(protocol, "ssl")]} (security = "ssl"), STARTTLS or plain text '
                f'{DEFAULT_PORTS[(protocol, "starttls")]} (security = "starttls").'
            ),
        )
    if isinstance(exc, socket.gaierror):
        return NetProblem(
            check="connect",
            detail=f"Cannot resolve the host name {host!r} ({exc.strerror or exc}).",
            fix="Check the credential's host and this machine's DNS settings.",
        )
    if isinstance(exc, TimeoutError):
        return NetProblem(
            check="connect",
            detail=f"No answer from {where} within {timeout:g} s.",
            fix="Check the host, the port and any firewall between here and the server; raise the "
            "credential's timeout if the server is just slow.",
        )
    if isinstance(exc, ConnectionRefusedError):
        return NetProblem(
            check="connect",
            detail=f"{where} refused the connection.",
            fix="Check the port and that the mail service runs there.",
        )
    if isinstance(exc, OSError):
        return NetProblem(
            check="connect",
            detail=f"Cannot connect to {where} ({exc.strerror or exc}).",
            fix="Check the host, the port and the network.",
        )
    return NetProblem(
        check="connect",
        detail=f"The connection to {where} failed ({type(exc).__name__}: {exc}).",
        fix=f"Check that security = {security!r} and the port match what the server offers.",
    )


def failure_reason(
    exc: BaseException, timeout: float, server_text: Callable[[BaseException], str],
    lost: tuple[type[BaseException], ...] = (),
) -> str:
    """Why a command on an open connection failed: no answer in time, the connection lost (a socket error,
    or one of the protocol library's own ``lost`` exceptions), or the server's refusal in its own words."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if lost and isinstance(exc, lost):
        return f"the connection was lost: {exc}"
    if isinstance(exc, OSError):
        return f"the connection was lost: {exc.strerror or exc}"
    return f"the server said: {server_text(exc)}"


def identity(message_id: bytes, when: bytes) -> str:
    """How an only-new watermark recognises an old email after its server renumbered it: a short hash of its
    Message-ID and a time a migration keeps (IMAP's arrival time, POP3's Date header). "" when either is
    missing: such an email is never taken for an old one."""
    message_id, when = b" ".join(message_id.split()), b" ".join(when.split())
    if not message_id or not when:
        return ""
    return hashlib.sha256(message_id + b"\0" + when).hexdigest()[:16]


def scrub(text: str, *secrets: str) -> str:
    """Remove secrets from a server's answer before it goes into a message (contract 8)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


# ----------------------------------------------------------------------- shared steps of `mailbox test`


def record_connect(checks: list[Check], where: str, connect: Callable[[], None]) -> bool:
    """Connect for a connection test, recording the connect (and TLS) check; False when it failed."""
    try:
        connect()
    except IntegratorError as exc:
        if not isinstance(exc, ConnectFailed):
            checks.append(Check(name="connect", ok=False, detail=str(exc)))
            return False
        problem = exc.problem
        if problem.check == "tls":
            checks.append(Check(name="connect", ok=True, detail=f"reached {where}"))
        checks.append(Check(name=problem.check, ok=False, detail=problem.detail, fix=problem.fix))
        return False
    checks.append(Check(name="connect", ok=True, detail=f"reached {where}"))
    return True


def record_tls(checks: list[Check], credential: Credential) -> None:
    if credential.security != "none":
        verified = (
            "certificate verified" if credential.tls_verify else "certificate NOT verified (tls_verify = false)"
        )
        checks.append(Check(name="tls", ok=True, detail=f"{credential.security}: {verified}"))


def record_login(
    checks: list[Check], mailbox: str, user: str, credential: Credential, login: Callable[[], None]
) -> bool:
    """Log in for a connection test, recording the login check; False when it failed."""
    try:
        login()
    except SecretError as exc:
        checks.append(
            Check(
                name="login",
                ok=False,
                detail=str(exc),
                fix=f"Store the right secret with `integrator credentials add {mailbox}`.",
                secret=True,
            )
        )
        return False
    except IntegratorError as exc:  # the connection failed while logging in: not the password's fault
        checks.append(Check(name="login", ok=False, detail=str(exc)))
        return False
    checks.append(Check(name="login", ok=True, detail=f"logged in as {user} ({credential.auth})"))
    return True
