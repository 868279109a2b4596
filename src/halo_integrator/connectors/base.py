"""The connector contract: how the importer reads a mailbox. See ``connectors/folder.py`` for a good, simple
example.

A connector is made for one mailbox and one credential (``None`` for a folder mailbox) and is used as::

    with make_connector(mailbox, credential, config=cfg, secrets=lookup, state=state) as conn:
        ids = conn.list_ids()                   # every message waiting in the folder read, oldest first
        for source_id, raw in conn.fetch(ids):  # raw RFC 5322 bytes, in batches the connector chooses
            ...                                 # the importer commits the ticket, the raw bytes, the log row
        conn.dispose(committed_ids)             # only now: move to Deleted Items / delete / mark read

Rules every connector keeps:

* ``source_id`` is stable for the same message in the same folder across runs (IMAP
  ``"<uidvalidity>/<uid>"``, POP3 UIDL, Graph immutable id, Gmail id, EWS item id, a file name). The importer
  keeps every committed id, so a message listed again after a crash is recognised and only disposed.
* Nothing on the server changes before :meth:`dispose` or :meth:`quarantine`; fetching never marks a message
  read (IMAP ``BODY.PEEK[]``).
* ``fetch`` yields only ids it was given, skips ids that vanished meanwhile, and raises
  :class:`~halo_integrator.errors.RetrievalError` when the connection breaks; what was yielded before stays
  valid.
* ``dispose`` applies ``mailbox.incoming.after_import`` to ids that were committed; it raises
  :class:`~halo_integrator.errors.DisposeError` when that fails (the message stays, and the next run
  disposes of it without importing it again).
* Every network call has a timeout (``credential.timeout``); :meth:`close` always cleans up and never raises.
* Secrets come only through ``secrets(kind)`` and never appear in an exception message or a log line.
* ``state`` is a small persistent key/value store for this mailbox and credential (IMAP UIDVALIDITY, a
  watermark); values are strings.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from halo_integrator.errors import SecretError
from halo_integrator.timeutil import utc_today

if TYPE_CHECKING:
    from types import TracebackType

    from halo_integrator.config import Config, Credential, Mailbox

SecretLookup = Callable[[str], str]
"""``secrets("password")`` returns the secret of that kind for this mailbox/credential or raises SecretError."""

SecretsFactory = Callable[["Mailbox", "Credential | None"], SecretLookup]
"""The secrets of one mailbox's credential (the importer's and the outbox's source of secrets)."""


class StateView(Protocol):
    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str) -> None: ...


class MemoryState:
    """A StateView kept in memory (dry runs, `mailbox test`)."""

    def __init__(self, initial: dict[str, str] | None = None) -> None:
        self.values: dict[str, str] = dict(initial or {})

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def set(self, key: str, value: str) -> None:
        self.values[key] = value


DEFAULT_PORTS = {
    ("imap", "ssl"): 993,
    ("imap", "starttls"): 143,
    ("imap", "none"): 143,
    ("pop3", "ssl"): 995,
    ("pop3", "starttls"): 110,
    ("pop3", "none"): 110,
}
"""The port of each server protocol and security setting when a credential gives none."""


@dataclass(kw_only=True)
class Check:
    """One line of a connection test: what was checked, whether it passed, and what to do if not."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    secret: bool = False  # failed because of the credential (refused, missing, unreadable): the test exits 4


@dataclass(kw_only=True)
class TestReport:
    """What `integrator mailbox test` shows."""

    __test__ = False  # not a pytest class

    checks: list[Check] = field(default_factory=list)
    folder: str = ""
    deleted_folder: str = ""
    message_count: int | None = None
    capabilities: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def checks_json(self) -> list[dict[str, Any]]:
        """The checks as the commands' ``--json`` output lists them."""
        return [{"name": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix} for c in self.checks]


class Connector(ABC):
    """Base of every connector; see the module docstring for the contract."""

    kind = ""

    def __init__(
        self,
        mailbox: Mailbox,
        credential: Credential | None,
        *,
        config: Config,
        secrets: SecretLookup,
        state: StateView,
    ) -> None:
        self.mailbox = mailbox
        self.credential = credential
        self.config = config
        self.secrets = secrets
        self.state = state

    # lifecycle -------------------------------------------------------------------------------------
    @abstractmethod
    def open(self) -> None:
        """Connect and log in; raise ConnectError, SecretError or RetrievalError with a clear message."""

    @abstractmethod
    def close(self) -> None:
        """Log out and release everything; never raises."""

    def __enter__(self) -> Connector:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # reading ---------------------------------------------------------------------------------------
    @abstractmethod
    def list_ids(self) -> list[str]:
        """The ids of every message waiting to be imported, oldest first."""

    @abstractmethod
    def fetch(self, ids: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        """Yield ``(source_id, raw_bytes)`` for the given ids, without changing anything on the server."""

    def count(self) -> int:
        """How many messages wait in the folder read (for `mailbox add`)."""
        return len(self.list_ids())

    # writing ---------------------------------------------------------------------------------------
    @abstractmethod
    def dispose(self, ids: Sequence[str]) -> None:
        """Apply ``after_import`` to messages whose import is committed."""

    def quarantine(self, ids: Sequence[str]) -> None:  # noqa: B027 - optional for protocols without folders
        """Move messages that failed 3 runs to the quarantine folder, where the protocol has folders."""

    def set_watermark(self) -> None:  # noqa: B027 - optional
        """Remember that every message now in the folder is old (`mailbox add --only-new`)."""

    def settled(self, done: Sequence[str], left: Sequence[str]) -> None:  # noqa: B027 - optional
        """The end of a run's pass over this listing: ``done`` are imported and disposed of, quarantined, or
        were known already; ``left`` are not (--limit, a stop, a failure, not fetched). A connector that keeps
        messages on the server (``mark_read``) may stop listing the done ones, and must keep listing the others,
        read or not."""

    def _note_settled(self, key: str, left: Sequence[str]) -> None:
        """Keep in ``state[key]`` the date of the last run that settled everything it listed (written once a
        day): a switch to ``mark_read`` reads from two days before it (:meth:`_settled_since`)."""
        today = utc_today()
        if not left and self.state.get(key) != today:
            self.state.set(key, today)

    def _settled_since(self, key: str) -> date | None:
        """Two days before the last run that settled everything it listed, or None when none did: what arrived
        since may not be imported yet, read or not."""
        last = self.state.get(key)
        return date.fromisoformat(last) - timedelta(days=2) if last else None

    # diagnostics -----------------------------------------------------------------------------------
    def test(self) -> TestReport:
        """Connect, log in, find the folders; a report instead of an exception."""
        report = TestReport()
        try:
            self.open()
        except Exception as exc:
            refused = isinstance(exc, SecretError)
            report.checks.append(Check(name="connect", ok=False, detail=str(exc), secret=refused))
            return report
        try:
            report.checks.append(Check(name="connect", ok=True, detail="connected and logged in"))
            report.message_count = self.count()
        finally:
            self.close()
        return report
