"""The one place that sets up rich and logging; every command prints through here.

On a terminal: rich tables and colours (NO_COLOR respected). Piped: plain tab-separated lines. ``--json``: one
JSON document on stdout and nothing else there; messages go to stderr.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import click

from halo_integrator.errors import EXIT_ERROR, EXIT_SECRET

if TYPE_CHECKING:
    from halo_integrator.connectors.base import TestReport

_console = None
_err_console = None


def console(stderr: bool = False) -> Any:
    global _console, _err_console
    from rich.console import Console

    if stderr:
        if _err_console is None:
            _err_console = Console(stderr=True, no_color="NO_COLOR" in os.environ, highlight=False)
        return _err_console
    if _console is None:
        _console = Console(no_color="NO_COLOR" in os.environ, highlight=False, soft_wrap=False)
    return _console


def reset() -> None:
    """Forget the consoles (tests swap stdout between invocations)."""
    global _console, _err_console
    _console = _err_console = None


def is_terminal() -> bool:
    return sys.stdout.isatty()


LOG_FILE_BYTES = 5 * 1024 * 1024
LOG_FILE_BACKUPS = 5
LOG_FILE_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


def configure_logging(verbose: int, quiet: bool) -> None:
    """Messages on stderr: warnings and errors; -v adds INFO, -vv DEBUG, -q keeps only errors.

    Also drops the diagnostic log file of a previous invocation in this process (see :func:`log_to_file`).
    """
    _close_log_file()
    level = logging.WARNING
    if verbose == 1:
        level = logging.INFO
    elif verbose >= 2:
        level = logging.DEBUG
    if quiet:
        level = logging.ERROR
    root = logging.getLogger("halo_integrator")
    # The default leaves the logger unpinned (it inherits the root logger's WARNING), so that a library
    # caller's or a test's logging setup still sees our records after a CLI invocation in the same process.
    root.setLevel(logging.NOTSET if level == logging.WARNING else level)
    if not any(getattr(h, "_integrator", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._integrator = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for h in root.handlers:
        if getattr(h, "_integrator", False):
            h.setLevel(level)
            if isinstance(h, logging.StreamHandler):
                h.setStream(sys.stderr)


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose files only their owner can read (they name senders and subjects)."""

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def log_to_file(path: os.PathLike[str] | str) -> bool:
    """Also write INFO and above to a rotating file (5 MB x 5), for scheduled runs (`[logs] file`).

    The file never holds a secret, because nothing logs one. A file that cannot be opened is a warning, not
    a failed run. Returns whether the file is attached."""
    _close_log_file()
    target = os.fspath(path)
    try:
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        handler = _PrivateRotatingFileHandler(
            target, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
        )
    except OSError as exc:
        warn(f"cannot write the log file {target}: {exc.strerror or exc}; going on without it.")
        return False
    handler.setFormatter(logging.Formatter(LOG_FILE_FORMAT))
    handler.setLevel(logging.INFO)
    handler._integrator_file = True  # type: ignore[attr-defined]
    root = logging.getLogger("halo_integrator")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)  # the stderr handler keeps its own, higher level
    return True


def _close_log_file() -> None:
    root = logging.getLogger("halo_integrator")
    for h in list(root.handlers):
        if getattr(h, "_integrator_file", False):
            root.removeHandler(h)
            h.close()


def escape(text: str) -> str:
    """Text shown inside a rich table cell, with its [brackets] kept literal."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def error(message: str) -> None:
    click.echo(f"Error: {message}", err=True)


def warn(message: str) -> None:
    click.echo(f"Warning: {message}", err=True)


def info(message: str) -> None:
    click.echo(message)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A rich table on a terminal, tab-separated lines with a header when piped."""
    rows = [["" if v is None else str(v) for v in row] for row in rows]
    if is_terminal():
        from rich.table import Table

        t = Table(title=title, show_lines=False, header_style="bold")
        for col in columns:
            t.add_column(col, overflow="fold")
        for row in rows:
            t.add_row(*row)
        console().print(t)
    else:
        click.echo("\t".join(columns))
        for row in rows:
            click.echo("\t".join(v.replace("\t", " ").replace("\n", " ") for v in row))


def short(text: str | None, width: int = 60) -> str:
    t = " ".join((text or "").split())
    return t if len(t) <= width else t[: width - 1] + "…"


def print_report(report: TestReport, title: str) -> None:
    """A connection test report, check by check, with the fix for each failure."""
    click.echo(title)
    for check in report.checks:
        mark = "ok " if check.ok else "FAIL"
        click.echo(f"  [{mark}] {check.name}: {check.detail}")
        if not check.ok and check.fix:
            click.echo(f"         fix: {check.fix}")
    if report.folder:
        click.echo(f"  Reads folder: {report.folder}")
    if report.deleted_folder:
        click.echo(f"  Deleted Items folder: {report.deleted_folder}")
    if report.message_count is not None:
        click.echo(f"  Emails waiting: {report.message_count:,}")
    if report.capabilities:
        click.echo(f"  Server capabilities: {' '.join(report.capabilities)}")


def report_exit_code(report: TestReport) -> int:
    """0 when every check passed, 4 when one failed because of the credential (a password refused, a secret
    missing or unreadable), else 1."""
    if report.ok:
        return 0
    return EXIT_SECRET if any(c.secret for c in report.checks if not c.ok) else EXIT_ERROR
