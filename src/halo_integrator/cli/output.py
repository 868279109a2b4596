"""The one place that sets up rich and logging; every command prints through here.

On a terminal: rich tables and colours (NO_COLOR respected). Piped: plain tab-separated lines. ``--json``: one
JSON document on stdout and nothing else there; messages go to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import click

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


def configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING
    if verbose == 1:
        level = logging.INFO
    elif verbose >= 2:
        level = logging.DEBUG
    if quiet:
        level = logging.ERROR
    root = logging.getLogger("halo_integrator")
    root.setLevel(level)
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
