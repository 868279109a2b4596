"""One pass over the mailboxes: list, fetch, parse, decide, commit, then dispose (DESIGN contracts 1-5).

For each mailbox and each credential of this instance::

    ids = connector.list_ids()
    ids already committed       → dispose of them again if needed and log `duplicate` (a crash came between
                                  commit and dispose), or skip them silently when they were disposed with
                                  after_import = "mark_read"
    new ids, in batches         → fetch → parse (both cores) → one transaction per batch, one savepoint per
                                  email: ticket + action + attachments + raw message + inbound-log row + seen
                                → connector.dispose(committed ids) → mark them disposed

Nothing on the server changes before the commit. One bad email is logged with its raw bytes and retried on
the next run; after 3 failed runs it is quarantined and the run goes on. One failing mailbox is reported
and the others go on.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from halo_integrator import matching
from halo_integrator import rules as rules_mod
from halo_integrator.config import env_number
from halo_integrator.connectors import make_connector
from halo_integrator.connectors.base import Connector, MemoryState, StateView
from halo_integrator.errors import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_SECRET,
    ConfigError,
    DisposeError,
    IntegratorError,
    SecretError,
    Stop,
    StoreError,
)
from halo_integrator.store import Store, now
from halo_integrator.timeutil import stamp

if TYPE_CHECKING:
    import multiprocessing.context
    from multiprocessing.connection import Connection

    from halo_integrator.config import Config, Credential, Mailbox
    from halo_integrator.connectors.base import SecretsFactory
    from halo_integrator.mail import ParsedEmail
    from halo_integrator.outgoing.outbox import Attempt, Outbox
    from halo_integrator.prepare import Prepared

# The parser and the outgoing side load on first use: a run with nothing new to import (the common case,
# every few minutes) starts without them.

log = logging.getLogger(__name__)

QUARANTINE_AFTER_RUNS = 3
PARALLEL_MIN_BATCH = 24  # below this, a process pool costs more than it saves
PARSE_AHEAD = 1
"""Batches handed to the parse workers ahead of the one being stored: while this process stores and disposes
of one batch and fetches the next, the workers parse the next. Two ahead measured no faster on two cores and
cost about 10 MB more at the peak of a long import."""
Progress = Callable[[str, int, int], None]


# ------------------------------------------------------------------------------------- preparation


WORKER_TASKS = 5000
"""Emails each parse worker handles before the pool is replaced by a fresh one, so a long import's workers do
not keep for hours the heap their largest email once took. Not fewer: a fresh worker is slow for its first few
hundred emails (lazily loaded codecs, caches, a heap still growing), about 0.1 s of CPU each, and the
pipeline drains while the pool is swapped; at 500 that was a tenth of an IMAP import's CPU. The pool is
replaced between batches rather than with ``max_tasks_per_child``, which can stall Python 3.11's executor when
workers retire while tasks still wait. ``$INTEGRATOR_WORKER_TASKS`` overrides it."""


def _worker_tasks() -> int:
    return int(env_number("INTEGRATOR_WORKER_TASKS", WORKER_TASKS, whole=True, minimum=1))


def _worker_count() -> int:
    """Parse processes: one per core, or ``$INTEGRATOR_WORKERS`` (1 parses in this process)."""
    return int(env_number("INTEGRATOR_WORKERS", os.cpu_count() or 1, whole=True, minimum=1))


FORKSERVER_PRELOAD = [
    "halo_integrator.prepare", "nh3", "html_text", "charset_normalizer", "icalendar", "tnefparse", "zstandard",
]
"""What the fork server loads before it forks a parse worker: the parser and the libraries it loads on first
use, so a fresh worker starts warm."""


def _running_forkserver() -> multiprocessing.context.BaseContext | None:
    """The fork-server start method, its server started (when not yet running) with :data:`FORKSERVER_PRELOAD`;
    None where the platform has no fork server.

    Parse workers fork from that small server: cheap to replace, and they inherit nothing of this process (no
    database connection, no open mailbox). It is started with Ctrl-C (SIGINT) and SIGTERM masked, a mask the
    server and every worker it forks keep. A terminal sends Ctrl-C to the whole process group, and a service
    manager stopping the job (systemd) sends SIGTERM to all its processes; this way only this process answers
    them (cli/run.py, and :func:`_end_pool` for the workers), and the workers finish the batches fetched. Without
    the mask a server still loading the parser, and every idle worker, died of Ctrl-C with a traceback on the
    terminal, and of SIGTERM under the batches the run still had to store.
    """
    import multiprocessing
    from multiprocessing import forkserver, resource_tracker

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(FORKSERVER_PRELOAD)
    # The server's own start begins with the resource tracker's, which masks SIGINT and SIGTERM for its child
    # (which ignores both) and then unmasks them, whatever this thread's mask was; started first, it is running
    # and left alone.
    resource_tracker.ensure_running()
    with _stop_signals_held():
        forkserver.ensure_running()  # nothing when it already runs
    return context


@contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) and SIGTERM back until the block ends, then deliver them: not lost, and never half
    way through.

    Two things, because a signal reaches a process, not a thread: this thread's signal mask, which a process
    started in the block inherits (and keeps: see :func:`_running_forkserver`), and, in the main thread, a
    Python handler that only notes Ctrl-C, since the kernel may hand it to another thread (a progress bar's,
    the pool's) and Python would then run the usual handler here all the same (KeyboardInterrupt). For this
    process SIGTERM is held by the mask alone, so only where no other thread takes it: its handler
    (cli/run.py) only asks the run to stop, harmless anywhere, and where it has its default action (after a
    first SIGTERM) it ends the process, as a second SIGTERM should. Where there are no signal masks (Windows)
    only the handler.
    """
    import signal
    import threading

    noted: list[tuple[int, Any]] = []
    previous: Any = None
    if threading.current_thread() is threading.main_thread() and callable(signal.getsignal(signal.SIGINT)):
        previous = signal.signal(signal.SIGINT, lambda signum, frame: noted.append((signum, frame)))
    masked = hasattr(signal, "pthread_sigmask")
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if masked else None
    try:
        yield
    finally:
        if held is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)  # one held for this thread arrives now, noted
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
            if noted:
                previous(*noted[0])  # what Ctrl-C would have done: KeyboardInterrupt, or ask the run to stop


def _end_pool(executor: Executor) -> None:
    """Shut the parse workers' pool down on the way out of an interrupted run, with Ctrl-C and SIGTERM held
    back.

    The workers hold Ctrl-C back (see :func:`_running_forkserver`), so only their pool can end them: it cancels
    what they have not started and waits for what they have (a few dozen emails at most). A Ctrl-C that cut
    that wait short left the interpreter joining, at exit, workers nobody had told to stop; killing them
    instead can cut one off half way through handing back a result, and then the pool waits forever for the
    rest. So the wait is not interruptible; a Ctrl-C pressed meanwhile is delivered once it is over.
    """
    with _stop_signals_held():
        executor.shutdown(wait=True, cancel_futures=True)


def _start_forkserver() -> None:
    """Start the fork server now, without waiting for it: it loads the parser (about 0.2 s) while this
    process logs in and lists the mailbox, instead of while the first batch waits for its workers."""
    if _worker_count() < 2:
        return
    try:
        _running_forkserver()
    except Exception as exc:  # only a head start: the pool tries again when it is made, and reports failures then
        log.debug("could not start the parse workers' fork server early: %s", exc)


_importer_alive: tuple[Connection, Connection] | None = None
"""The pipe whose reading end every parse worker watches (:func:`halo_integrator.prepare.end_with`): this
process holds the writing end open, and never writes, until it ends, however it ends."""


def _pool() -> Executor | None:
    workers = _worker_count()
    if workers < 2:
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor  # with multiprocessing: not loaded by a run with nothing new

    from halo_integrator.prepare import end_with

    global _importer_alive
    if _importer_alive is None:
        _importer_alive = multiprocessing.Pipe(duplex=False)
    context = _running_forkserver() or multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=end_with, initargs=(_importer_alive[0],)
    )


# ------------------------------------------------------------------------------------------ results


@dataclass
class MailboxResult:
    mailbox: str
    credential: str
    fetched: int = 0
    created: int = 0
    updated: int = 0
    ignored: int = 0
    duplicates: int = 0
    errors: int = 0
    disposed: int = 0
    quarantined: int = 0
    seconds: float = 0.0
    error: str = ""
    error_kind: str = ""  # "config" | "secret" | "connect" | "store" | "dispose" | ...
    left: int = 0  # new emails not imported because the run was stopped early; the next run imports them
    started_at: str = field(default_factory=now)
    decisions: list[dict[str, Any]] = field(default_factory=list)  # dry runs only

    @property
    def label(self) -> str:
        """How messages name it: the mailbox, with the credential when there is one ("Support/prod")."""
        return self.mailbox + ("/" + self.credential if self.credential else "")

    def as_dict(self) -> dict[str, Any]:
        out = {
            "mailbox": self.mailbox,
            "credential": self.credential,
            "fetched": self.fetched,
            "created": self.created,
            "updated": self.updated,
            "ignored": self.ignored,
            "duplicates": self.duplicates,
            "errors": self.errors,
            "quarantined": self.quarantined,
            "disposed": self.disposed,
            "seconds": round(self.seconds, 3),
            "error": self.error or None,
            "stopped": self.left > 0,
        }
        return out


@dataclass
class RunResult:
    mailboxes: list[MailboxResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (mailbox, why)
    incoming_disabled: bool = False
    outbound: list[Attempt] = field(default_factory=list)  # send attempts of this run (outgoing/outbox.py)
    outbound_waiting: int = 0  # emails left in the outbox with [services] outgoing = false
    stopped_by: Stop | None = None  # what stopped it early, if anything: see Importer.request_stop

    @property
    def stopped(self) -> bool:
        return self.stopped_by is not None

    @property
    def exit_code(self) -> int:
        if self.stopped_by is not None:
            return self.stopped_by.exit_code
        kinds = {m.error_kind for m in self.mailboxes if m.error}
        # an email that will not be retried failed for good; one waiting for a retry is not a failure yet
        given_up = [a for a in self.outbound if a.status == "failed" and a.retry_at is None]
        if "config" in kinds:
            return EXIT_CONFIG
        if "secret" in kinds or any(a.secret_error for a in given_up):
            return EXIT_SECRET
        if kinds or given_up or any(m.errors for m in self.mailboxes):
            return EXIT_PARTIAL
        return EXIT_OK


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, ConfigError):
        return "config"
    if isinstance(exc, SecretError):
        return "secret"
    if isinstance(exc, StoreError):
        return "store"
    if isinstance(exc, DisposeError):
        return "dispose"
    return type(exc).__name__.removesuffix("Error").lower() or "error"


# ---------------------------------------------------------------------------------------- the run


class DryRunState:
    """Reads the connector's stored state, keeps writes in memory (a dry run changes nothing)."""

    def __init__(self, inner: StateView) -> None:
        self.inner = inner
        self.mem = MemoryState()

    def get(self, key: str) -> str | None:
        value = self.mem.get(key)
        return value if value is not None else self.inner.get(key)

    def set(self, key: str, value: str) -> None:
        self.mem.set(key, value)


class Importer:
    """Runs imports for a config against a store. Library-level; the CLI only renders its results."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        secrets: SecretsFactory,
        instance: str | None = None,
        dry_run: bool = False,
        limit: int | None = None,
        progress: Progress | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.secrets = secrets
        self.instance = config.instance if instance is None else instance
        self.dry_run = dry_run
        self.limit = limit
        self.progress = progress
        self.run_id: int | None = None
        self._executor: Executor | None = None
        self._executor_made = False
        self._executor_tasks = 0
        self._outbox = outbox  # None: made from the config on first use (tests pass one with a clock)
        self._attempts: list[Attempt] = []
        self.stopped_by: Stop | None = None
        self._over = False  # the run has settled its result: a stop asked for now would change nothing

    def request_stop(self, by: Stop = Stop.CTRL_C) -> bool:
        """Stop the run early, without losing or half-doing anything: the batches already fetched are stored
        and disposed of as usual, no further batch is fetched, no further mailbox is started and the outbox
        waits for the next run, which imports what is left. ``by`` says what asked: the first to ask sets the
        exit code (130 or 143), unless a second Ctrl-C then interrupts the run, which exits 130. Safe to call
        from a signal handler (it only sets what the run checks between batches). False when the run is
        already over, with its result settled: there is nothing left to stop, and its exit code stands."""
        if self._over:
            return False
        self.stopped_by = self.stopped_by or by
        return True

    @property
    def stop_requested(self) -> bool:
        return self.stopped_by is not None

    def _settle(self, result: RunResult) -> None:
        """The run is over: its result takes the stop asked for, if any, and no later request changes it."""
        self._over = True  # first: a request that lands before this line is still copied below
        result.stopped_by = self.stopped_by

    # --------------------------------------------------------------------------------- top level
    def run(self, mailbox_names: Sequence[str] = ()) -> RunResult:
        _worker_count(), _worker_tasks()  # a mistyped $INTEGRATOR_WORKERS stops the run here, not mid-import
        result = RunResult()
        mailboxes = [self.config.mailbox(n) for n in mailbox_names] if mailbox_names else list(self.config.mailboxes)
        if not self.config.services.incoming:
            result.incoming_disabled = True
            self._send_outgoing(None, result)
            self._settle(result)  # asked to stop while the outbox was sent: says so, as a run that imports does
            return result
        from halo_integrator.credentials import split_warnings

        for text in split_warnings(self.config, [m.name for m in mailboxes]):
            log.warning("%s", text)
        if not self.dry_run:
            self.run_id = self.store.start_run(instance=self.instance, dry_run=False)
        try:
            for mailbox in mailboxes:
                if self.stop_requested:
                    result.skipped.append((mailbox.name, "not started, the run was stopped"))
                    continue
                pairs = self.config.read_credentials(mailbox, self.instance)
                if not pairs:
                    why = (
                        f"no credential for instance {self.instance!r}"
                        if self.instance
                        else "no credential without an instance"
                    )
                    result.skipped.append((mailbox.name, why))
                    if not self.dry_run:
                        with self.store.transaction():
                            self.store.log_inbound(
                                mailbox=mailbox.name,
                                credential="",
                                status="ignored",
                                detail=f"Mailbox skipped: {why}; this instance processes no mail from it.",
                                run_id=self.run_id,
                            )
                    continue
                for credential in pairs:
                    if self.stop_requested:
                        why = f"credential {credential.name} not started, the run was stopped"
                        result.skipped.append((mailbox.name, why))
                        continue
                    res = self.import_mailbox(mailbox, credential)
                    result.mailboxes.append(res)
            if not self.dry_run:
                self._alerts()
            if self.stop_requested:
                log.info("run stopped on request; the outbox is sent by the next run")
            else:
                self._send_outgoing(None, result)  # retries, replies, alerts, mailboxes whose import failed
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                self.stopped_by = Stop.CTRL_C  # a second Ctrl-C: the run record says 130, as the command exits
            if self._executor is not None:
                _end_pool(self._executor)
                self._executor = None
            raise
        finally:
            self._settle(result)
            if self._executor is not None:
                self._executor.shutdown(cancel_futures=True)
            if self.run_id is not None:
                self.store.finish_run(self.run_id, result.exit_code)
                self.store.prune_logs(self.config.logs.keep_days)
        return result

    def import_mailbox(self, mailbox: Mailbox, credential: Credential | None) -> MailboxResult:
        cred_name = credential.name if credential else ""
        res = MailboxResult(mailbox=mailbox.name, credential=cred_name)
        start = time.perf_counter()
        state: StateView = self.store.state_view(mailbox.name, cred_name)
        if self.dry_run:
            state = DryRunState(state)
        try:
            if not self.dry_run and not self.store.has_history(mailbox.name, cred_name):
                # the first run of a mailbox imports what is already in it, often a backlog for the parse workers
                # (not after `mailbox add --only-new`, which left all of that alone)
                _start_forkserver()
            connector = make_connector(
                mailbox,
                credential,
                config=self.config,
                secrets=self.secrets(mailbox, credential),
                state=state,
            )
            with connector:
                self._import(connector, mailbox, cred_name, res)
        except IntegratorError as exc:
            res.error = str(exc)
            res.error_kind = _error_kind(exc)
            log.info("%s: %s", mailbox.name, exc)  # reported once, by the caller, from res.error
        except Exception as exc:  # a bug must not stop the other mailboxes
            res.error = f"Unexpected {type(exc).__name__}: {exc}. Please report this with `integrator logs`."
            res.error_kind = "internal"
            log.exception("%s: unexpected error", mailbox.name)
        res.seconds = time.perf_counter() - start
        if not self.dry_run and self.run_id is not None:
            try:
                self.store.record_mailbox_run(self.run_id, {**res.as_dict(), "started_at": res.started_at})
            except StoreError as exc:
                log.error("could not record the run of %s: %s", mailbox.name, exc)
        return res

    # ---------------------------------------------------------------------------------- one mailbox
    def _import(self, conn: Connector, mailbox: Mailbox, cred: str, res: MailboxResult) -> None:
        ids = conn.list_ids()
        if not self.dry_run:
            settled = self.store.settle_disposed(mailbox.name, cred, set(ids))
            if settled:
                log.info(
                    "%s: %d email(s) that a run ended half way had already disposed of on the server are now "
                    "recorded as disposed of", mailbox.name, len(settled),
                )
        known = self.store.seen_states(mailbox.name, cred, ids)
        if known:
            self._finish_known(conn, mailbox, cred, ids, known, res)
        new_ids = [i for i in ids if i not in known]
        if self.limit is not None:
            new_ids = new_ids[: self.limit]
        total = len(new_ids)
        size = max(1, mailbox.incoming.batch_size)
        chunks = [new_ids[start : start + size] for start in range(0, total, size)]
        # A pipeline: the batches fetched last are parsed by the worker processes while this process stores
        # the oldest one, disposes of it on the server and fetches the next.
        ahead: deque[tuple[int, Iterator[tuple[str, Prepared]]]] = deque()  # (emails asked for, parsed)
        done = 0
        finished = set(known)  # known, or committed and disposed of, or quarantined

        def finish_oldest() -> None:
            nonlocal done
            count, prepared = ahead.popleft()
            finished.update(self._finish_batch(conn, mailbox, cred, res, prepared))
            done += count
            if self.progress:
                self.progress(mailbox.name, done, total)

        for index, chunk in enumerate(chunks):
            if self.stop_requested:  # what is fetched is still stored and disposed of below
                res.left = total - index * size
                break
            try:
                raws = list(conn.fetch(chunk))
            except IntegratorError:
                self._finish_after_fetch_error(conn, mailbox, cred, res, ahead)
                raise  # the fetch error is what the admin needs to see
            res.fetched += len(raws)
            ahead.append((len(chunk), self._prepare_all(raws)))
            if len(ahead) > PARSE_AHEAD:
                finish_oldest()
        while ahead:
            finish_oldest()
        if not self.dry_run:  # what was left (--limit, a stop, a failure, not fetched) is listed again
            try:
                conn.settled([i for i in ids if i in finished], [i for i in ids if i not in finished])
            except IntegratorError as exc:  # the listing's own record keeps it all listed: nothing is lost
                log.warning("%s: could not record what this run settled (%s); the next run lists it again.",
                            mailbox.name, exc)

    def _finish_after_fetch_error(
        self, conn: Connector, mailbox: Mailbox, cred: str, res: MailboxResult,
        ahead: deque[tuple[int, Iterator[tuple[str, Prepared]]]],
    ) -> None:
        """What was fetched before a fetch failed is still imported; its disposal, on the same broken
        connection, may fail too, and the next run finishes it."""
        while ahead:
            _, prepared = ahead.popleft()
            try:
                self._finish_batch(conn, mailbox, cred, res, prepared)
            except IntegratorError as exc:
                log.info("%s: after the fetch failed: %s (the next run finishes it)", mailbox.name, exc)

    def _finish_batch(
        self, conn: Connector, mailbox: Mailbox, cred: str, res: MailboxResult,
        prepared_batch: Iterator[tuple[str, Prepared]],
    ) -> list[str]:
        """Store one batch in one transaction, then dispose of what was committed (never before). Returns the
        ids now settled: committed and disposed of, or quarantined."""
        if self.dry_run:
            for source_id, prepared in prepared_batch:
                res.decisions.append(self._dry_decision(mailbox, source_id, prepared))
            return []
        committed: list[str] = []
        quarantine: list[str] = []
        with self.store.transaction():
            for source_id, prepared in prepared_batch:
                outcome = self._store_one(mailbox, cred, source_id, prepared, res)
                if outcome == "quarantine":
                    quarantine.append(source_id)
                elif outcome == "committed":
                    committed.append(source_id)
            self.store.clear_failures(mailbox.name, cred, committed)  # one statement for the batch
            _fault("before_commit")
        _fault("after_commit")
        if self._executor_made:  # a long import: the batch's emails are freed, hand their memory back
            from halo_integrator.prepare import release_memory

            release_memory()
        if committed:
            conn.dispose(committed)
            _fault("after_dispose")
            self.store.mark_disposed(mailbox.name, cred, committed)
            res.disposed += len(committed)
        if quarantine:
            try:
                conn.quarantine(quarantine)
            except IntegratorError as exc:
                log.warning("%s: could not move quarantined emails: %s", mailbox.name, exc)
        self._send_outgoing(mailbox.name)  # this batch's acknowledgements, now that they are committed
        return [*committed, *quarantine]

    def _finish_known(
        self,
        conn: Connector,
        mailbox: Mailbox,
        cred: str,
        ids: Sequence[str],
        known: dict[str, str],
        res: MailboxResult,
    ) -> None:
        """Messages already committed but still listed: finish their disposal (never import them again)."""
        redo = []
        for source_id in ids:
            state = known.get(source_id)
            if state is None or state in ("quarantined", "skipped"):
                continue  # quarantined, or left alone by `mailbox add --only-new`
            if state == "disposed" and mailbox.incoming.after_import == "mark_read":
                continue  # still on the server by design
            redo.append(source_id)
        if not redo:
            return
        res.duplicates += len(redo)
        if self.dry_run:
            for source_id in redo:
                res.decisions.append(
                    {"mailbox": mailbox.name, "source_id": source_id, "outcome": "duplicate",
                     "reason": "already imported; the server copy would be disposed of"}
                )
            return
        with self.store.transaction():
            for source_id in redo:
                entry = self.store.seen_entry(mailbox.name, cred, source_id) or {}
                self.store.log_inbound(
                    mailbox=mailbox.name,
                    credential=cred,
                    source_id=source_id,
                    status="duplicate",
                    ticket_id=entry.get("ticket_id"),
                    detail=f"Already imported (inbound log #{entry.get('log_id')}); finishing the disposal "
                    f"({mailbox.incoming.after_import}) that an earlier run did not complete.",
                    run_id=self.run_id,
                )
        conn.dispose(redo)
        self.store.mark_disposed(mailbox.name, cred, redo)
        res.disposed += len(redo)

    def _prepare_all(self, raws: list[tuple[str, bytes]]) -> Iterator[tuple[str, Prepared]]:
        """Parse a batch: handed to the worker processes at once (they start before this returns), or parsed
        here, lazily, when the batch is small or there is one core."""
        from halo_integrator.prepare import prepare

        if len(raws) >= PARALLEL_MIN_BATCH:
            if not self._executor_made:
                self._executor_made = True
                self._executor = _pool()
            elif self._executor is not None and self._executor_tasks >= _worker_tasks() * _worker_count():
                # a fresh pool once the retiring one has finished the batches it holds (their results stay
                # readable): letting both run at once would cost the memory of two pools
                self._executor.shutdown(wait=True)
                self._executor = _pool()
                self._executor_tasks = 0
            if self._executor is not None:
                self._executor_tasks += len(raws)
                # about four chunks of the batch per worker: each task costs the pool a round trip and a wake-up
                # of its threads, so fewer, bigger ones, while still enough to even out the load at the end
                chunk = max(1, len(raws) // (4 * _worker_count()))
                # the pool starts its workers in here: a Ctrl-C in the middle would leave one half started, to
                # die with a traceback when this process exits; held, it ends the run once they are up
                with _stop_signals_held():
                    results = self._executor.map(prepare, [r for _, r in raws], chunksize=chunk)
                return zip((source_id for source_id, _ in raws), results, strict=True)
        return ((source_id, prepare(raw)) for source_id, raw in raws)

    # ---------------------------------------------------------------------------------- decisions
    def decide(self, mailbox: Mailbox, email: ParsedEmail, raw_size: int, *, checks: bool = True) -> dict[str, Any]:
        """What to do with one email, and why. Reads the store, never writes it.

        The decision is a plain dict kept in the inbound log: ``outcome`` (an inbound-log status), ``reason``
        (one sentence), ``ticket_id``, ``rules`` (which matched and what they set), ``thread`` (the threading
        evidence), ``loop`` (the auto-reply / bounce verdict), ``fields`` for a new ticket, ``linked_ticket_id``,
        ``kind`` of the action (email_in or note) and ``acknowledge``.
        ``checks=False`` leaves out the size limit and the loop throttle (`quarantine release`).
        """
        inc = mailbox.incoming
        decision: dict[str, Any] = {
            "loop": None, "thread": None, "rules": None, "outcome": "", "reason": "", "acknowledge": False,
        }
        if raw_size == 0:
            decision.update(outcome="ignored", reason="The file is empty: there is no email to import.")
            return decision
        if checks and raw_size > inc.max_email_mb * 1024 * 1024:
            decision.update(
                outcome="quarantined",
                reason=f"The email is {raw_size / 1048576:.1f} MB, over this mailbox's limit of "
                f"{inc.max_email_mb:g} MB (incoming.max_email_mb); kept raw in the store.",
                too_big=True,
            )
            return decision
        dup = self.store.find_by_fingerprint(email.fingerprint)
        if dup:
            decision.update(
                outcome="duplicate",
                ticket_id=dup[0],
                reason=f"The same email (Message-ID and content) is already ticket {dup[0]}'s action {dup[1]}.",
            )
            return decision
        ruled = rules_mod.evaluate((*self.config.rules, *mailbox.rules), email)
        decision["rules"] = ruled.as_dict()
        if ruled.ignore_rule:
            decision.update(outcome="ignored", reason=f"Rule {ruled.ignore_rule!r} ignores it.")
            return decision
        evidence = self.find_thread(mailbox, email, ruled)
        decision["thread"] = evidence.as_dict()
        loop = ""
        if email.bounce:
            loop = f"bounce: {email.bounce}"
        elif email.auto_reply:
            loop = f"auto-reply: {email.auto_reply}"
        decision["loop"] = loop or None
        sender = email.sender.address
        if evidence.ticket_id is not None:
            return self._decide_update(mailbox, email, evidence, loop, ruled, decision)
        if loop:
            decision.update(
                outcome="bounce" if email.bounce else "auto_reply",
                reason=f"{loop}; it matches no ticket, so it opens none (kept in the store).",
            )
            return decision
        excluded = self.exclusion(sender)
        if excluded:
            decision.update(outcome="ignored", reason=f"The sender {sender} {excluded}; it opens no ticket.")
            return decision
        if not inc.log_new_tickets:
            decision.update(
                outcome="ignored",
                reason="It matches no ticket and this mailbox does not log new tickets (incoming.log_new_tickets).",
            )
            return decision
        if checks and inc.sender_limit and sender:
            throttled = self._throttle(mailbox, email)
            if throttled:
                decision.update(throttled)
                return decision
        self._new_ticket(mailbox, ruled, decision, evidence.detail)
        return decision

    def _throttle(self, mailbox: Mailbox, email: ParsedEmail) -> dict[str, Any] | None:
        """The loop throttle: too many new tickets from one sender, or from one domain with the same subject
        (an auto-responder whose address changes every time), within the window."""
        inc = mailbox.incoming
        sender = email.sender.address
        since = stamp(datetime.now(UTC) - timedelta(minutes=inc.sender_window_minutes))
        opened = self.store.tickets_opened_by(sender, since)
        key, what = sender, f"{sender} already opened {opened} tickets"
        if opened < inc.sender_limit and "@" in sender:
            domain = sender.rpartition("@")[2]
            subject = matching.clean_subject(email.subject, inc.ticket_tag)
            opened = self.store.tickets_opened_like(domain, subject, since)
            key, what = f"@{domain}", f"senders at {domain} already opened {opened} tickets titled {subject!r}"
        if opened < inc.sender_limit:
            return None
        first = not self.store.throttle_reported(mailbox.name, key, since)
        if first:
            log.warning("%s: loop throttle: %s; quarantining more of them", mailbox.name, what)
        return {
            "outcome": "quarantined",
            "throttle": key,
            "reported": first,
            "reason": f"{what} in the last {inc.sender_window_minutes} minutes (incoming.sender_limit = "
            f"{inc.sender_limit}); this looks like a mail loop, so it is quarantined instead of opening another. "
            "`integrator quarantine release` imports it.",
        }

    def _new_ticket(
        self, mailbox: Mailbox, ruled: rules_mod.RuleOutcome, decision: dict[str, Any], reason: str
    ) -> None:
        inc = mailbox.incoming
        fields = {"type": inc.default_type, "priority": inc.default_priority, "status": inc.default_status}
        fields.update(ruled.fields)
        decision.update(
            outcome="created",
            reason=reason,
            fields={k: v for k, v in fields.items() if v},
            acknowledge=ruled.acknowledge,
        )

    def _decide_update(
        self,
        mailbox: Mailbox,
        email: ParsedEmail,
        evidence: matching.ThreadEvidence,
        loop: str,
        ruled: rules_mod.RuleOutcome,
        decision: dict[str, Any],
    ) -> dict[str, Any]:
        inc = mailbox.incoming
        ticket_id = evidence.ticket_id
        assert ticket_id is not None
        if loop:
            decision.update(
                outcome="bounce" if email.bounce else "auto_reply",
                ticket_id=ticket_id,
                kind="note" if email.bounce else "email_in",
                reason=f"{loop}; added to ticket {ticket_id} ({evidence.detail}) "
                f"{'as a note ' if email.bounce else ''}without reopening it or acknowledging.",
            )
            return decision
        # a rule that extracts a ticket number is the admin vouching for that sender: no hijack check
        if evidence.how in ("subject_tag", "body_tag") and email.sender.address not in (
            self.store.ticket_participants(ticket_id)
        ):
            choice = inc.unknown_sender_on_tag
            who = email.sender.address or "(no sender)"
            if choice == "ignore":
                decision.update(
                    outcome="ignored",
                    reason=f"{evidence.detail}, but {who} is neither its requester nor anyone on it "
                    "(incoming.unknown_sender_on_tag = \"ignore\").",
                )
                return decision
            if choice == "new_linked":
                self._new_ticket(mailbox, ruled, decision, (
                    f"{evidence.detail}, but {who} is neither its requester nor anyone on it, so it opens a new "
                    f"ticket linked to ticket {ticket_id} (incoming.unknown_sender_on_tag)"
                ))
                decision["linked_ticket_id"] = ticket_id
                return decision
        if not inc.update_existing:
            decision.update(
                outcome="ignored",
                reason=f"{evidence.detail}; updates to existing tickets are off (incoming.update_existing).",
            )
            return decision
        if self.store.ticket_status(ticket_id) == "closed":
            choice = inc.closed_ticket_reply
            if choice == "ignore":
                decision.update(
                    outcome="ignored",
                    reason=f"{evidence.detail}; the ticket is closed (incoming.closed_ticket_reply = \"ignore\").",
                )
                return decision
            if choice == "new_linked":
                self._new_ticket(mailbox, ruled, decision, (
                    f"{evidence.detail}; the ticket is closed, so this opens a new ticket linked to it "
                    "(incoming.closed_ticket_reply)"
                ))
                decision["linked_ticket_id"] = ticket_id
                return decision
            decision["reopen"] = True
        reason = evidence.detail + ("; the ticket was closed and is reopened" if decision.get("reopen") else "")
        decision.update(outcome="updated", ticket_id=ticket_id, reason=reason)
        return decision

    def exclusion(self, address: str) -> str | None:
        """Why a sender may not open tickets (our own addresses, [exclusions]), or None."""
        if not address:
            return None
        address = address.lower()
        if address in self.config.own_addresses():
            return "is one of our own mailboxes"
        if address in {a.lower() for a in self.config.exclusions.addresses}:
            return "is in [exclusions] addresses"
        for pattern in self.config.exclusions.patterns:
            if rules_mod.compiled(pattern, False).search(address):
                return f"matches the exclusion pattern {pattern!r}"
        return None

    def find_thread(
        self, mailbox: Mailbox, email: ParsedEmail, ruled: rules_mod.RuleOutcome | None = None
    ) -> matching.ThreadEvidence:
        tag = mailbox.incoming.ticket_tag
        missing: list[int] = []
        if ruled is not None and ruled.ticket_number is not None:
            if self.store.ticket_status(ruled.ticket_number) is not None:
                return matching.ThreadEvidence(
                    ruled.ticket_number, "rule",
                    f"rule {ruled.ticket_number_rule!r} found ticket number {ruled.ticket_number}",
                )
            missing.append(ruled.ticket_number)
        sources = [("subject_tag", email.subject)]
        if mailbox.incoming.search_body_for_tag:
            sources.append(("body_tag", email.text_body[:20000]))
        for how, text in sources:
            for number in matching.find_ticket_numbers(text, tag):
                if self.store.ticket_status(number) is not None:
                    where = "subject" if how == "subject_tag" else "body"
                    return matching.ThreadEvidence(
                        number, how, f"ticket tag {matching.format_tag(tag, number)} in the {where}"
                    )
                missing.append(number)
        if email.in_reply_to:
            hit = self.store.ticket_for_message_ids(email.in_reply_to)
            if hit:
                return matching.ThreadEvidence(hit[0], "in_reply_to", f"In-Reply-To <{hit[1]}> is on ticket {hit[0]}")
        if email.references:
            hit = self.store.ticket_for_message_ids(reversed(email.references))
            if hit:
                return matching.ThreadEvidence(hit[0], "references", f"References <{hit[1]}> is on ticket {hit[0]}")
        if email.bounce:
            hit = self._bounced_original(email)
            if hit:
                return matching.ThreadEvidence(
                    hit[0], "bounced_original", f"the bounced email <{hit[1]}> is on ticket {hit[0]}"
                )
        detail = "no ticket tag, In-Reply-To or References matched a ticket"
        if missing:
            detail = f"the tag names ticket {missing[0]}, which does not exist; {detail}"
        return matching.ThreadEvidence(None, "none", detail)

    def _bounced_original(self, email: ParsedEmail) -> tuple[int, str] | None:
        """The ticket of the email a bounce returns, from the ids the parser read off its attached original."""
        return self.store.ticket_for_message_ids(email.returned_ids) if email.returned_ids else None

    def _dry_decision(self, mailbox: Mailbox, source_id: str, prepared: Prepared) -> dict[str, Any]:
        decision = self.decide(mailbox, prepared.email, prepared.raw.size)
        return {
            "mailbox": mailbox.name,
            "source_id": source_id,
            "subject": prepared.email.subject,
            "sender": str(prepared.email.sender),
            "message_id": prepared.email.message_id,
            **decision,
        }

    # ------------------------------------------------------------------------ after-the-fact work
    def simulate(self, mailbox: Mailbox, raw: bytes, source_id: str = "") -> dict[str, Any]:
        """The decision a run would make for these bytes now; changes nothing."""
        from halo_integrator.prepare import prepare

        return self._dry_decision(mailbox, source_id, prepare(raw))

    def reimport(self, entry: dict[str, Any], *, force: bool) -> dict[str, Any]:
        """Import a quarantined email from its stored raw bytes (the server copy stays where it is).

        ``force`` (`quarantine release`) leaves out the checks that quarantine an email (size, loop throttle);
        without it (`quarantine retry`) the email is decided again as a run would.
        """
        mailbox = self.config.mailbox(entry["mailbox"])
        from halo_integrator.prepare import prepare

        prepared = prepare(self.store.raw_message(int(entry["raw_id"])))
        cred = entry.get("credential") or ""
        with self.store.transaction():
            decision = self.decide(mailbox, prepared.email, prepared.raw.size, checks=not force)
            if decision["outcome"] == "quarantined":
                return decision
            raw_id = self.store.save_raw(prepared.raw)
            ticket_id, action_id = self._apply(mailbox, prepared.email, raw_id, decision)
            how = "released" if force else "retried"
            decision["reason"] = (
                f"{how.capitalize()} from quarantine (inbound log #{entry['id']}): {decision['reason']}"
            )
            self.store.log_inbound(
                mailbox=mailbox.name, credential=cred, source_id=entry.get("source_id"), status=decision["outcome"],
                email=prepared.email, ticket_id=ticket_id, action_id=action_id, raw_id=raw_id,
                detail=decision["reason"], decision=decision,
            )
            if entry.get("source_id"):
                self.store.set_seen_state(mailbox.name, cred, entry["source_id"], how)
        return decision

    def reprocess(self, *, ticket_id: int | None = None, since: str | None = None, dry_run: bool = False) -> int:
        """Parse the stored raw bytes of imported emails again (after a parser fix) and refresh what their
        actions show. Tickets, threading and the mailboxes are not touched. Returns how many were refreshed."""
        rows = self.store.actions_to_reprocess(ticket_id=ticket_id, since=since)
        if dry_run:
            return len(rows)
        from halo_integrator.mail import parse

        for start in range(0, len(rows), 200):
            with self.store.transaction():
                for row in rows[start : start + 200]:
                    email = parse(self.store.raw_message(int(row["raw_id"])))
                    self.store.replace_action_content(int(row["id"]), email)
        return len(rows)

    # ------------------------------------------------------------------------------------- storing
    def _store_one(
        self, mailbox: Mailbox, cred: str, source_id: str, prepared: Prepared, res: MailboxResult
    ) -> str:
        """Store one email inside the batch transaction. Returns committed | quarantine | failed."""
        email = prepared.email
        try:
            with self.store.transaction():
                raw_id = self.store.save_raw(prepared.raw)
                decision = self.decide(mailbox, email, prepared.raw.size)
                outcome = decision["outcome"]
                if outcome == "quarantined":
                    log_id = self.store.log_inbound(
                        mailbox=mailbox.name, credential=cred, source_id=source_id, status="quarantined",
                        email=email, raw_id=raw_id, detail=decision["reason"], decision=decision, run_id=self.run_id,
                    )
                    self.store.mark_seen(mailbox.name, cred, source_id, "quarantined", log_id=log_id)
                    if decision.get("too_big"):
                        self._tell_too_big(mailbox, email, prepared.raw.size)
                    res.quarantined += 1
                    return "quarantine"
                ticket_id, action_id = self._apply(mailbox, email, raw_id, decision)
                if outcome == "created" and ticket_id is not None:
                    self._acknowledge(mailbox, email, ticket_id, decision)
                log_id = self.store.log_inbound(
                    mailbox=mailbox.name, credential=cred, source_id=source_id, status=outcome, email=email,
                    ticket_id=ticket_id, action_id=action_id, raw_id=raw_id, detail=decision["reason"],
                    decision=decision, run_id=self.run_id,
                )
                self.store.mark_seen(mailbox.name, cred, source_id, "committed", log_id=log_id, ticket_id=ticket_id)
        except StoreError as exc:
            if _is_fatal_store_error(exc):
                raise
            return self._failed(mailbox, cred, source_id, prepared, str(exc), res)
        except Exception as exc:  # one bad email never blocks the mailbox
            log.exception("%s: could not store %s", mailbox.name, source_id)
            return self._failed(mailbox, cred, source_id, prepared, f"{type(exc).__name__}: {exc}", res)
        if outcome == "created":
            res.created += 1
        elif outcome == "updated":
            res.updated += 1
        elif outcome == "duplicate":
            res.duplicates += 1
        else:
            res.ignored += 1
        return "committed"

    def _apply(
        self, mailbox: Mailbox, email: ParsedEmail, raw_id: int, decision: dict[str, Any]
    ) -> tuple[int | None, int | None]:
        """Create or update the ticket a decision names; returns (ticket_id, action_id)."""
        outcome = decision["outcome"]
        when = now()
        if outcome == "created":
            ticket_id = self.store.create_ticket(
                subject=matching.clean_subject(email.subject, mailbox.incoming.ticket_tag),
                mailbox=mailbox.name,
                requester_name=email.sender.name,
                requester_email=email.sender.address,
                time=when,
                linked_ticket_id=decision.get("linked_ticket_id"),
                **decision.get("fields", {}),
            )
            decision["ticket_id"] = ticket_id
        elif outcome in ("updated", "auto_reply", "bounce") and decision.get("ticket_id") is not None:
            ticket_id = int(decision["ticket_id"])
            self.store.touch_ticket(ticket_id, when, status="open" if decision.get("reopen") else None)
        else:
            return (decision.get("ticket_id"), None)
        action_id = self.store.add_email_action(
            ticket_id=ticket_id, kind=decision.get("kind", "email_in"), mailbox=mailbox.name, email=email,
            raw_id=raw_id, time=when,
        )
        return ticket_id, action_id

    # -------------------------------------------------------------------- outgoing (outgoing/outbox.py)
    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            from halo_integrator.outgoing.outbox import Outbox

            self._outbox = Outbox(self.config, self.store, secrets=self.secrets, instance=self.instance)
        return self._outbox

    def _acknowledge(self, mailbox: Mailbox, email: ParsedEmail, ticket_id: int, decision: dict[str, Any]) -> None:
        """Queue the acknowledgement of a new ticket (or log why none goes), inside the ticket's savepoint."""
        subject = matching.clean_subject(email.subject, mailbox.incoming.ticket_tag)
        self.outbox.acknowledge(
            mailbox, email, ticket_id, subject=subject, turned_off_by_rule=not decision.get("acknowledge", True)
        )

    def _tell_too_big(self, mailbox: Mailbox, email: ParsedEmail, size: int) -> None:
        """With incoming.tell_sender_when_too_big, a short notice to the sender of an email quarantined for
        its size (outgoing/outbox.py)."""
        if mailbox.incoming.tell_sender_when_too_big:  # otherwise the outgoing side need not even load
            self.outbox.tell_too_big(mailbox, email, size)

    def _alerts(self) -> None:
        """Open or close incidents and queue their one email each (alerts.py); never fails the run."""
        from halo_integrator import alerts

        try:
            # this run's mailbox results are recorded by now, so "failed N runs in a row" includes it
            alerts.notify(self.config, self.store, lambda: self.outbox, now=now())
        except Exception:
            log.exception("could not check for alerts")

    def _send_outgoing(self, mailbox: str | None, result: RunResult | None = None) -> None:
        """Send what is due in the outbox (one mailbox's, or all); a failure here never fails the import."""
        if self.dry_run:
            return
        if self._outbox is None and not self.store.outbound_pending():
            return  # nothing waits: the outgoing side is not even loaded
        try:
            attempts = self.outbox.send_due(mailbox=mailbox)
            self._attempts.extend(attempts)
            if result is not None:
                result.outbound = list(self._attempts)
                if not self.outbox.enabled:
                    result.outbound_waiting = self.store.outbound_pending()
                    if result.outbound_waiting:
                        log.warning(
                            "The outgoing service is off ([services] outgoing = false): %d email(s) wait in the "
                            "outbox and nothing was sent. Set it to true to send them; `integrator outbox list` "
                            "shows them.",
                            result.outbound_waiting,
                        )
        except Exception:  # the emails stay queued; the next run tries again
            log.exception("could not send the queued emails%s", f" of {mailbox}" if mailbox else "")

    def _failed(
        self, mailbox: Mailbox, cred: str, source_id: str, prepared: Prepared, error: str, res: MailboxResult
    ) -> str:
        """Record a failure outside the rolled-back savepoint; quarantine after 3 failed runs."""
        with self.store.transaction():
            raw_id = self.store.save_raw(prepared.raw)
            attempts = self.store.record_failure(mailbox.name, cred, source_id, error, self.run_id, raw_id)
            if attempts >= QUARANTINE_AFTER_RUNS:
                log_id = self.store.log_inbound(
                    mailbox=mailbox.name, credential=cred, source_id=source_id, status="quarantined",
                    email=prepared.email, raw_id=raw_id, run_id=self.run_id,
                    detail=f"Failed {attempts} runs in a row ({error}); quarantined with its raw bytes kept. "
                    "`integrator quarantine retry` tries again after a fix.",
                )
                self.store.mark_seen(mailbox.name, cred, source_id, "quarantined", log_id=log_id)
                res.quarantined += 1
                return "quarantine"
            self.store.log_inbound(
                mailbox=mailbox.name, credential=cred, source_id=source_id, status="error", email=prepared.email,
                raw_id=raw_id, run_id=self.run_id,
                detail=f"Could not import ({error}); failed run {attempts} of {QUARANTINE_AFTER_RUNS}, it stays "
                "in the mailbox and is tried again next run.",
            )
        res.errors += 1
        return "failed"


def _fault(point: str) -> None:
    """Crash-test hook: ``INTEGRATOR_FAULT=before_commit|after_commit|after_dispose`` ends the process
    abruptly there.

    The tests use it to prove contract 1 (a crash at any point loses nothing and duplicates nothing); it
    does nothing unless that variable is set.
    """
    if os.environ.get("INTEGRATOR_FAULT") == point:
        os._exit(86)


def _is_fatal_store_error(exc: StoreError) -> bool:
    text = str(exc).lower()
    return any(word in text for word in ("locked", "full", "damaged", "cannot write"))
