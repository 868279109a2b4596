"""POP3: read the inbox of a POP3 account with poplib (see :mod:`.base` for the contract).

POP3 has no folders and no flags, so ``after_import`` means:

* ``move_to_deleted`` and ``delete``: DELE, committed by QUIT (a POP3 server removes messages only when the
  session ends cleanly; if the connection breaks before, nothing is deleted and the next run disposes again).
* ``mark_read``: leave the message on the server. The importer remembers every committed id, so it is not
  imported twice; the mailbox keeps growing until someone empties it.
* ``move_to_folder`` cannot be done: :meth:`Pop3Connector.open` raises ConfigError.

Quarantine does nothing (no folder to move to); the importer keeps the raw message in the store.

Identity: the source id is the message's UIDL. POP3 message numbers are valid for one session only, so every
session maps UIDL -> number afresh. A server without UIDL gets a weaker fallback id, ``"sha256:<hex>"`` of the
message's header block (TOP n 0), with ``#2``, ``#3`` appended to messages whose headers are identical: it is
stable only as long as the headers are, and identical copies are told apart by their order.

:meth:`Pop3Connector.set_watermark` stores the ids present now (``state["pop3:old_ids"]``, JSON) and those are
never listed again. It also stores a short hash of each of those messages' Message-ID and Date headers
(``state["pop3:old_known"]``; one TOP per message), because a server migration gives every message a new UIDL.
When none of the old ids is on the server any more but messages are, the UIDLs changed: the headers of every
message are read once (TOP), those matching an old one become the old ids, and all others are new. A message
without both headers is never taken for an old one.

Every socket operation runs under ``credential.timeout``. Security: ``ssl`` (POP3S, port 995), ``starttls``
(STLS on port 110) or ``none``. Authentication: USER/PASS with ``secrets("password")`` or SASL XOAUTH2 with
``secrets("access_token")``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import poplib
import re
from collections.abc import Iterator, Sequence
from typing import Any

from halo_integrator.connectors._net import (
    ConnectFailed,
    NetProblem,
    ServerConnector,
    failure_reason,
    identity,
    scrub,
)
from halo_integrator.connectors.base import DEFAULT_PORTS, Check, TestReport
from halo_integrator.connectors.tls import make_ssl_context
from halo_integrator.errors import (
    ConfigError,
    ConnectError,
    DisposeError,
    RetrievalError,
)

log = logging.getLogger(__name__)

_MAX_LINE = 1_000_000  # poplib's own limit (2,048) is shorter than lines real mail has
_OLD_IDS = "pop3:old_ids"
_OLD_KNOWN = "pop3:old_known"
_IDENTITY_HEADERS = re.compile(rb"^(message-id|date):[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def _getline(self: poplib.POP3) -> tuple[bytes, int]:
    """poplib's line reader with a longer limit; EOF is a connection error, not a protocol error."""
    line = self.file.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise poplib.error_proto("line too long")
    if not line:
        raise ConnectionAbortedError("the server closed the connection")
    octets = len(line)
    if line[-2:] == b"\r\n":
        return line[:-2], octets
    if line[:1] == b"\r":
        return line[1:-1], octets
    return line[:-1], octets


class _POP3(poplib.POP3):
    _getline = _getline


class _POP3SSL(poplib.POP3_SSL):
    _getline = _getline


class Pop3Connector(ServerConnector):
    """The inbox of a POP3 account; see the module docstring."""

    kind = "pop3"
    protocol = "pop3"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: poplib.POP3 | None = None
        self._opened = False
        self._broken = False
        self._numbers: dict[str, int] | None = None  # id -> message number, this session only
        self._identity_cache: dict[str, str] = {}  # id -> identity of its headers, this session only
        self._secret = ""
        self.has_uidl: bool | None = None

    # settings ---------------------------------------------------------------------------------------
    def _check_config(self) -> None:
        if self.mailbox.incoming.after_import == "move_to_folder":
            raise ConfigError(
                f'Mailbox {self.mailbox.name!r}: after_import = "move_to_folder" is not possible over POP3, '
                'which has no folders. Use "delete" (or "move_to_deleted", which means the same on POP3) or '
                '"mark_read" (leave messages on the server), or connect with IMAP instead.'
            )

    # lifecycle --------------------------------------------------------------------------------------
    def open(self) -> None:
        self._check_config()
        if self._client is not None:
            return
        self._client = self._connect()
        self._broken = False
        try:
            self._login()
        except BaseException:
            self.close()
            raise
        self._opened = True

    def close(self) -> None:
        client, self._client = self._client, None
        self._numbers = None
        self._identity_cache = {}
        self._opened = False
        if client is None:
            return
        try:
            if self._broken:
                client.close()
            else:
                client.quit()  # no DELE is ever pending here: dispose() quits on its own
        except Exception:
            _quiet_close(client)

    def _connect(self) -> poplib.POP3:
        cred = self.cred
        ctx = make_ssl_context(cred, self.config) if cred.security != "none" else None
        try:
            client: poplib.POP3
            if cred.security == "ssl":
                client = _POP3SSL(cred.host, self.port, timeout=cred.timeout, context=ctx)
            else:
                client = _POP3(cred.host, self.port, timeout=cred.timeout)
        except Exception as exc:
            raise self._connect_failed(exc) from exc
        if cred.security == "starttls":
            try:
                client.stls(ctx)
            except poplib.error_proto as exc:
                _quiet_close(client)
                raise ConnectFailed(
                    NetProblem(
                        check="tls",
                        detail=f"The POP3 server {self._where} does not offer STLS ({exc}).",
                        fix=(
                            f'Use security = "ssl" (usually port {DEFAULT_PORTS[("pop3", "ssl")]}), or "none" '
                            "only on a trusted network."
                        ),
                    )
                ) from None
            except Exception as exc:
                _quiet_close(client)
                raise self._connect_failed(exc) from exc
        log.debug("Connected to %s (%s)", self._where, cred.security)
        return client

    def _login(self) -> None:
        client = self._need_raw()
        cred = self.cred
        try:
            self._secret = self._login_secret()
            if cred.auth == "oauth2":
                self._xoauth2(client, self._secret)
            else:
                client.user(self.user)
                client.pass_(self._secret)
        except poplib.error_proto as exc:
            if exc.args == ("-ERR EOF",):  # poplib's own word (a str, not the server's bytes) for a closed connection
                self._broken = True
                raise ConnectError(
                    f"The POP3 server {self._where} dropped the connection during login, before it answered the "
                    f"{self._secret_kind.replace('_', ' ')}."
                ) from None
            said = scrub(_text(exc), self._secret)
            if "[SYS/" in said.upper() or "[IN-USE]" in said.upper():
                raise ConnectError(
                    f"The POP3 server {self._where} could not open the mailbox of {self.user} right now (it "
                    f"said: {said}). Another program may hold it; try again later."
                ) from None
            raise self._refused(said) from None
        except OSError as exc:
            self._broken = True
            raise ConnectError(
                f"The POP3 server {self._where} dropped the connection during login "
                f"({scrub(_reason(exc, cred.timeout), self._secret)})."
            ) from None
        log.debug("Logged in to %s as %s", self._where, self.user)

    def _xoauth2(self, client: poplib.POP3, token: str) -> None:
        """SASL XOAUTH2 (AUTH XOAUTH2 <initial response>); on failure the server sends a ``+`` challenge."""
        raw = f"user={self.user}\x01auth=Bearer {token}\x01\x01".encode()
        client._putcmd("AUTH XOAUTH2 " + base64.b64encode(raw).decode("ascii"))  # type: ignore[attr-defined]
        resp: bytes = client._getresp()  # type: ignore[attr-defined]
        if resp.startswith(b"+OK"):
            return
        # a "+ <base64 error>" challenge: answer with an empty line to get the final -ERR
        client._putcmd("")  # type: ignore[attr-defined]
        resp = client._getresp()  # type: ignore[attr-defined]  # raises error_proto on -ERR
        if not resp.startswith(b"+OK"):
            raise poplib.error_proto(resp)

    def _need_raw(self) -> poplib.POP3:
        if self._client is None:
            raise RetrievalError(f"Mailbox {self.mailbox.name!r}: the POP3 connection is not open.")
        return self._client

    def _need(self) -> poplib.POP3:
        """The session, reopened when dispose() ended the previous one with QUIT."""
        if self._client is None:
            if not self._opened:
                raise RetrievalError(f"Mailbox {self.mailbox.name!r}: the POP3 connection is not open.")
            self.open()
        if self._broken:
            raise RetrievalError(f"The connection to {self._where} was lost earlier in this run.")
        return self._need_raw()

    # reading ----------------------------------------------------------------------------------------
    def _index(self) -> dict[str, int]:
        """UIDL -> message number for this session (or the header-hash fallback without UIDL)."""
        if self._numbers is not None:
            return self._numbers
        client = self._need()
        numbers: dict[str, int] = {}
        try:
            try:
                _, lines, _ = client.uidl()
                self.has_uidl = True
            except poplib.error_proto as exc:
                self.has_uidl = False
                log.warning(
                    "Mailbox %s: the POP3 server %s has no UIDL (%s); message ids are hashes of the headers, "
                    "which is weaker: a message whose headers change looks new.",
                    self.mailbox.name,
                    self._where,
                    _text(exc),
                )
                count, _ = client.stat()
                seen: dict[str, int] = {}
                for number in range(1, count + 1):
                    _, head, _ = client.top(number, 0)
                    digest = "sha256:" + hashlib.sha256(b"\r\n".join(head)).hexdigest()
                    seen[digest] = seen.get(digest, 0) + 1
                    key = digest if seen[digest] == 1 else f"{digest}#{seen[digest]}"
                    numbers[key] = number
                    self._identity_cache[key] = _identity(head)  # the headers are here: no second TOP later
            else:
                for line in lines:
                    num, _, uid = line.decode("ascii", "replace").strip().partition(" ")
                    if num.isdigit() and uid:
                        numbers[uid.strip()] = int(num)
        except (OSError, poplib.error_proto) as exc:
            self._broken = isinstance(exc, OSError)
            raise RetrievalError(
                f"Listing the messages on {self._where} failed ({_reason(exc, self.cred.timeout)})."
            ) from exc
        self._numbers = numbers
        return numbers

    def _old_ids(self) -> set[str]:
        return self._stored_set(_OLD_IDS) or set()

    def list_ids(self) -> list[str]:
        old = self._old_ids()
        index = self._index()
        if old and index and old.isdisjoint(index):
            old = self._rebase(index)
        return [i for i, _ in sorted(index.items(), key=lambda kv: kv[1]) if i not in old]

    def count(self) -> int:
        if self.state.get(_OLD_IDS):
            return len(self.list_ids())
        client = self._need()
        try:
            count, _ = client.stat()
        except (OSError, poplib.error_proto) as exc:
            self._broken = isinstance(exc, OSError)
            raise RetrievalError(
                f"STAT on {self._where} failed ({_reason(exc, self.cred.timeout)})."
            ) from exc
        return int(count)

    def fetch(self, ids: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        index = self._index()
        client = self._need()
        for source_id in dict.fromkeys(ids):
            number = index.get(source_id)
            if number is None:
                log.info("Mailbox %s: message %s is no longer on the server.", self.mailbox.name, source_id)
                continue
            try:
                _, lines, _ = client.retr(number)
            except poplib.error_proto as exc:
                log.warning(
                    "Mailbox %s: the server would not return message %s (%s); skipped.",
                    self.mailbox.name,
                    source_id,
                    _text(exc),
                )
                continue
            except OSError as exc:
                self._broken = True
                raise RetrievalError(
                    f"Fetching message {source_id} from {self._where} failed "
                    f"({_reason(exc, self.cred.timeout)})."
                ) from exc
            yield source_id, b"\r\n".join(lines) + b"\r\n"

    # writing ----------------------------------------------------------------------------------------
    def dispose(self, ids: Sequence[str]) -> None:
        action = self.mailbox.incoming.after_import
        if action == "mark_read":
            log.debug(
                "Mailbox %s: %d message(s) stay on the POP3 server (mark_read).", self.mailbox.name, len(ids)
            )
            return
        self._check_config()
        if not ids:
            return
        try:
            index = self._index()
        except RetrievalError as exc:
            raise DisposeError(str(exc)) from exc
        client = self._need()
        refused: list[str] = []
        try:
            for source_id in dict.fromkeys(ids):
                number = index.get(source_id)
                if number is None:
                    continue  # already gone
                try:
                    client.dele(number)
                except poplib.error_proto as exc:
                    refused.append(f"{source_id} ({_text(exc)})")
            client.quit()  # the server deletes only now, when the session ends cleanly
        except OSError as exc:
            self._broken = True
            self.close()
            raise DisposeError(
                f"The connection to {self._where} broke before the deletions were committed "
                f"({_reason(exc, self.cred.timeout)}); nothing was deleted and the next run tries again."
            ) from exc
        except poplib.error_proto as exc:
            self.close()
            raise DisposeError(
                f"The POP3 server {self._where} did not commit the deletions ({_text(exc)}); the next run "
                "tries again."
            ) from exc
        self._client = None
        self._numbers = None  # the next call opens a new session
        self._identity_cache = {}
        if refused:
            raise DisposeError(
                f"The POP3 server {self._where} refused to delete {len(refused)} message(s): "
                + "; ".join(refused[:5])
            )

    def _rebase(self, index: dict[str, int]) -> set[str]:
        """The old ids after every UIDL changed: the messages whose Message-ID and Date match an old one."""
        gone = (
            f"Mailbox {self.mailbox.name}: none of the emails left alone by --only-new is on {self._where} under "
            "its old id any more"
        )
        known = self._stored_set(_OLD_KNOWN)
        identities = self._identities(index) if known else None
        if identities is None or known is None:
            why = "the server does not answer TOP" if known else "there is no record of their headers"
            log.warning(
                "%s, and %s to recognise them by; every message there is treated as new. Run `integrator "
                "mailbox edit` with --only-new to set the watermark again.",
                gone,
                why,
            )
            self._store_set(_OLD_IDS, ())
            return set()
        old = {uid for uid, found in identities.items() if found and found in known}
        self._store_set(_OLD_IDS, old)
        log.warning(
            "%s (a server migration, or they were deleted); %d message(s) there were recognised by Message-ID "
            "and Date as ones left alone and stay left alone; the other %d are treated as new.",
            gone,
            len(old),
            len(index) - len(old),
        )
        return old

    def _identities(self, index: dict[str, int]) -> dict[str, str] | None:
        """Message id -> :func:`~._net.identity` of its Message-ID and Date headers, one TOP per message not
        read yet this session; None when the server refuses TOP (an optional command in RFC 1939)."""
        client = self._need()
        try:
            for source_id, number in index.items():
                if source_id not in self._identity_cache:
                    _, head, _ = client.top(number, 0)
                    self._identity_cache[source_id] = _identity(head)
        except poplib.error_proto as exc:
            log.warning("Mailbox %s: %s refused TOP (%s).", self.mailbox.name, self._where, _text(exc))
            return None
        except OSError as exc:
            self._broken = True
            raise RetrievalError(
                f"Reading the headers of the messages on {self._where} failed "
                f"({_reason(exc, self.cred.timeout)})."
            ) from exc
        return {source_id: self._identity_cache[source_id] for source_id in index}

    def set_watermark(self) -> None:
        index = self._index()
        identities = self._identities(index)
        if identities is None:
            log.warning(
                "Mailbox %s: without TOP the emails left alone are remembered by their ids only; should a "
                "server migration give them new ids, they will be imported.",
                self.mailbox.name,
            )
        ids = list(index)
        self._store_set(_OLD_KNOWN, {found for found in (identities or {}).values() if found})
        self._store_set(_OLD_IDS, ids)
        log.info(
            "Mailbox %s: %d message(s) now on the POP3 server count as old.", self.mailbox.name, len(ids)
        )

    # diagnostics ------------------------------------------------------------------------------------
    def _open_connection(self) -> None:
        self._check_config()
        self._client = self._connect()
        self._broken = False

    def _before_login(self, report: TestReport) -> None:
        try:
            report.capabilities = sorted(self._need_raw().capa())
        except (poplib.error_proto, OSError):
            report.capabilities = []

    def _after_login(self, report: TestReport) -> None:
        self._opened = True
        report.message_count = self.count()
        self._index()
        checks = report.checks
        checks.append(
            Check(
                name="folder",
                ok=True,
                detail=f"INBOX: {report.message_count} message(s); ids from "
                + ("UIDL" if self.has_uidl else "header hashes (the server has no UIDL; weaker)"),
            )
        )
        kept = self.mailbox.incoming.after_import == "mark_read"
        checks.append(
            Check(
                name="after_import",
                ok=True,
                detail="POP3 has no folders: imported messages are " + ("left on the server" if kept else "deleted"),
            )
        )


def _identity(head: list[bytes]) -> str:
    """:func:`~._net.identity` of a header block's Message-ID and Date (the lines TOP n 0 returns)."""
    block = b"\r\n".join(head) + b"\r\n"
    end = block.find(b"\r\n\r\n")
    found: dict[bytes, bytes] = {}
    for name, value in _IDENTITY_HEADERS.findall(block if end < 0 else block[: end + 2]):
        found.setdefault(name.lower(), value)
    return identity(found.get(b"message-id", b""), found.get(b"date", b""))


def _text(exc: BaseException | bytes) -> str:
    value: Any = exc.args[0] if isinstance(exc, BaseException) and exc.args else exc
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _reason(exc: BaseException, timeout: float) -> str:
    return failure_reason(exc, timeout, _text)


def _quiet_close(client: poplib.POP3) -> None:
    with contextlib.suppress(Exception):
        client.close()
