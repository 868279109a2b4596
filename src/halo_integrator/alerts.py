"""Alerts: the admins hear once when something breaks and once when it recovers, never on every run.

An *incident* is a condition with a stable key, looked at after every run:

* ``mailbox:<name>/<credential>``: the mailbox failed ``[alerts] after_failed_runs`` runs in a row (3 by
  default), the way fetching silently stopping for days is caught early;
* ``outbox``: emails that will not be retried (a permanent rejection, or 5 days of failures) wait in the outbox.
* token and secret expiry will join here as ``token:<mailbox>/<credential>`` once OAuth connectors record it
  (see ``Doctor._tokens``).

A key that appears opens an incident and queues one email to ``[outgoing] admins`` through the ``[outgoing]
mailbox``; while it stays, nothing more is sent; when it disappears the incident closes with one "recovered"
email. The emails go through the outbound queue, so they are retried while the mail server is down and show
in the outbound log. Without ``[outgoing] mailbox`` and ``admins`` the incidents are still recorded (`integrator
doctor` reports that alerts cannot be sent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from halo_integrator.config import Config, Mailbox
    from halo_integrator.outgoing.outbox import Outbox
    from halo_integrator.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incident:
    key: str
    title: str
    detail: str
    fix: str


@dataclass
class AlertResult:
    opened: list[Incident]
    recovered: list[str]
    queued: list[int]
    not_sent: str = ""  # why no email could be queued, when alerts are not configured


def current_incidents(config: Config, store: Store) -> list[Incident]:
    """What is wrong right now."""
    found: list[Incident] = []
    names = {m.name for m in config.mailboxes}
    limit = max(1, config.alerts.after_failed_runs)
    for row in store.mailbox_health():
        if row["mailbox"] not in names or int(row["failures_in_a_row"] or 0) < limit:
            continue
        where = row["mailbox"] + (f"/{row['credential']}" if row["credential"] else "")
        found.append(
            Incident(
                key=f"mailbox:{where}",
                title=f"Mailbox {where} has failed {row['failures_in_a_row']} runs in a row",
                detail=row["last_error"] or "(no error text)",
                fix=f"Run `integrator mailbox test {row['mailbox']}` and `integrator doctor`; "
                f"`integrator logs --mailbox {row['mailbox']}` shows what happened.",
            )
        )
    stuck = store.outbound_stuck()
    if stuck:
        found.append(
            Incident(
                key="outbox",
                title=f"{stuck} outgoing email(s) will not be retried",
                detail="The mail server rejected them for good, or kept failing for days.",
                fix="`integrator outbox list` shows them and why; fix the cause, then `integrator outbox retry`.",
            )
        )
    return found


def _sender(config: Config) -> tuple[Mailbox | None, str]:
    """The mailbox that emails alerts, or None and why not."""
    admins = [a for a in config.outgoing.admins if a]
    if not config.outgoing.mailbox or not admins:
        return None, "set [outgoing] mailbox and admins so alerts can be emailed"
    mailbox = config.mailbox(config.outgoing.mailbox)
    if mailbox.outgoing.method == "none":
        return None, f'the [outgoing] mailbox {mailbox.name!r} sends no email (outgoing.method = "none")'
    return mailbox, ""


def notify(config: Config, store: Store, outbox: Callable[[], Outbox], *, now: str) -> AlertResult:
    """Open and close incidents after a run, queueing one email for each change (``outbox`` makes the
    outbox when an email is needed)."""
    result = AlertResult(opened=[], recovered=[], queued=[])
    if not config.alerts.enabled:
        return result
    incidents = {i.key: i for i in current_incidents(config, store)}
    open_now = store.open_incidents()
    mailbox, result.not_sent = _sender(config)

    def email(subject: str, body: str) -> int | None:
        """Queue one alert email; its queue id, or None when alerts cannot be emailed."""
        if mailbox is None:
            return None
        from halo_integrator.outgoing.compose import compose

        admins = [a for a in config.outgoing.admins if a]
        mail = compose(mailbox, to=admins, subject=f"[halo-integrator] {subject}", body=body, auto=True)
        queue_id = outbox().queue(mailbox, mail, kind="alert", ticket_id=None)
        result.queued.append(queue_id)
        return queue_id

    with store.transaction():
        for key, incident in incidents.items():
            if key in open_now:
                continue
            queue_id = email(
                f"ALERT: {incident.title}",
                f"{incident.title}.\n\nWhat happened: {incident.detail}\n\nWhat to do: {incident.fix}\n\n"
                "You get one email now and one when it recovers, not one per run.",
            )
            store.open_incident(key, incident.title, incident.detail, now, queue_id)
            result.opened.append(incident)
        for key, row in open_now.items():
            if key in incidents:
                continue
            queue_id = email(
                f"RECOVERED: {row['title']}",
                f"Recovered: {row['title']} (since {row['opened_at'][:16].replace('T', ' ')} UTC).\n\n"
                "Nothing more to do.",
            )
            store.close_incident(key, now, queue_id)
            result.recovered.append(key)
    for incident in result.opened:  # its error is reported with the mailbox's own result
        log.warning("alert opened: %s", incident.title)
    if (result.opened or result.recovered) and result.not_sent:
        log.warning("alerts were not emailed: %s", result.not_sent)
    return result
