"""`integrator tickets list|show`: read the ticket store."""

from __future__ import annotations

import json
from typing import Any

import click

from halo_integrator.cli import output
from halo_integrator.cli.app import App
from halo_integrator.errors import IntegratorError


def ticket_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "subject": row["subject"],
        "status": row["status"],
        "mailbox": row["mailbox"],
        "requester": row["requester_email"],
        "requester_name": row["requester_name"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "action_count": row["action_count"],
        "linked_ticket_id": row.get("linked_ticket_id"),
    }


def action_json(action: dict[str, Any]) -> dict[str, Any]:
    sender = action["from_address"]
    if action["from_name"]:
        sender = f"{action['from_name']} <{action['from_address']}>" if sender else action["from_name"]
    return {
        "id": action["id"],
        "kind": action["kind"],
        "message_id": action["message_id"],
        "from": sender,
        "to": json.loads(action["to_json"] or "[]"),
        "cc": json.loads(action["cc_json"] or "[]"),
        "subject": action["subject"],
        "date": action["date"],
        "created_at": action["created_at"],
        "body_text": action["body_text"],
        "has_html": bool(action["body_html"]),
        "attachments": [
            {
                "filename": a["filename"],
                "content_type": a["content_type"],
                "size": a["size"],
                "sha256": a["sha256"],
                "content_id": a["content_id"],
                "inline": bool(a["inline"]),
            }
            for a in action["attachments"]
        ],
    }


@click.group()
def tickets() -> None:
    """Read tickets made from email.

    \b
    Examples:
      integrator tickets list --status open
      integrator tickets show 42 --json
    """


@tickets.command("list", epilog="\b\nExample:\n  integrator tickets list --mailbox Support --limit 20 --json")
@click.option("--status", type=click.Choice(["open", "closed"]), help="Only tickets with this status.")
@click.option("--mailbox", "-m", metavar="NAME", help="Only tickets from this mailbox.")
@click.option("--search", metavar="TEXT", help="Subject or requester contains TEXT.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_(app: App, status: str | None, mailbox: str | None, search: str | None, limit: int, as_json: bool) -> None:
    """List tickets, most recently updated first."""
    rows = app.store().list_tickets(limit=limit, status=status, mailbox=mailbox, search=search)
    if as_json:
        output.print_json([ticket_json(r) for r in rows])
        return
    if not rows:
        output.info("No tickets yet. `integrator run` imports email into tickets.")
        return
    output.table(
        None,
        ["ID", "Status", "Mailbox", "Requester", "Subject", "Actions", "Updated"],
        [
            [r["id"], r["status"], r["mailbox"], output.short(r["requester_email"] or r["requester_name"], 32),
             output.short(r["subject"], 50), r["action_count"], r["updated_at"][:19].replace("T", " ")]
            for r in rows
        ],
    )


@tickets.command("show", epilog="\b\nExample:\n  integrator tickets show 42")
@click.argument("ticket_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show(app: App, ticket_id: int, as_json: bool) -> None:
    """Show one ticket with every email in and out."""
    ticket = app.store().get_ticket(ticket_id)
    if ticket is None:
        raise IntegratorError(f"No ticket {ticket_id}. `integrator tickets list` shows the tickets there are.")
    data = ticket_json(ticket)
    data["actions"] = [action_json(a) for a in ticket["actions"]]
    if as_json:
        output.print_json(data)
        return
    click.echo(f"Ticket {data['id']}: {data['subject']}")
    click.echo(f"Status: {data['status']}   Mailbox: {data['mailbox']}   Requester: {data['requester']}")
    if data["linked_ticket_id"]:
        click.echo(f"Linked to ticket {data['linked_ticket_id']}")
    click.echo(f"Created: {data['created_at']}   Updated: {data['updated_at']}")
    for action in data["actions"]:
        click.echo("")
        click.echo(f"--- #{action['id']} {action['kind']}  {action['date'] or action['created_at']}")
        click.echo(f"From: {action['from']}")
        if action["to"]:
            click.echo(f"To: {', '.join(action['to'])}")
        click.echo(f"Subject: {action['subject']}")
        for att in action["attachments"]:
            mark = " (inline)" if att["inline"] else ""
            click.echo(f"Attachment: {att['filename']} [{att['content_type']}, {att['size']} bytes]{mark}")
        click.echo("")
        click.echo(action["body_text"].rstrip())
