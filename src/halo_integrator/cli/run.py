"""`integrator run` (the scheduled pass) and `integrator import MAILBOX` (the "Import emails" button)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import click

from halo_integrator.cli import output
from halo_integrator.cli.app import App
from halo_integrator.errors import Stop

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from halo_integrator.config import Credential, Mailbox
    from halo_integrator.importer import Importer, RunResult


def secrets_factory(app: App) -> Callable[[Mailbox, Credential | None], Callable[[str], str]]:
    """Secrets for connectors, from the keystore; `run` never prompts."""

    from halo_integrator.cli.credentials import keystore_for

    keystore = keystore_for(app)  # one for the whole run: the backend is found once

    def factory(mailbox: Mailbox, credential: Credential | None) -> Callable[[str], str]:
        if credential is None:

            def none(kind: str) -> str:
                raise KeyError(kind)

            return none
        return keystore.lookup(mailbox.name, credential.name)

    return factory


def _execute(
    app: App, names: Sequence[str], *, dry_run: bool, limit: int | None, as_json: bool
) -> RunResult:
    from halo_integrator.importer import Importer
    from halo_integrator.lock import RunLock

    cfg = app.config
    for name in names:
        cfg.mailbox(name)  # unknown names fail before anything starts
    if cfg.logs.file:
        output.log_to_file(cfg.resolve(cfg.logs.file))
    log.info(
        "%s started (instance %r, %s)%s", "import" if len(names) == 1 else "run", app.instance,
        ", ".join(names) or "every mailbox", " - dry run" if dry_run else "",
    )
    if dry_run and not cfg.database_path.exists():
        from pathlib import Path

        from halo_integrator.store import Store

        store = Store.open(Path(":memory:"))  # a dry run creates no database either
    else:
        store = app.store()
    progress = None
    bar: Any = None
    if output.is_terminal() and not as_json:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=output.console(stderr=True), transient=True,
        )
        tasks: dict[str, Any] = {}

        def progress(mailbox: str, done: int, total: int) -> None:
            if mailbox not in tasks:
                tasks[mailbox] = bar.add_task(mailbox, total=total)
            bar.update(tasks[mailbox], completed=done, total=total)

    importer = Importer(
        cfg, store, secrets=secrets_factory(app), instance=app.instance, dry_run=dry_run, limit=limit,
        progress=progress,
    )
    with _first_signal_stops(importer):
        if dry_run:
            result = importer.run(names)
        else:
            with RunLock(cfg.database_path):
                if bar is not None:
                    with bar:
                        result = importer.run(names)
                else:
                    result = importer.run(names)
    _log_summary(result)
    return result


STOPPING = {
    Stop.CTRL_C: "\nStopping: the emails already fetched are finished first, then the run ends. "
    "Press Ctrl-C again to stop at once (nothing committed is lost either way).\n",
    Stop.SIGTERM: "\nStopping (SIGTERM): the emails already fetched are finished first, then the run ends. "
    "A second SIGTERM stops it at once (nothing committed is lost either way).\n",
}


@contextmanager
def _first_signal_stops(importer: Importer) -> Iterator[None]:
    """The first Ctrl-C (SIGINT) or SIGTERM asks the run to stop after the batches it has fetched
    (Importer.request_stop); a second one stops it at once, as it would by default: Ctrl-C with Python's
    KeyboardInterrupt, SIGTERM by ending the process (a service manager sends SIGTERM to stop a job, and kills
    it a while later). Only in the main thread, and only for a signal with its default meaning (a job started
    with one ignored keeps ignoring it). One that lands once the run is over, its result settled, changes
    nothing and says nothing: the run exits with the code it has."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # each signal: the stop it asks for, and its default meaning
    known: dict[int, tuple[Stop, Any]] = {
        signal.SIGINT: (Stop.CTRL_C, signal.default_int_handler), signal.SIGTERM: (Stop.SIGTERM, signal.SIG_DFL),
    }
    ours = [signum for signum, (_, default) in known.items() if signal.getsignal(signum) is default]

    def first(signum: int, frame: object) -> None:
        stop, default = known[signum]
        signal.signal(signum, default)  # a second one stops the process at once, as it would by default
        if not importer.request_stop(stop):
            return  # the run is over: nothing is left to stop, and its exit code stands
        with suppress(OSError):  # a plain write: the handler may have interrupted a write to stderr
            os.write(2, STOPPING[stop].encode())

    for signum in ours:
        signal.signal(signum, first)
    try:
        yield
    finally:
        for signum in ours:
            if signum == signal.SIGINT and importer.stop_requested:
                # the run is over: a further Ctrl-C while it reports and exits would only cut the report
                # short, or kill the interpreter as it shuts down
                signal.signal(signum, signal.SIG_IGN)
            else:
                signal.signal(signum, known[signum][1])


def _log_summary(result: RunResult) -> None:
    """One line per mailbox for the diagnostic log file (and -v)."""
    if result.incoming_disabled:
        log.info("incoming service is off; nothing imported")
    for m in result.mailboxes:
        log.info(
            "%s: fetched %d, created %d, updated %d, ignored %d, duplicates %d, errors %d, quarantined %d, "
            "disposed %d in %.2f s%s", m.label, m.fetched, m.created,
            m.updated, m.ignored, m.duplicates, m.errors, m.quarantined, m.disposed, m.seconds,
            f"; failed: {m.error}" if m.error else "",
        )
    log.info("finished with exit code %d", result.exit_code)


def _render(result: RunResult, *, as_json: bool, dry_run: bool, verbose: bool) -> None:
    if as_json:
        rows: list[dict[str, Any]] = []
        for m in result.mailboxes:
            row = m.as_dict()
            if dry_run:
                row["decisions"] = m.decisions
            rows.append(row)
        for name, why in result.skipped:
            rows.append({"mailbox": name, "credential": None, "skipped": why})
        output.print_json(rows)
        return
    if result.incoming_disabled:
        output.warn(
            "The incoming service is off ([services] incoming = false), so this run imported nothing. "
            "Set it to true to import email."
        )
        return
    interactive = output.is_terminal()
    if interactive or verbose:  # under cron a skipped mailbox is a normal multi-instance setup, not news
        for name, why in result.skipped:
            output.warn(f"{name}: skipped, {why}.")
    # one line per distinct error: a keyring that is unusable for every mailbox is said once
    errors: dict[str, list[str]] = {}
    for m in result.mailboxes:
        if m.error:
            errors.setdefault(m.error, []).append(m.label)
    for message, where in errors.items():
        output.error(f"{', '.join(where)}: {message}")
    if result.stopped:
        for m in result.mailboxes:
            if m.left and dry_run:
                output.warn(f"{m.label}: stopped with {m.left} new email(s) not looked at, so no decision is shown.")
            elif m.left:
                output.warn(
                    f"{m.label}: stopped with {m.left} new email(s) not imported yet; the next run imports them."
                )
        for name, why in result.skipped:
            if not (interactive or verbose):
                output.warn(f"{name}: skipped, {why}.")
        if dry_run:
            output.warn(f"The dry run was stopped ({result.stopped_by}).")
        else:
            output.warn(
                f"The run was stopped ({result.stopped_by}). Everything it stored is kept; the next run does the rest."
            )
    if dry_run:
        output.table(
            "Dry run: nothing was changed",
            ["Mailbox", "Email", "From", "Subject", "Would be", "Ticket", "Why"],
            [
                [d["mailbox"], d.get("source_id", ""), output.short(d.get("sender"), 30),
                 output.short(d.get("subject"), 40), d.get("outcome"), d.get("ticket_id") or "",
                 output.short(d.get("reason"), 70)]
                for m in result.mailboxes for d in m.decisions
            ],
        )
    if interactive or verbose or dry_run:
        output.table(
            None,
            ["Mailbox", "Credential", "Fetched", "Created", "Updated", "Ignored", "Duplicates", "Errors",
             "Quarantined", "Disposed", "Seconds"],
            [
                [m.mailbox, m.credential or "-", m.fetched, m.created, m.updated, m.ignored, m.duplicates,
                 m.errors, m.quarantined, m.disposed, f"{m.seconds:.2f}"]
                for m in result.mailboxes
            ],
        )
    failed = sum(m.errors for m in result.mailboxes)
    if failed:
        output.warn(f"{failed} email(s) could not be imported; see `integrator logs --status error`.")


EXAMPLE_RUN = """
\b
Examples:
  integrator run                       # every mailbox (what cron runs)
  integrator run --mailbox Support --dry-run
  integrator run --json | jq '.[] | select(.errors > 0)'
"""


@click.command(epilog=EXAMPLE_RUN)
@click.option("--mailbox", "-m", "mailboxes", multiple=True, metavar="NAME", help="Only this mailbox (repeatable).")
@click.option("--dry-run", is_flag=True, help="Fetch and decide, but change nothing here or on the server.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N new emails per mailbox.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary per mailbox.")
@click.pass_obj
def run(app: App, mailboxes: tuple[str, ...], dry_run: bool, limit: int | None, as_json: bool) -> None:
    """One scheduled pass over all mailboxes: import new email into tickets.

    Each email is committed to the ticket store before it is moved to Deleted Items, so a crash loses
    nothing and imports nothing twice. Quiet on success when not on a terminal (cron).
    """
    result = _execute(app, mailboxes, dry_run=dry_run, limit=limit, as_json=as_json)
    _render(result, as_json=as_json, dry_run=dry_run, verbose=app.verbose > 0)
    click.get_current_context().exit(result.exit_code)


EXAMPLE_IMPORT = """
\b
Example:
  integrator import Support --limit 10
"""


@click.command("import", epilog=EXAMPLE_IMPORT)
@click.argument("mailbox")
@click.option("--dry-run", is_flag=True, help="Fetch and decide, but change nothing.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N new emails.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@click.pass_obj
def import_(app: App, mailbox: str, dry_run: bool, limit: int | None, as_json: bool) -> None:
    """Import one mailbox now (the "Import emails" button), and show what happened."""
    result = _execute(app, [mailbox], dry_run=dry_run, limit=limit, as_json=as_json)
    _render(result, as_json=as_json, dry_run=dry_run, verbose=True)
    click.get_current_context().exit(result.exit_code)
