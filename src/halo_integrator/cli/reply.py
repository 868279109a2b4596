"""`integrator reply TICKET` (an agent's email on a ticket) and `integrator outbox list|retry`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TextIO

import click

from halo_integrator.cli import output
from halo_integrator.cli.app import App
from halo_integrator.errors import EXIT_ERROR, EXIT_SECRET, EXIT_USAGE

if TYPE_CHECKING:
    from halo_integrator.outgoing.outbox import Attempt, Outbox

EDITOR_MARKER = "# Write your reply above this line. Lines starting with # are left out."


def open_outbox(app: App) -> Outbox:
    from halo_integrator.cli.run import secrets_factory
    from halo_integrator.outgoing.outbox import Outbox

    return Outbox(app.config, app.store(), secrets=secrets_factory(app), instance=app.instance)


def attempt_dict(attempt: Attempt) -> dict[str, Any]:
    return {
        "queue_id": attempt.queue_id,
        "mailbox": attempt.mailbox,
        "status": attempt.status,
        "recipients": attempt.recipients,
        "subject": attempt.subject,
        "ticket_id": attempt.ticket_id,
        "detail": attempt.detail,
        "retry_at": attempt.retry_at,
    }


def _print_attempt(attempt: Attempt) -> None:
    if attempt.sent:
        click.echo(f"Sent email {attempt.queue_id} to {attempt.recipients}: {attempt.detail}")
    else:
        output.error(f"Email {attempt.queue_id} to {attempt.recipients} not sent: {attempt.detail}")


def _exit_for(attempts: list[Attempt]) -> int:
    if any(a.secret_error for a in attempts if not a.sent):
        return EXIT_SECRET
    return EXIT_ERROR if any(not a.sent for a in attempts) else 0


def _body_from_editor(ticket: dict[str, Any]) -> str:
    last = ticket["actions"][-1] if ticket.get("actions") else None
    quoted = ""
    if last is not None:
        quoted = "\n".join(f"# > {line}" for line in (last.get("body_text") or "").splitlines()[:40])
    text = click.edit(
        f"\n\n{EDITOR_MARKER}\n# Ticket {ticket['id']}: {ticket['subject']}\n"
        f"# To: {ticket['requester_email']}\n{quoted}\n"
    )
    if text is None:
        return ""
    return "\n".join(line for line in text.split(EDITOR_MARKER)[0].splitlines() if not line.startswith("#")).strip()


REPLY_EXAMPLES = """
\b
Examples:
  integrator --as nina reply 42 --body "The printer is fixed; please try again."
  integrator --as nina reply 42 --body-file answer.txt --cc boss@customer.example --attach log.txt
  integrator reply 42                      # write the reply in $EDITOR
  integrator reply 42 --close              # close it with the ticket_closed template
"""


@click.command(epilog=REPLY_EXAMPLES)
@click.argument("ticket", type=int)
@click.option("--body", help="The text of the reply.")
@click.option("--body-file", type=click.File("r", encoding="utf-8"), help="Read the reply from a file (- for stdin).")
@click.option("--cc", multiple=True, metavar="ADDRESS", help="Copy to this address (repeatable).")
@click.option("--attach", multiple=True, metavar="FILE", type=click.Path(exists=True, dir_okay=False),
              help="Attach this file (repeatable).")
@click.option("--close", is_flag=True, help="Close the ticket too (without a body: the ticket_closed template).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.pass_obj
def reply(
    app: App, ticket: int, body: str | None, body_file: TextIO | None, cc: tuple[str, ...],
    attach: tuple[str, ...], close: bool, as_json: bool,
) -> None:
    """Send an email on a ticket from its mailbox, as the agent given by --as.

    The reply goes to the ticket's requester with the ticket tag in the subject, the mailbox's signature
    (or the agent's override), and In-Reply-To/References to the newest email on the ticket, so the
    customer's answer comes back to the same ticket. It is recorded on the ticket as an email_out action,
    queued and sent at once; if the server is down it stays queued and `integrator run` retries it.
    """
    from halo_integrator.outgoing.outbox import attachment_from_file, resolve_agent

    ctx = click.get_current_context()
    if body is not None and body_file is not None:
        output.error("Give the reply with --body or --body-file, not both.")
        ctx.exit(EXIT_USAGE)
    outbox = open_outbox(app)
    agent = resolve_agent(app.config, app.agent)
    details, _ = outbox.reply_target(ticket, agent)  # refuses before the editor opens
    if body_file is not None:
        body = body_file.read()
    if body is None:
        body = "" if close else _body_from_editor(details)
    if not body.strip() and not close:
        output.error("The reply is empty; nothing was sent.")
        ctx.exit(EXIT_USAGE)
    attachments = [attachment_from_file(path) for path in attach]
    queue_id = outbox.reply(ticket, agent=agent, body=body, cc=list(cc), attachments=attachments, close=close)
    if not outbox.enabled:
        item = app.store().outbound_item(queue_id) or {}
        if as_json:
            output.print_json({"queue_id": queue_id, "status": "queued", "ticket_id": ticket,
                               "recipients": item.get("recipients"), "detail": "outgoing service is off"})
        output.warn(
            f"The outgoing service is off ([services] outgoing = false): the reply is recorded on ticket {ticket} "
            f"and waits in the outbox (email {queue_id}) until it is turned on."
        )
        return
    attempt = outbox.send_one(queue_id)
    attempts = [attempt] if attempt is not None else []
    if as_json:
        output.print_json(attempt_dict(attempt) if attempt else {"queue_id": queue_id, "status": "queued"})
    else:
        for a in attempts:
            _print_attempt(a)
        if close:
            click.echo(f"Ticket {ticket} is closed.")
        if attempt is not None and not attempt.sent:
            click.echo(
                f"The reply is recorded on ticket {ticket} and stays in the outbox: "
                + (f"`integrator run` retries it after {attempt.retry_at}." if attempt.retry_at
                   else f"`integrator outbox retry {queue_id}` sends it again.")
            )
    ctx.exit(_exit_for(attempts))


@click.group(epilog="\b\nExamples:\n  integrator outbox list\n  integrator outbox retry 12 13")
def outbox() -> None:
    """Emails waiting to be sent (acknowledgements and replies), and retrying them.

    Every outgoing email is queued with its ticket change and sent after the commit; one that could not be
    sent is retried by `integrator run` with back-off (after 1, 5, 15 and 60 minutes, 3 hours, then every 6
    hours, for up to 5 days). A rejected email stays `failed` here until `outbox retry` sends it again.
    """


@outbox.command("list", epilog="\b\nExamples:\n  integrator outbox list\n  integrator outbox list --all --json")
@click.option("--all", "show_all", is_flag=True, help="Also the emails already sent.")
@click.option("--mailbox", "-m", metavar="NAME", help="Only this mailbox.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_(app: App, show_all: bool, mailbox: str | None, limit: int, as_json: bool) -> None:
    """Show queued and failed emails (with --all, sent ones too), newest first."""
    statuses = None if show_all else ["queued", "sending", "failed"]
    rows = app.store().outbound_queue(statuses=statuses, mailbox=mailbox, limit=limit)
    if as_json:
        output.print_json(rows)
        return
    if not app.config.services.outgoing and any(r["status"] == "queued" for r in rows):
        output.warn("The outgoing service is off ([services] outgoing = false): queued emails wait until it is on.")
    if not rows:
        click.echo("The outbox is empty." if not show_all else "Nothing was ever queued.")
        return
    output.table(
        None,
        ["Id", "Queued", "Mailbox", "Kind", "Status", "Ticket", "To", "Subject", "Attempts", "Next try", "Last"],
        [
            [r["id"], r["created_at"][:19], r["mailbox"], r["kind"], r["status"], r["ticket_id"] or "",
             output.short(r["recipients"], 30), output.short(r["subject"], 40), r["attempts"],
             r["next_attempt_at"][:19] if r["status"] == "queued" else "",
             output.short(r["answer"] if r["status"] == "sent" else r["last_error"], 60)]
            for r in rows
        ],
    )


@outbox.command("retry", epilog="\b\nExamples:\n  integrator outbox retry\n  integrator outbox retry 12")
@click.argument("ids", nargs=-1, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the attempts as JSON.")
@click.pass_obj
def retry(app: App, ids: tuple[int, ...], as_json: bool) -> None:
    """Send queued and failed emails now (all of them, or the ids given). Sent emails are never sent twice."""
    ctx = click.get_current_context()
    box = open_outbox(app)
    if not box.enabled:
        output.error("The outgoing service is off ([services] outgoing = false); set it to true to send email.")
        ctx.exit(EXIT_ERROR)
    attempts = box.retry(list(ids) if ids else None)
    if as_json:
        output.print_json([attempt_dict(a) for a in attempts])
    elif not attempts:
        click.echo("Nothing to send: no queued or failed email" + (" with those ids." if ids else "."))
    else:
        for a in attempts:
            _print_attempt(a)
    ctx.exit(_exit_for(attempts))
