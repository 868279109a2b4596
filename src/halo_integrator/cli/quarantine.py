"""`integrator quarantine list|retry|release` and `integrator reprocess`."""

from __future__ import annotations

import json
from typing import Any

import click

from halo_integrator.cli import output
from halo_integrator.cli.app import App
from halo_integrator.errors import IntegratorError


def _importer(app: App) -> Any:
    from halo_integrator.cli.run import secrets_factory
    from halo_integrator.importer import Importer

    return Importer(app.config, app.store(), secrets=secrets_factory(app), instance=app.instance)


@click.group()
def quarantine() -> None:
    """Emails held back: too big, a mail loop, or failing 3 runs in a row. Their raw bytes are kept.

    \b
    Examples:
      integrator quarantine list
      integrator quarantine retry 42        # decide again, as a run would
      integrator quarantine release 42      # import it regardless of the size limit or the loop throttle
    """


@quarantine.command("list", epilog="\b\nExample:\n  integrator quarantine list --mailbox Support --json")
@click.option("--mailbox", "-m", metavar="NAME", help="Only this mailbox.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_(app: App, mailbox: str | None, as_json: bool) -> None:
    """List quarantined emails (ID is their inbound-log entry)."""
    rows = app.records(mailbox).quarantined(mailbox)  # only mailboxes the acting agent may read
    if as_json:
        output.print_json([{k: v for k, v in r.items() if k not in ("decision_json", "raw_id")} for r in rows])
        return
    if not rows:
        output.info("Nothing is in quarantine.")
        return
    output.table(
        None, ["ID", "Time", "Mailbox", "From", "Subject", "Why"],
        [[r["id"], r["time"][:19].replace("T", " "), r["mailbox"], output.short(r["sender"], 30),
          output.short(r["subject"], 40), output.short(r["detail"], 70)] for r in rows],
    )


def _entry(app: App, log_id: int) -> dict[str, Any]:
    rows = app.store().quarantined(log_id=log_id)
    if rows:
        row = rows[0]
        row["decision"] = json.loads(row.pop("decision_json") or "{}")
        app.records(row["mailbox"], "modify")  # retry and release change what the mailbox imported
        return row
    raise IntegratorError(
        f"Inbound log entry {log_id} is not in quarantine. `integrator quarantine list` shows what is."
    )


def _report(decision: dict[str, Any], log_id: int) -> None:
    if decision["outcome"] == "quarantined":
        click.echo(f"#{log_id} stays in quarantine: {decision['reason']}")
        click.get_current_context().exit(1)
    ticket = f" (ticket {decision['ticket_id']})" if decision.get("ticket_id") else ""
    click.echo(f"#{log_id}: {decision['outcome']}{ticket}. {decision['reason']}")
    click.echo("The copy on the server stays in its quarantine folder; delete it there when you like.")


@quarantine.command("retry", epilog="\b\nExample:\n  integrator quarantine retry 42")
@click.argument("log_id", type=int)
@click.pass_obj
def retry(app: App, log_id: int) -> None:
    """Decide again on a quarantined email's stored bytes, as a run would (e.g. after raising a limit)."""
    _report(_importer(app).reimport(_entry(app, log_id), force=False), log_id)


@quarantine.command("release", epilog="\b\nExample:\n  integrator quarantine release 42")
@click.argument("log_id", type=int)
@click.pass_obj
def release(app: App, log_id: int) -> None:
    """Import a quarantined email regardless of the size limit or the loop throttle."""
    _report(_importer(app).reimport(_entry(app, log_id), force=True), log_id)


@click.command(epilog="\b\nExamples:\n  integrator reprocess --ticket 42\n  integrator reprocess --since 7d --dry-run")
@click.option("--ticket", "ticket_id", type=int, help="Only this ticket's emails.")
@click.option("--since", metavar="WHEN", help="Only emails imported since (45m, 2h, 3d, or a date).")
@click.option("--all", "all_", is_flag=True, help="Every imported email (needed when neither filter is given).")
@click.option("--dry-run", is_flag=True, help="Only count what would be re-parsed.")
@click.pass_obj
def reprocess(app: App, ticket_id: int | None, since: str | None, all_: bool, dry_run: bool) -> None:
    """Parse stored raw emails again (after a fix) and refresh what their tickets show.

    The mailboxes are not touched, and no email moves to another ticket.
    """
    from halo_integrator.timeutil import since_to_iso

    if ticket_id is None and since is None and not all_:
        raise click.UsageError("Say what to re-parse: --ticket ID, --since WHEN, or --all.")
    try:
        since_iso = since_to_iso(since) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    count = _importer(app).reprocess(ticket_id=ticket_id, since=since_iso, dry_run=dry_run)
    click.echo(f"{'Would re-parse' if dry_run else 'Re-parsed'} {count} email(s).")
