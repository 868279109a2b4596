"""A real SMTP server for the tests: aiosmtpd on 127.0.0.1 with TLS from a trustme CA.

    server = SmtpServer(ca, mode="starttls", users={"agent": "agentpw"})
    server.start()
    ...  # send to 127.0.0.1:server.port, trusting ca_file
    got = server.received()          # the next message, or AssertionError after a timeout
    server.stop()                    # the port now refuses connections; start() brings it back

Modes: ``starttls`` (STARTTLS required before MAIL and AUTH), ``ssl`` (implicit TLS) and ``plain``.
AUTH PLAIN and LOGIN check ``users``; XOAUTH2 checks ``tokens`` (user → accepted bearer token) and answers a
bad token the way Gmail and Exchange Online do: a 334 challenge carrying a JSON error, then 535.
``rcpt_reply`` / ``data_reply`` make the server refuse recipients or the message with a given answer.
See the research notes (recipes/dovecot.md, section 3) for the aiosmtpd behaviour this relies on.
"""

from __future__ import annotations

import base64
import email
import email.policy
import itertools
import json
import logging
import queue
import ssl
import warnings
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from helpers import free_port

logging.getLogger("mail.log").setLevel(logging.CRITICAL)  # aiosmtpd logs each AUTH and the plain-auth warning

_ids = itertools.count(1)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    user: str | None  # who authenticated, None without AUTH
    mechanism: str | None

    @property
    def message(self) -> EmailMessage:
        msg = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self.server.rcpt_reply.get(address.lower()) or self.server.rcpt_reply.get("*")
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.server.data_reply:
            return self.server.data_reply
        auth = session.auth_data
        self.server.messages.put(
            Received(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                data=bytes(envelope.original_content or envelope.content or b""),
                user=auth.login.decode() if isinstance(auth, LoginPassword) else None,
                mechanism=self.server.last_mechanism,
            )
        )
        return f"250 2.0.0 Ok: queued as Q{next(_ids):05d}"

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) > 1:
            blob: Any = base64.b64decode(args[1])
        else:
            blob = await server.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        fields = dict(
            part.split("=", 1) for part in blob.decode("utf-8", "replace").split("\x01") if "=" in part
        )
        user = fields.get("user", "")
        token = fields.get("auth", "").removeprefix("Bearer ")
        if token and self.server.token_ok(user, token):
            self.server.last_mechanism = "XOAUTH2"
            return AuthResult(success=True, handled=False, auth_data=LoginPassword(user.encode(), b""))
        error = {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}
        await server.challenge_auth(json.dumps(error))  # the client answers with an empty line
        return AuthResult(success=False, handled=False)


class SmtpServer:
    def __init__(
        self,
        ca: trustme.CA,
        *,
        mode: str = "starttls",
        users: dict[str, str] | None = None,
        tokens: dict[str, str] | None = None,
        auth_required: bool = True,
        mechanisms_off: tuple[str, ...] = (),
    ) -> None:
        assert mode in ("starttls", "ssl", "plain")
        self.mode = mode
        self.users = {"agent": "agentpw"} if users is None else users
        self.tokens = tokens or {}
        self.auth_required = auth_required
        self.mechanisms_off = mechanisms_off  # e.g. ("PLAIN",) for a server that offers only LOGIN
        self.port = free_port()
        self.host = "127.0.0.1"
        self.messages: queue.Queue[Received] = queue.Queue()
        self.rcpt_reply: dict[str, str] = {}  # address (or "*") → answer, e.g. "550 5.1.1 No such user"
        self.data_reply = ""  # e.g. "554 5.7.1 Message rejected as spam" or "451 4.3.0 Try again later"
        self.last_mechanism: str | None = None
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(self._ctx)
        self._controller: Controller | None = None

    def token_ok(self, user: str, token: str) -> bool:
        """Whether XOAUTH2 accepts this token for this user; tests may replace it (e.g. ask FakeCloud)."""
        return self.tokens.get(user) == token

    def _authenticator(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and self.users.get(auth_data.login.decode()) == auth_data.password.decode()
        )
        if ok:
            self.last_mechanism = mechanism
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def start(self) -> SmtpServer:
        kwargs: dict[str, Any] = {
            "hostname": self.host,
            "port": self.port,
            "authenticator": self._authenticator,
            "auth_required": self.auth_required,
            "auth_exclude_mechanism": list(self.mechanisms_off),
        }
        if self.mode == "starttls":
            kwargs.update(tls_context=self._ctx, require_starttls=True)
        elif self.mode == "ssl":
            kwargs.update(
                ssl_context=self._ctx, auth_require_tls=False
            )  # aiosmtpd: SMTPS is not "TLS" for AUTH
        else:
            kwargs.update(auth_require_tls=False)
        controller = Controller(_Handler(self), **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Requiring AUTH while not requiring TLS" is the point here
            try:
                controller.start()
            except BaseException:
                controller.stop(no_assert=True)
                raise
        self._controller = controller
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop(no_assert=True)
            self._controller = None

    def received(self, timeout: float = 5.0) -> Received:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the SMTP server received nothing within {timeout} s") from None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
