"""`integrator doctor`: is this install healthy? Exit 1 when any check fails, so a monitor can run it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from halo_integrator.cli import output
from halo_integrator.cli.app import App

if TYPE_CHECKING:
    from halo_integrator.doctor import Report

EXAMPLES = """
\b
Examples:
  integrator doctor
  integrator doctor --offline            # no network: config, secrets, schedule, database, files
  integrator doctor --json | jq '.findings[] | select(.status == "fail")'
"""

LABELS = {"ok": "OK", "warn": "WARN", "fail": "FAIL", "skip": "skip"}
STYLES = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


@click.command(epilog=EXAMPLES)
@click.option("--offline", is_flag=True, help="Do not contact mail servers.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.pass_obj
def doctor(app: App, offline: bool, as_json: bool) -> None:
    """Check the config, services, keyring, secrets, connections, Deleted Items folders, tokens, schedule,
    last runs, database integrity and file permissions. Each finding says what to do.

    Exit status: 0 when nothing failed (warnings allowed), 1 when something failed.
    """
    from halo_integrator.doctor import diagnose

    report = diagnose(app.config_path, instance=app.instance_override, offline=offline)
    if as_json:
        output.print_json(report.as_dict())
    else:
        _render(report)
    click.get_current_context().exit(report.exit_code)


def _render(report: Report) -> None:
    rows = [[LABELS[f.status], f.check, f.subject, f.reason] for f in report.findings]
    if output.is_terminal():
        from rich.table import Table

        table = Table(show_lines=False, header_style="bold")
        for col in ("Status", "Check", "About", "Finding"):
            table.add_column(col, overflow="fold")
        for f, row in zip(report.findings, rows, strict=True):
            table.add_row(f"[{STYLES[f.status]}]{row[0]}[/]", *[output.escape(v) for v in row[1:]])
        output.console().print(table)
    else:
        output.table(None, ["Status", "Check", "About", "Finding"], rows)
    fixes = [f for f in report.findings if f.status in ("fail", "warn") and f.fix]
    if fixes:
        click.echo("\nTo fix:")
        for f in fixes:
            about = f" ({f.subject})" if f.subject else ""
            click.echo(f"  {f.check}{about}: {f.fix}")
    counts = report.counts()
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    click.echo(f"\n{report.status.upper()}: {summary}")
