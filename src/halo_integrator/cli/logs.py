"""`integrator logs`: the inbound and outbound logs, and `logs show ID` for one entry in full."""

from __future__ import annotations

from typing import Any

import click

from halo_integrator.cli import output
from halo_integrator.cli.app import App
from halo_integrator.errors import IntegratorError


def log_json(row: dict[str, Any]) -> dict[str, Any]:
    out = {
        "id": row["id"],
        "time": row["time"],
        "direction": row["direction"],
        "mailbox": row["mailbox"],
        "status": row["status"],
        "message_id": row["message_id"],
        "subject": row["subject"],
        "ticket_id": row["ticket_id"],
        "detail": row["detail"],
    }
    if row["direction"] == "inbound":
        out["sender"] = row["sender"]
        out["source_id"] = row.get("source_id")
        out["credential"] = row.get("credential")
    else:
        out["recipients"] = row["recipients"]
    return out


class LogsGroup(click.Group):
    """`logs [inbound|outbound]` lists; `logs show ID` shows one entry."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] in ("inbound", "outbound"):
            ctx.meta["log_direction"] = args[0]
            args = args[1:]
        if not args or args[0].startswith("-"):
            return "list", self.commands["list"], args
        return super().resolve_command(ctx, args)


LOGS_EXAMPLES = """
\b
Examples:
  integrator logs --since 2h --status error
  integrator logs --follow --mailbox Support     # new entries as they come; Ctrl-C stops
  integrator logs inbound --mailbox Support --json
  integrator logs show 17
"""


@click.group(
    cls=LogsGroup,
    invoke_without_command=True,
    epilog=LOGS_EXAMPLES,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.pass_context
def logs(ctx: click.Context) -> None:
    """The inbound and outbound email logs: what happened to every email, and why."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_)


@logs.command("list", epilog=LOGS_EXAMPLES)
@click.option("--direction", type=click.Choice(["inbound", "outbound"]), help="Only one direction.")
@click.option("--mailbox", "-m", metavar="NAME", help="Only this mailbox.")
@click.option("--status", metavar="STATUS", help="created, updated, duplicate, ignored, auto_reply, bounce, error, "
              "quarantined; or queued, sent, failed, suppressed.")
@click.option("--since", metavar="WHEN", help="A duration (45m, 2h, 3d) or a date (2026-11-27).")
@click.option("--search", metavar="TEXT", help="Subject, address, detail or Message-ID contains TEXT.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with --follow: one object per line).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new entries as they arrive (Ctrl-C stops).")
@click.pass_context
def list_(
    ctx: click.Context,
    direction: str | None = None,
    mailbox: str | None = None,
    status: str | None = None,
    since: str | None = None,
    search: str | None = None,
    limit: int = 50,
    as_json: bool = False,
    follow: bool = False,
) -> None:
    """List log entries, newest first (with --follow: oldest first, then new ones as they arrive)."""
    from halo_integrator.timeutil import since_to_iso

    app: App = ctx.obj
    direction = direction or ctx.meta.get("log_direction")
    try:
        since_iso = since_to_iso(since) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    filters: dict[str, Any] = {"direction": direction, "mailbox": mailbox, "status": status, "search": search}
    store = app.records(mailbox)  # only the mailboxes the acting agent may read
    if follow:
        _follow(store, filters, since_iso, limit, as_json)
        return
    rows = store.logs(**filters, since=since_iso, limit=limit)
    if as_json:
        output.print_json([log_json(r) for r in rows])
        return
    if not rows:
        output.info("No log entries match.")
        return
    output.table(None, COLUMNS, [_cells(r) for r in rows])


COLUMNS = ["ID", "Time", "Dir", "Mailbox", "Status", "Who", "Subject", "Ticket", "Detail"]
FOLLOW_POLL_SECONDS = 1.0


def _cells(r: dict[str, Any]) -> list[Any]:
    return [
        r["id"], r["time"][:19].replace("T", " "), "in" if r["direction"] == "inbound" else "out", r["mailbox"],
        r["status"], output.short(r["sender"] if r["direction"] == "inbound" else r["recipients"], 30),
        output.short(r["subject"], 40), r["ticket_id"] or "", output.short(r["detail"], 60),
    ]


def _follow(store: Any, filters: dict[str, Any], since: str | None, limit: int, as_json: bool) -> None:
    """Print the last ``limit`` matching entries oldest first, then poll every second for newer rows."""
    import json
    import time

    after = store.max_log_ids()  # before the first read, so nothing committed in between is missed

    def emit(rows: list[dict[str, Any]]) -> None:
        for r in sorted(rows, key=lambda r: (r["time"], r["direction"], r["id"])):
            if as_json:
                click.echo(json.dumps(log_json(r), ensure_ascii=False, default=str))
            else:
                click.echo("\t".join(str(v).replace("\t", " ") for v in _cells(r)))
            after[r["direction"]] = max(after.get(r["direction"], 0), r["id"])

    if not as_json:
        click.echo("\t".join(COLUMNS))
    initial = store.logs(**filters, since=since, limit=limit)
    emit(initial)
    try:
        while True:
            time.sleep(FOLLOW_POLL_SECONDS)
            emit(store.logs(**filters, after_id=dict(after), limit=1000))
    except KeyboardInterrupt:
        return


@logs.command("show", epilog="\b\nExample:\n  integrator logs show 17 --json")
@click.argument("log_id", type=int)
@click.option("--outbound", is_flag=True, help="ID is an outbound log entry.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show(app: App, log_id: int, outbound: bool, as_json: bool) -> None:
    """One log entry in full: the decision and the email's headers."""
    store = app.records()  # log_entry checks read on the entry's mailbox
    direction = "outbound" if outbound else "inbound"
    entry = store.log_entry(log_id, direction)
    if entry is None:
        raise IntegratorError(f"No {direction} log entry {log_id}. `integrator logs` lists them.")
    headers: list[tuple[str, str]] = []
    if entry.get("raw_id"):
        from halo_integrator.mail import parse

        headers = list(parse(store.raw_message(entry["raw_id"])).headers)
    if as_json:
        output.print_json({**entry, "headers": [{"name": k, "value": v} for k, v in headers]})
        return
    for key in ("id", "time", "direction", "mailbox", "credential", "source_id", "status", "message_id", "subject",
                "sender", "recipients", "ticket_id", "detail"):
        if entry.get(key) not in (None, ""):
            click.echo(f"{key.replace('_', ' ').capitalize():<12} {entry[key]}")
    decision = entry.get("decision") or {}
    if decision:
        click.echo("\nDecision")
        for key, value in decision.items():
            if value not in (None, ""):
                click.echo(f"  {key:<10} {value}")
    if headers:
        click.echo("\nHeaders")
        for name, value in headers:
            click.echo(f"  {name}: {value}")
