"""IMAP: read one folder of an IMAP account with imapclient (see :mod:`.base` for the contract).

Identity and incremental reads
    A message's source id is ``"<uidvalidity>/<uid>"`` of the folder read. The folder's UIDVALIDITY is kept in
    ``state`` (``uidvalidity:<folder>``); when the server changes it, every UID is void (RFC 3501 2.3.1.1),
    all ids change, a warning is logged, and the importer recognises already-imported emails by Message-ID and
    content fingerprint. Two "only new" watermarks are honoured: ``incoming.only_after_uid`` from the config
    and the one :meth:`ImapConnector.set_watermark` stores in ``state`` (``watermark:<folder>``, as
    ``"<uidvalidity>/<uid>"``).

The only-new watermark survives a UIDVALIDITY change
    With the watermark, ``set_watermark`` also stores a short hash of each old message's Message-ID and
    INTERNALDATE (``watermark_known:<folder>``). Server migrations and index rebuilds keep both, so when the
    UIDVALIDITY changes the messages now in the folder are matched against that list: those found stay
    old, the watermark moves to the new UIDVALIDITY, and an old message that got a UID above a new one is
    kept by UID in ``watermark_extra:<folder>``. Both must match, so a new email that reuses an old
    Message-ID is still imported; an old email whose arrival time the migration changed, or that has no
    Message-ID, is imported too, as a new ticket, rather than risk leaving a new one behind.

Reading never changes the server
    ``list_ids`` SEARCHes (with ``after_import = "mark_read"``: the unread messages, every message above the
    read mark and every message a run listed and has not settled, read or not: see the read-mark section of
    :class:`ImapConnector`), ``fetch`` first asks for
    ``RFC822.SIZE`` and then FETCHes ``BODY.PEEK[]`` in batches bounded by ``incoming.batch_size`` and
    ``incoming.batch_mb``, yielding each batch as it arrives.

Disposal (``after_import``)
    ``move_to_deleted``: UID MOVE to ``incoming.deleted_folder`` or the folder with the ``\\Trash``
    special-use attribute, else one named Trash / Deleted Items / Deleted Messages / Deleted. ``delete``:
    ``\\Deleted`` then UID EXPUNGE. ``move_to_folder``: UID MOVE to ``incoming.move_folder`` (created if
    missing). ``mark_read``: ``\\Seen``. Without MOVE, a move is COPY + ``\\Deleted`` + UID EXPUNGE. A plain
    EXPUNGE would also erase every message another client flagged ``\\Deleted``, so without UIDPLUS nothing
    is expunged and :class:`~halo_integrator.errors.DisposeError` says so.

Every call runs under ``SocketTimeout(connect=timeout, read=timeout)`` from ``credential.timeout``.
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, timedelta
from typing import Any

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import CapabilityError, LoginError
from imapclient.imapclient import DELETED, SEEN, TRASH
from imapclient.response_parser import parse_fetch_response

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
    ConnectError,
    DisposeError,
    IntegratorError,
    RetrievalError,
)
from halo_integrator.timeutil import utc_today

log = logging.getLogger(__name__)

_IMAP_ERRORS = (imaplib.IMAP4.error, OSError)
_SIZE_CHUNK = 500  # UIDs per FETCH of sizes or Message-IDs; keeps command lines short
_HEADER_FIELDS = b"BODY[HEADER.FIELDS"
# The answers to the two FETCHes of an import, as imaplib splits them (see _read_fetch)
_SIZE_ANSWER = re.compile(rb"\d+ \((?:UID (\d+) RFC822\.SIZE (\d+)|RFC822\.SIZE (\d+) UID (\d+))\)")
_BODY_HEAD = re.compile(rb"\d+ \((?:UID (\d+) )?BODY\[\] \{\d+\}")
_BODY_TAIL = re.compile(rb"(?: UID (\d+))?\)")


class ImapConnector(ServerConnector):
    """One folder of an IMAP account; see the module docstring."""

    kind = "imap"
    protocol = "imap"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: IMAPClient | None = None
        self._broken = False
        self._caps: set[str] = set()
        self._uidvalidity = 0
        self._uidnext = 0
        self._identity_cache: dict[int, str] = {}  # UID -> identity, this selection of the folder
        self._deleted_folder: str | None = None
        self._secret = ""

    # settings ---------------------------------------------------------------------------------------
    @property
    def folder(self) -> str:
        return self.mailbox.incoming.folder or "INBOX"

    # lifecycle --------------------------------------------------------------------------------------
    def open(self) -> None:
        if self._client is not None:
            return
        client = self._connect()
        self._client = client
        self._broken = False
        try:
            self._login()
            self._select()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        client, self._client = self._client, None
        self._deleted_folder = None
        if client is None:
            return
        try:
            if self._broken:
                client.shutdown()
            else:
                client.logout()
        except Exception:
            _quiet_shutdown(client)

    def _connect(self) -> IMAPClient:
        cred = self.cred
        security = cred.security
        ctx = make_ssl_context(cred, self.config) if security != "none" else None
        timeout = SocketTimeout(connect=cred.timeout, read=cred.timeout)

        try:
            client = IMAPClient(
                cred.host, port=self.port, ssl=security == "ssl", ssl_context=ctx, timeout=timeout
            )
        except Exception as exc:
            raise self._connect_failed(exc) from exc
        _quiet_imaplib(client)
        if security == "starttls":
            try:
                client.starttls(ctx)
            except CapabilityError:
                _quiet_shutdown(client)
                raise ConnectFailed(
                    NetProblem(
                        check="tls",
                        detail=f"The IMAP server {self._where} does not offer STARTTLS.",
                        fix=(
                            f'Use security = "ssl" (usually port {DEFAULT_PORTS[("imap", "ssl")]}), or "none" '
                            "only on a trusted network."
                        ),
                    )
                ) from None
            except Exception as exc:
                _quiet_shutdown(client)
                raise self._connect_failed(exc) from exc
        log.debug("Connected to %s (%s)", self._where, security)
        return client

    def _login(self) -> None:
        client = self._need()
        cred = self.cred
        try:
            self._secret = self._login_secret()
            if cred.auth == "oauth2":
                client.oauth2_login(self.user, self._secret)
            else:
                client.login(self.user, self._secret)
        except LoginError as exc:
            lost = exc.__context__  # imapclient files a connection that dropped during the login as a LoginError
            said = scrub(_server_text(exc), self._secret)
            refused = any(word in said.upper() for word in ("AUTHENTICATIONFAILED", "AUTHENTICATION FAILED"))
            if isinstance(lost, imaplib.IMAP4.abort | OSError) and not refused:  # not a BYE that refuses it
                self._note_broken(lost)
                raise ConnectError(
                    f"The IMAP server {self._where} dropped the connection during login, before it answered the "
                    f"{self._secret_kind.replace('_', ' ')} ({scrub(_reason(lost, cred.timeout), self._secret)})."
                ) from None
            if "UNAVAILABLE" in said.upper():
                raise ConnectError(
                    f"The IMAP server {self._where} could not check the {self._secret_kind.replace('_', ' ')} "
                    f"for {self.user} right now (it said: {said}). Try again later; if it persists, ask the "
                    "mail server's admin."
                ) from None
            raise self._refused(said) from None
        except _IMAP_ERRORS as exc:
            self._note_broken(exc)
            raise ConnectError(
                f"The IMAP server {self._where} dropped the connection during login "
                f"({scrub(_reason(exc, cred.timeout), self._secret)})."
            ) from None
        try:
            self._caps = {_text(c).upper() for c in client.capabilities()}
        except _IMAP_ERRORS as exc:
            self._note_broken(exc)
            raise ConnectError(
                f"Reading the capabilities of {self._where} failed ({_reason(exc, cred.timeout)})."
            ) from None
        log.debug(
            "Logged in to %s as %s; capabilities: %s", self._where, self.user, " ".join(sorted(self._caps))
        )

    def _select(self) -> None:
        client = self._need()
        folder = self.folder
        try:
            info = client.select_folder(folder)
        except (imaplib.IMAP4.abort, OSError) as exc:  # abort before error: it is a subclass
            self._note_broken(exc)
            raise RetrievalError(
                f"Opening folder {folder!r} on {self._where} failed ({_reason(exc, self.cred.timeout)})."
            ) from None
        except imaplib.IMAP4.error as exc:
            raise RetrievalError(
                f"The folder {folder!r} does not exist for {self.user} on {self._where} (the server said: "
                f"{_server_text(exc)}). Folders there: {self._folder_names()}. Set incoming.folder to one of "
                "them."
            ) from None
        self._uidvalidity = int(info.get(b"UIDVALIDITY", 0))
        self._identity_cache = {}
        self._uidnext = int(info.get(b"UIDNEXT", 0))
        key = f"uidvalidity:{folder}"
        before = self.state.get(key)
        if before and before != str(self._uidvalidity):
            log.warning(
                "Mailbox %s: the UIDVALIDITY of folder %r changed from %s to %s, so every message there has "
                "a new id; already-imported emails are recognised by Message-ID and content instead.",
                self.mailbox.name,
                folder,
                before,
                self._uidvalidity,
            )
        if self.mailbox.incoming.after_import == "mark_read" and self._read_state()[0] is None:
            return  # written once reading has begun: a run that dies before then leaves the folder as never read
        self.state.set(key, str(self._uidvalidity))

    def _folder_names(self) -> str:
        try:
            names = [str(f[2]) for f in self._need().list_folders()]
        except _IMAP_ERRORS:
            return "(cannot list them)"
        shown = ", ".join(names[:20])
        return shown + (f" and {len(names) - 20} more" if len(names) > 20 else "")

    def _need(self) -> IMAPClient:
        if self._client is None:
            raise RetrievalError(f"Mailbox {self.mailbox.name!r}: the IMAP connection is not open.")
        return self._client

    def _note_broken(self, exc: BaseException) -> None:
        if isinstance(exc, imaplib.IMAP4.abort | OSError):
            self._broken = True

    @contextmanager
    def _guard(self, error: type[IntegratorError], what: str) -> Iterator[None]:
        """Turn protocol and socket failures into ``error`` with a message that says what failed."""
        if self._broken:
            raise error(f"{what} on {self._where}: the connection was lost earlier in this run.")
        try:
            yield
        except _IMAP_ERRORS as exc:
            self._note_broken(exc)
            raise error(f"{what} on {self._where} failed ({_reason(exc, self.cred.timeout)}).") from exc

    # reading ----------------------------------------------------------------------------------------
    def _floor(self) -> int:
        """The highest UID that is "old": messages at or below it are never listed."""
        floor = self.mailbox.incoming.only_after_uid
        mark = self.state.get(f"watermark:{self.folder}")
        if mark:
            validity, _, uid = mark.partition("/")
            if validity == str(self._uidvalidity) and uid.isdigit():
                floor = max(floor, int(uid))
            else:
                floor = max(floor, self._rebase_watermark(mark))
        return floor

    def _old_extra(self) -> set[int]:
        """Old messages above the watermark's UID (only after a UIDVALIDITY change reordered them)."""
        validity, _, uids = (self.state.get(f"watermark_extra:{self.folder}") or "").partition("/")
        if validity != str(self._uidvalidity):
            return set()
        return {int(u) for u in uids.split(",") if u.isdigit()}

    def _identities(self, uids: Sequence[int]) -> dict[int, str]:
        """:func:`~._net.identity` of (Message-ID, INTERNALDATE) per UID, each UID read once per session.

        INTERNALDATE is read with its own zone (not converted to this machine's local time), so the hash is
        the same whichever time zone or daylight-saving season it is computed in."""
        client = self._need()
        missing = [uid for uid in uids if uid not in self._identity_cache]
        answer: dict[int, dict[bytes, Any]] = {}
        normalise = client.normalise_times
        client.normalise_times = False
        try:
            for start in range(0, len(missing), _SIZE_CHUNK):
                with self._guard(RetrievalError, f"Reading the Message-IDs of {self.folder!r}"):
                    answer.update(client.fetch(
                        missing[start : start + _SIZE_CHUNK], ["INTERNALDATE", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]
                    ))
        finally:
            client.normalise_times = normalise
        for uid, data in answer.items():
            # servers name the item as asked or with the field name quoted: HEADER.FIELDS ("MESSAGE-ID")
            header = next((bytes(v) for k, v in data.items() if bytes(k).startswith(_HEADER_FIELDS) and v), b"")
            arrived = data.get(b"INTERNALDATE")
            when = str(int(arrived.timestamp())).encode() if arrived is not None else b""
            self._identity_cache[int(uid)] = identity(header.partition(b":")[2], when)
        return {uid: self._identity_cache[uid] for uid in uids if uid in self._identity_cache}

    def _rebase_watermark(self, mark: str) -> int:
        """Carry an only-new watermark from an older UIDVALIDITY over to the current one; returns its UID.

        Messages whose Message-ID and INTERNALDATE match one that was old when the watermark was set stay
        old; every other message is new. Without that list (a watermark from an older version) the
        watermark cannot be carried over and is dropped with a warning.
        """
        known = self._stored_set(f"watermark_known:{self.folder}")
        if known is None:
            log.warning(
                "Mailbox %s: the only-new watermark %s of folder %r belongs to an older UIDVALIDITY (now "
                "%s) and cannot be carried over; every message there is treated as new. Run `integrator "
                "mailbox edit` with --only-new to set it again.",
                self.mailbox.name, mark, self.folder, self._uidvalidity,
            )
            return 0
        with self._guard(RetrievalError, f"Listing the messages of {self.folder!r}"):
            uids = sorted(int(u) for u in self._need().search(["ALL"]))
        identities = self._identities(uids)
        old = [uid for uid in uids if identities.get(uid) and identities[uid] in known]
        old_set = set(old)
        floor = 0
        for uid in uids:  # the run of old messages at the start becomes the new watermark
            if uid not in old_set:
                break
            floor = uid
        extra = [uid for uid in old if uid > floor]
        # the extra list first: it is keyed by UIDVALIDITY, so until the watermark moves over too it is unused
        # and the next run simply carries the watermark over again
        self.state.set(f"watermark_extra:{self.folder}", f"{self._uidvalidity}/" + ",".join(map(str, extra)))
        self.state.set(f"watermark:{self.folder}", f"{self._uidvalidity}/{floor}")
        log.warning(
            "Mailbox %s: the UIDVALIDITY of folder %r changed; %d message(s) there were recognised by "
            "Message-ID and arrival time as ones left alone by --only-new and stay left alone; the other %d "
            "are treated as new.",
            self.mailbox.name, self.folder, len(old), len(uids) - len(old),
        )
        return floor

    def list_ids(self) -> list[str]:
        client = self._need()
        floor = self._floor()
        above = ["UID", f"{floor + 1}:*"] if floor else []
        with self._guard(RetrievalError, f"Listing the messages of {self.folder!r}"):
            if self.mailbox.incoming.after_import == "mark_read":
                uids = self._list_for_mark_read(above, floor)
            else:
                uids = [int(u) for u in client.search(above or ["ALL"])]
        # "n:*" always matches the highest UID, even below n: filter again
        extra = self._old_extra()
        return [f"{self._uidvalidity}/{uid}" for uid in sorted(set(uids)) if uid > floor and uid not in extra]

    # mark_read: the read mark -----------------------------------------------------------------------
    # Reading begins with the messages in the folder then: the unread ones are imported, the ones already read
    # are left alone. From then on every message that arrives is imported whether or not someone opened it
    # first in a mail client. One state key, ``read_mark:<folder>``, written in one go, holds
    #   uidvalidity, uid   messages above the UID are listed, read or not;
    #   date               (UTC) when the mark was last set;
    #   pending            every message a run listed and has not settled (the first run's backlog, say): listed
    #                      by later runs until settled, even once someone has read it.
    # ``read_known:<folder>`` keeps the Message-ID and arrival-time identities of the pending messages, for a new
    # UIDVALIDITY. At the end of each run (:meth:`settled`) the mark moves up to the newest message it settled,
    # and pending becomes what it left (--limit, a stop, a failure, not fetched). A mailbox that switches to
    # mark_read after runs with another after_import has no old mail left: what arrived since two days before
    # the last of them that settled everything it listed (``settled:<folder>``, the date) is pending. A new
    # UIDVALIDITY begins again from the folder as it is then, with these pending: the messages whose identity
    # was pending, and every message that arrived from two days before the old mark was last set; the run
    # recognises those it imported before by Message-ID and content.

    def _list_for_mark_read(self, above: list[str], floor: int) -> list[int]:
        client = self._need()
        mark, pending, began = self._read_state()
        if mark is None:
            mark, pending = self._begin_reading(floor)
        unseen = [int(u) for u in client.search(["UNSEEN", *above])]
        newer = [u for u in map(int, client.search(["UID", f"{max(mark, floor) + 1}:*"])) if u > mark]
        listed = set(unseen) | set(newer) | self._present(pending)
        if listed != pending or began is None:
            known = {found for found in self._identities(sorted(listed)).values() if found}
            self._store_set(f"read_known:{self.folder}", known)  # before the mark that names them pending
            self._write_read_mark(mark, listed, began or utc_today())
            if began is None:  # deferred by _select until reading had begun: see there
                self.state.set(f"uidvalidity:{self.folder}", str(self._uidvalidity))
        return sorted(listed)

    def _begin_reading(self, floor: int) -> tuple[int, set[int]]:
        """The mark and the pending messages when reading begins in this UIDVALIDITY (nothing is written)."""
        client = self._need()
        everything: list[int] | None = None  # SEARCH ALL, once, when needed

        def all_uids() -> list[int]:
            nonlocal everything
            if everything is None:
                everything = [int(u) for u in client.search(["ALL"])]
            return everything

        top = self._uidnext - 1
        if top <= 0:  # a server that gave no UIDNEXT
            top = max(all_uids(), default=0)
        stored = _parse_read_mark(self.state.get(f"read_mark:{self.folder}"))
        if stored is not None:  # a new UIDVALIDITY: what was pending, and what came since the mark was set
            known = self._stored_set(f"read_known:{self.folder}") or set()
            pending = {uid for uid, found in self._identities(all_uids()).items() if found in known}
            day = date.fromisoformat(stored[2] or utc_today()) - timedelta(days=2)
            pending |= {int(u) for u in client.search(["SINCE", day])}
            log.warning(
                "Mailbox %s: folder %r has a new UIDVALIDITY; %d message(s) there that were not yet settled or "
                "arrived since %s are listed, read or not; those already imported are recognised by Message-ID "
                "and content.",
                self.mailbox.name, self.folder, len(pending), day.isoformat(),
            )
        elif since := self._settled_since(f"settled:{self.folder}"):
            # runs with another after_import took what they imported out of the folder: what came since the
            # last of them settled is unfinished, read or not
            pending = {int(u) for u in client.search(["SINCE", since])}
        else:  # a new mailbox (or one read as mark_read by a version without marks): what was read stays alone
            pending = set()
        return top, {uid for uid in pending if uid > floor}

    def _present(self, uids: set[int]) -> set[int]:
        """Which of these UIDs are still in the folder."""
        found: set[int] = set()
        ordered = sorted(uids)
        for start in range(0, len(ordered), _SIZE_CHUNK):
            found.update(int(u) for u in self._need().search(["UID", _uid_set(ordered[start : start + _SIZE_CHUNK])]))
        return found & uids  # "n:m" never matches outside the range, but a server may answer loosely

    def _read_state(self) -> tuple[int | None, set[int], str | None]:
        """(mark UID, pending UIDs, date) in this UIDVALIDITY; (None, set(), None) before reading begins."""
        stored = _parse_read_mark(self.state.get(f"read_mark:{self.folder}"))
        if stored is None or stored[0] != self._uidvalidity:
            return None, set(), None
        return stored[1], stored[3], stored[2] or utc_today()

    def _read_mark(self) -> int:
        """The read mark's UID in this UIDVALIDITY; 0 when reading has not begun in it."""
        return self._read_state()[0] or 0

    def _write_read_mark(self, uid: int, pending: set[int], day: str) -> None:
        self.state.set(
            f"read_mark:{self.folder}",
            json.dumps({"uidvalidity": self._uidvalidity, "uid": uid, "date": day, "pending": _uid_set(pending)}),
        )

    def settled(self, done: Sequence[str], left: Sequence[str]) -> None:
        self._note_settled(f"settled:{self.folder}", left)
        if self.mailbox.incoming.after_import != "mark_read":
            return  # the other dispositions take the messages out of the folder
        mark, pending, day = self._read_state()
        # the mark passes what is left below it: that stays pending, listed whether read or not
        new_mark = max([mark or 0, *self._own_uids(done, "settled")])
        waiting = set(self._own_uids(left, "settled"))
        today = utc_today()
        if (new_mark, waiting, today) == (mark, pending, day):
            return
        # read_known already holds the identities of everything this run listed (written with the listing),
        # so of what is left too: kept as it is while anything is left, emptied when nothing is
        if not waiting and self.state.get(f"read_known:{self.folder}") not in (None, "[]"):
            self._store_set(f"read_known:{self.folder}", ())
        self._write_read_mark(new_mark, waiting, today)

    def count(self) -> int:
        if self._floor() or self._old_extra() or self._read_mark():
            return len(self.list_ids())
        item = b"UNSEEN" if self.mailbox.incoming.after_import == "mark_read" else b"MESSAGES"
        with self._guard(RetrievalError, f"Counting the messages of {self.folder!r}"):
            status = self._need().folder_status(self.folder, [item])
        return int(status.get(item, 0))

    def _own_uids(self, ids: Sequence[str], doing: str) -> list[int]:
        """The UIDs of ids from the current UIDVALIDITY, in the given order; others are skipped, warned."""
        uids: list[int] = []
        seen: set[int] = set()
        stale = 0
        for source_id in ids:
            validity, _, uid = source_id.partition("/")
            if validity != str(self._uidvalidity) or not uid.isdigit():
                stale += 1
                continue
            n = int(uid)
            if n not in seen:
                seen.add(n)
                uids.append(n)
        if stale:
            log.warning(
                "Mailbox %s: %d id(s) given to %s are not from folder %r's current UIDVALIDITY %s and were "
                "skipped; they are found again under new ids.",
                self.mailbox.name,
                stale,
                doing,
                self.folder,
                self._uidvalidity,
            )
        return uids

    def fetch(self, ids: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        client = self._need()
        uids = self._own_uids(ids, "fetch")
        sizes: dict[int, int] = {}
        for start in range(0, len(uids), _SIZE_CHUNK):
            chunk = uids[start : start + _SIZE_CHUNK]
            with self._guard(RetrievalError, "Reading message sizes"):
                sizes.update(_read_fetch(client, chunk, "RFC822.SIZE"))
        present = [uid for uid in uids if uid in sizes]
        if len(present) < len(uids):
            log.info(
                "Mailbox %s: %d message(s) vanished before fetching.",
                self.mailbox.name,
                len(uids) - len(present),
            )
        for batch in self._batches(present, sizes):
            with self._guard(RetrievalError, f"Fetching {len(batch)} message(s) from {self.folder!r}"):
                answer = _read_fetch(client, batch, "BODY.PEEK[]")
            for uid in batch:
                raw = answer.get(uid)
                if raw is None:
                    log.info("Mailbox %s: message UID %d vanished while fetching.", self.mailbox.name, uid)
                    continue
                yield f"{self._uidvalidity}/{uid}", bytes(raw)

    def _batches(self, uids: list[int], sizes: dict[int, int]) -> Iterator[list[int]]:
        max_count = max(1, self.mailbox.incoming.batch_size)
        max_bytes = max(1, int(self.mailbox.incoming.batch_mb * 1024 * 1024))
        batch: list[int] = []
        total = 0
        for uid in uids:
            size = sizes.get(uid, 0)
            if batch and (len(batch) >= max_count or total + size > max_bytes):
                yield batch
                batch, total = [], 0
            batch.append(uid)
            total += size
        if batch:
            yield batch

    # writing ----------------------------------------------------------------------------------------
    def dispose(self, ids: Sequence[str]) -> None:
        uids = self._own_uids(ids, "dispose")
        if not uids:
            return
        client = self._need()
        action = self.mailbox.incoming.after_import
        if action == "mark_read":
            with self._guard(DisposeError, f"Marking {len(uids)} message(s) read"):
                client.add_flags(uids, [SEEN])
        elif action == "delete":
            self._require_uidplus("delete the imported messages")
            with self._guard(DisposeError, f"Deleting {len(uids)} message(s)"):
                client.add_flags(uids, [DELETED])
                client.uid_expunge(uids)
        elif action == "move_to_deleted":
            self._move(uids, self._require_deleted_folder())
        elif action == "move_to_folder":
            target = self.mailbox.incoming.move_folder
            if not target:
                raise DisposeError(
                    f"Mailbox {self.mailbox.name!r}: after_import = 'move_to_folder' needs "
                    "incoming.move_folder."
                )
            self._ensure_folder(target)
            self._move(uids, target)
        else:  # pragma: no cover - config validation allows nothing else
            raise DisposeError(f"Mailbox {self.mailbox.name!r}: unknown after_import {action!r}.")

    def quarantine(self, ids: Sequence[str]) -> None:
        uids = self._own_uids(ids, "quarantine")
        if not uids:
            return
        target = self.mailbox.incoming.quarantine_folder or "Quarantine"
        self._ensure_folder(target)
        self._move(uids, target)

    def set_watermark(self) -> None:
        client = self._need()
        with self._guard(RetrievalError, f"Finding the newest message of {self.folder!r}"):
            uids = sorted(int(u) for u in client.search(["ALL"]))
        known = {found for found in self._identities(uids).values() if found}
        top = max([*uids, self._uidnext - 1, 0])
        # in this order, so that an interruption never leaves a watermark lower than before without its list
        self._store_set(f"watermark_known:{self.folder}", known)
        self.state.set(f"watermark:{self.folder}", f"{self._uidvalidity}/{top}")
        self.state.set(f"watermark_extra:{self.folder}", "")  # the new watermark covers every message now
        log.info("Mailbox %s: messages up to UID %d of %r count as old.", self.mailbox.name, top, self.folder)

    def _move(self, uids: list[int], target: str) -> None:
        client = self._need()
        what = f"Moving {len(uids)} message(s) from {self.folder!r} to {target!r}"
        if "MOVE" in self._caps:
            with self._guard(DisposeError, what):
                client.move(uids, target)
            return
        self._require_uidplus(f"move the imported messages to {target!r}")
        with self._guard(DisposeError, what):
            client.copy(uids, target)
            client.add_flags(uids, [DELETED])
            client.uid_expunge(uids)

    def _require_uidplus(self, doing: str) -> None:
        if "UIDPLUS" in self._caps:
            return
        raise DisposeError(
            f"The IMAP server {self._where} cannot {doing}: it supports neither MOVE nor UIDPLUS, and a "
            "plain EXPUNGE would also erase every message another mail client marked deleted. Nothing was "
            "changed. "
            f'Use after_import = "mark_read" for mailbox {self.mailbox.name!r}.'
        )

    def _ensure_folder(self, name: str) -> None:
        client = self._need()
        with self._guard(DisposeError, f"Creating folder {name!r}"):
            if not client.folder_exists(name):
                client.create_folder(name)
                log.info("Mailbox %s: created folder %r on %s.", self.mailbox.name, name, self._where)

    def _find_deleted_folder(self) -> str | None:
        """The configured deleted_folder if it exists, else the \\Trash folder, else a usual name."""
        if self._deleted_folder is not None:
            return self._deleted_folder or None
        client = self._need()
        configured = self.mailbox.incoming.deleted_folder
        with self._guard(DisposeError, "Looking for the Deleted Items folder"):
            if configured:
                found = configured if client.folder_exists(configured) else None
            else:
                name = client.find_special_folder(TRASH)
                found = str(name) if name else None
        self._deleted_folder = found or ""
        return found

    def _require_deleted_folder(self) -> str:
        found = self._find_deleted_folder()
        if found:
            return found
        configured = self.mailbox.incoming.deleted_folder
        if configured:
            raise DisposeError(
                f"The deleted folder {configured!r} (incoming.deleted_folder) does not exist for {self.user} "
                f"on {self._where}. Create it, or fix incoming.deleted_folder."
            )
        raise DisposeError(
            f"No Deleted Items folder for {self.user} on {self._where}: no folder has the \\Trash attribute "
            "and none is named Trash, Deleted Items, Deleted Messages or Deleted. Set "
            "incoming.deleted_folder, or choose another after_import "
            '("delete", "move_to_folder", "mark_read").'
        )

    # diagnostics ------------------------------------------------------------------------------------
    def _open_connection(self) -> None:
        self._client = self._connect()
        self._broken = False

    def _after_login(self, report: TestReport) -> None:
        report.capabilities = sorted(self._caps)
        checks = report.checks
        try:
            self._select()
        except RetrievalError as exc:
            checks.append(
                Check(
                    name="folder",
                    ok=False,
                    detail=str(exc),
                    fix="Set incoming.folder to a folder that exists (INBOX when empty).",
                )
            )
        else:
            report.message_count = self.count()
            checks.append(
                Check(
                    name="folder",
                    ok=True,
                    detail=f"{self.folder!r}: {report.message_count} message(s) waiting, "
                    f"UIDVALIDITY {self._uidvalidity}",
                )
            )
        incoming = self.mailbox.incoming
        deleted = self._find_deleted_folder()
        report.deleted_folder = deleted or ""
        if deleted:
            checks.append(Check(name="deleted_folder", ok=True, detail=f"Deleted Items folder: {deleted!r}"))
        elif incoming.after_import == "move_to_deleted":
            try:
                self._require_deleted_folder()
            except DisposeError as exc:
                checks.append(
                    Check(
                        name="deleted_folder",
                        ok=False,
                        detail=str(exc),
                        fix="Set incoming.deleted_folder, or choose another after_import.",
                    )
                )
        if incoming.after_import in ("move_to_deleted", "delete", "move_to_folder") and not (
            {"MOVE", "UIDPLUS"} & self._caps
        ):
            checks.append(
                Check(
                    name="capabilities",
                    ok=False,
                    detail=f"{self._where} supports neither MOVE nor UIDPLUS, so imported messages cannot be "
                    "removed safely.",
                    fix='Use after_import = "mark_read".',
                )
            )
        if incoming.after_import == "move_to_folder" and incoming.move_folder:
            with self._guard(RetrievalError, "Looking for the move folder"):
                exists = self._need().folder_exists(incoming.move_folder)
            checks.append(
                Check(
                    name="move_folder",
                    ok=True,
                    detail=f"{incoming.move_folder!r} "
                    + ("exists" if exists else "will be created on first use"),
                )
            )


def _text(value: bytes | str) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


def _server_text(exc: BaseException) -> str:
    """A server's answer from an exception, without the ``b'...'`` that imapclient leaves around it."""
    text = str(exc)
    if len(text) >= 3 and text[0] == "b" and text[1] in "'\"" and text[-1] == text[1]:
        text = text[2:-1]
    return text


def _reason(exc: BaseException, timeout: float) -> str:
    return failure_reason(exc, timeout, _server_text, lost=(imaplib.IMAP4.abort,))


def _quiet_imaplib(client: IMAPClient) -> None:
    """Turn off imaplib's own protocol trace, which IMAPClient switches on at level 5.

    At that level imaplib builds a repr() of every server response, whole message literals included, before
    the logger drops it: measured on 5,000 emails (120 MB) from Dovecot, fetching took 2.3 s of CPU with the
    trace and 0.3 s without. IMAPClient's own command log (logger ``imapclient``) is not affected, and the
    trace would write message contents into debug logs anyway.
    """
    imap = getattr(client, "_imap", None)
    if imap is not None and hasattr(imap, "debug"):
        imap.debug = 0


def _quiet_shutdown(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):
        client.shutdown()


def _read_fetch(client: IMAPClient, uids: list[int], item: str) -> dict[int, Any]:
    """UID -> value of one FETCH item (``RFC822.SIZE`` or ``BODY.PEEK[]``) for the given UIDs.

    ``IMAPClient.fetch`` reads every answer through a general tokenizer, byte by byte around each literal: a
    tenth of the importer's own CPU in a bulk import. The answers a server gives to these two requests have
    one shape, read here with a regular expression; anything else in the answer (unsolicited flag changes,
    items in another order, an extra item) sends the whole answer to imapclient's parser instead.
    """
    imap = client._imap  # imapclient's imaplib connection (it has no public way to send a command raw)
    typ, data = imap.uid("FETCH", ",".join(map(str, uids)), f"(UID {item})")
    if typ != "OK":
        raise imaplib.IMAP4.error(f"FETCH failed: {data!r:.200}")
    wanted = set(uids)
    quick = _sizes_of(data) if item == "RFC822.SIZE" else _bodies_of(data)
    if quick is None:
        key = b"BODY[]" if item == "BODY.PEEK[]" else item.encode()
        parsed = parse_fetch_response(data, client.normalise_times, True)
        quick = {int(uid): fields[key] for uid, fields in parsed.items() if key in fields}
    return {uid: value for uid, value in quick.items() if uid in wanted}


def _sizes_of(data: list[Any]) -> dict[int, int] | None:
    """The answer to ``UID FETCH (UID RFC822.SIZE)``, or None when it holds anything else."""
    sizes: dict[int, int] = {}
    if data == [None]:  # imaplib's way of saying no message answered (all gone meanwhile)
        return sizes
    for line in data:
        found = _SIZE_ANSWER.fullmatch(line) if isinstance(line, bytes) else None
        if found is None:
            return None
        uid, size, size_first, uid_last = found.groups()
        sizes[int(uid or uid_last)] = int(size or size_first)
    return sizes


def _bodies_of(data: list[Any]) -> dict[int, bytes] | None:
    """The answer to ``UID FETCH (UID BODY.PEEK[])``, or None when it holds anything else.

    imaplib gives each answer as ``(b"7 (UID 12 BODY[] {1234}", literal)`` followed by the rest of its line,
    ``b")"``, or ``b" UID 12)"`` from a server that names the UID after the body.
    """
    bodies: dict[int, bytes] = {}
    if data == [None]:  # no message answered
        return bodies
    items = iter(data)
    for head in items:
        if not (isinstance(head, tuple) and len(head) == 2 and isinstance(head[1], bytes)):
            return None
        opening = _BODY_HEAD.fullmatch(head[0]) if isinstance(head[0], bytes) else None
        tail = next(items, None)
        closing = _BODY_TAIL.fullmatch(tail) if isinstance(tail, bytes) else None
        if opening is None or closing is None:
            return None
        uid_first, uid_last = opening.group(1), closing.group(1)
        if (uid_first is None) == (uid_last is None):
            return None  # no UID, or two
        bodies[int(uid_first or uid_last)] = head[1]
    return bodies


def _parse_read_mark(stored: str | None) -> tuple[int, int, str, set[int]] | None:
    """(uidvalidity, uid, date, pending) of a stored read mark; None when there is none (or it is unreadable)."""
    if not stored:
        return None
    try:
        mark = json.loads(stored)
        return int(mark["uidvalidity"]), int(mark["uid"]), str(mark.get("date", "")), _parse_uid_set(mark["pending"])
    except (ValueError, TypeError, KeyError):
        return None


def _uid_set(uids: Iterable[int]) -> str:
    """UIDs as an IMAP sequence set of ranges: ``1:5,8,10:12``."""
    out: list[str] = []
    ordered = sorted(set(uids))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return ",".join(out)


def _parse_uid_set(text: str) -> set[int]:
    uids: set[int] = set()
    for part in filter(None, text.split(",")):
        low, _, high = part.partition(":")
        if low.isdigit() and (not high or high.isdigit()):
            uids.update(range(int(low), int(high or low) + 1))
    return uids
