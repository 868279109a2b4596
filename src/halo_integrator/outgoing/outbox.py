"""The outbound queue: acknowledgements and replies are queued with the ticket change, sent after the commit.

Life of an outgoing email::

    queue()      inside the caller's transaction: the MIME bytes (as a raw message), an ``email_out`` action
                 carrying its Message-ID (so the customer's answer threads back at once), a queue row and an
                 outbound-log row ``queued``
    send_due()   after the commit: claim each due row, send it through the mailbox's transport, then
                 ``sent`` (with the server's answer), or ``failed`` with the error and when it is retried
                 (back-off :data:`BACKOFF_MINUTES`), or ``failed`` with "will not retry" for a permanent
                 rejection or after :data:`GIVE_UP_AFTER` of temporary failures

Nothing queued is dropped silently: a row stays ``queued`` until it is sent, or ``failed`` (visible in
`integrator outbox list` and the outbound log) until `integrator outbox retry` sends it. With
``[services] outgoing = false`` nothing is sent and rows stay queued. Sending is at-least-once: a crash
between the server's "250 OK" and our record of it sends that email again on the next run (a claimed row
whose sender died is taken over after :data:`CLAIM_EXPIRES`).

Acknowledgements (:meth:`Outbox.acknowledge`) follow DESIGN contract 6 and are never sent to auto-replies,
bounces, our own addresses, no-reply senders, over ``outgoing.ack_limit_per_hour`` per recipient, or for an
email older than :data:`ACK_MAX_AGE` (so a first import of an old mailbox does not write to every customer
it ever had); each of these is an outbound-log row ``suppressed`` with the reason.

SMTP secrets: ``smtp_password`` of the mailbox's credential for this instance (``"<mailbox>/<credential>/
smtp_password"``; a mailbox without credentials, such as a folder mailbox, uses the credential name
:data:`OUTGOING_CREDENTIAL`). When ``outgoing.username`` is the credential's own username, its ``password``
is used if no ``smtp_password`` is stored (one account for IMAP and SMTP).
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from halo_integrator.config import Agent, Credential
from halo_integrator.credentials import OUTGOING_CREDENTIAL
from halo_integrator.errors import IntegratorError, OutgoingError, SecretError
from halo_integrator.mail.model import Address
from halo_integrator.outgoing.compose import (
    Composed,
    OutgoingAttachment,
    ack_suppression_reason,
    compose,
    may_send,
    signature_for,
)
from halo_integrator.outgoing.templates import render_for, template_context
from halo_integrator.outgoing.transports import SendError, Transport, make_transport, to_bytes
from halo_integrator.timeutil import TIME_FORMAT, stamp

if TYPE_CHECKING:
    from halo_integrator.config import Config, Mailbox
    from halo_integrator.connectors.base import SecretsFactory
    from halo_integrator.mail.model import ParsedEmail
    from halo_integrator.store import Store

log = logging.getLogger(__name__)

BACKOFF_MINUTES = (1, 5, 15, 60, 180, 360)
"""Wait after the 1st, 2nd, ... failed attempt; the last value repeats."""

GIVE_UP_AFTER = timedelta(days=5)
"""Temporary failures are retried this long after the email was queued (like an MTA), then it is ``failed``."""

CLAIM_EXPIRES = timedelta(minutes=30)
"""A row claimed for sending longer ago than this belongs to a sender that died; it is taken over."""

ACK_MAX_AGE = timedelta(days=1)
"""No acknowledgement for an email older than this (by its Date header, else its newest Received header)."""

ACK_BODY_LIMIT = 10_000  # characters of the customer's text offered to the {body} placeholder of an ack


def backoff(attempts: int) -> timedelta:
    """How long to wait after ``attempts`` failed attempts (1-based)."""
    index = min(max(attempts, 1), len(BACKOFF_MINUTES)) - 1
    return timedelta(minutes=BACKOFF_MINUTES[index])


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one send attempt, as written to the outbound log."""

    queue_id: int
    mailbox: str
    status: str  # sent | failed
    detail: str  # the server's answer, or the error and when it is retried
    recipients: str
    subject: str
    ticket_id: int | None
    retry_at: str | None = None  # None when sent, or when it will not be retried
    secret_error: bool = False

    @property
    def sent(self) -> bool:
        return self.status == "sent"


# ----------------------------------------------------------------------------------------- agents


def resolve_agent(config: Config, name: str | None) -> Agent:
    """The acting agent as :func:`halo_integrator.access.resolve_agent` finds it (``--as``, ``$INTEGRATOR_AGENT``,
    ``os_user``); a config without agents is single-admin mode, where whoever runs it is an admin."""
    from halo_integrator import access

    agent = access.resolve_agent(config, name)
    if agent is None:
        return Agent(name=name or access.current_login() or "admin", admin=True)
    return agent


def attachment_from_file(path: str | Path) -> OutgoingAttachment:
    """An attachment read from a file; its type guessed from the name."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise OutgoingError(f"Cannot read the attachment {p}: {exc.strerror or exc}.") from None
    content_type = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
    return OutgoingAttachment(filename=p.name, content_type=content_type, data=data)


# ----------------------------------------------------------------------------------------- the outbox


class Outbox:
    """Queues and sends the emails of one config and store. Library-level; `run`, `reply` and `outbox` use it.

    ``secrets(mailbox, credential)`` gives the ``kind -> secret`` lookup of a credential (the keystore's).
    ``clock`` returns the current time (aware); tests never need it, it exists for the retry schedule.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        secrets: SecretsFactory,
        instance: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.secrets = secrets
        self.instance = config.instance if instance is None else instance
        self.clock = clock or (lambda: datetime.now(UTC))
        self._transports: dict[str, Transport] = {}

    # ------------------------------------------------------------------------------------ settings
    @property
    def enabled(self) -> bool:
        """Whether sending is on (``[services] outgoing``)."""
        return self.config.services.outgoing

    def credential_for(self, mailbox: Mailbox) -> Credential | None:
        creds = self.config.credentials_for(mailbox, self.instance)
        return creds[0] if creds else None

    def sending_secrets(self, mailbox: Mailbox) -> Callable[[str], str]:
        """The secret lookup for sending from a mailbox, with the ``password`` fallback described above."""
        credential = self.credential_for(mailbox)
        inner = self.secrets(mailbox, credential or Credential(name=OUTGOING_CREDENTIAL))
        shared_login = bool(
            credential is not None
            and mailbox.outgoing.username
            and mailbox.outgoing.username.casefold() == credential.username.casefold()
        )

        def lookup(kind: str) -> str:
            try:
                return inner(kind)
            except (SecretError, KeyError) as exc:
                if kind == "smtp_password" and shared_login:
                    try:
                        return inner("password")
                    except (SecretError, KeyError):
                        pass
                if isinstance(exc, SecretError):
                    raise
                raise SecretError(
                    f"No {kind} is stored for sending from mailbox {mailbox.name!r}."
                ) from None

        return lookup

    def transport(self, mailbox: Mailbox) -> Transport:
        if mailbox.name not in self._transports:
            self._transports[mailbox.name] = make_transport(
                mailbox,
                self.credential_for(mailbox),
                self.sending_secrets(mailbox),
                base_dir=self.config.base_dir,
            )
        return self._transports[mailbox.name]

    # ------------------------------------------------------------------------------------ queueing
    def queue(self, mailbox: Mailbox, mail: Composed, *, kind: str, ticket_id: int | None) -> int:
        """Queue a composed email in the caller's transaction: raw bytes, ``email_out`` action (when it is on a
        ticket), queue row, outbound-log row ``queued``. Returns the queue id."""
        from halo_integrator.mail import parse
        from halo_integrator.rawbytes import stored

        data = to_bytes(mail.message)
        time = stamp(self.clock())
        with self.store.transaction():
            raw_id = self.store.save_raw(stored(data))
            action_id = None
            if ticket_id is not None:
                action_id = self.store.add_email_action(
                    ticket_id=ticket_id, kind="email_out", mailbox=mailbox.name, email=parse(data), raw_id=raw_id,
                    time=time,
                )
            queue_id = self.store.queue_outbound(
                mailbox=mailbox.name, kind=kind, envelope_from=mailbox.address, recipients=mail.recipients,
                raw_id=raw_id, message_id=mail.message_id, subject=str(mail.message["Subject"] or ""),
                ticket_id=ticket_id, action_id=action_id, time=time,
            )
            note = "" if self.enabled else " The outgoing service is off ([services] outgoing = false): it waits."
            self.store.log_outbound_for_queue(queue_id, "queued", f"Queued ({_kind_phrase(kind)}).{note}", time=time)
        return queue_id

    def acknowledge(
        self, mailbox: Mailbox, email: ParsedEmail, ticket_id: int, *, subject: str, turned_off_by_rule: bool = False
    ) -> int | None:
        """Queue the new-ticket acknowledgement for an email that opened ``ticket_id``, or log why not.

        Call inside the transaction that created the ticket. Returns the queue id, or None when no
        acknowledgement goes out. Never raises for a composing problem (it is logged ``failed``): one bad
        acknowledgement must not block the import.
        """
        if not mailbox.incoming.acknowledge_new_tickets or mailbox.outgoing.method == "none":
            return None  # a mailbox that sends nothing acknowledges nothing; no news worth a log row
        sender = email.sender.address.strip().lower()
        reason = "an email rule turned it off" if turned_off_by_rule else self._too_old(email)
        if reason is None:
            since = stamp(self.clock() - timedelta(hours=1))
            reason = ack_suppression_reason(
                sender=sender,
                our_addresses=self.config.own_addresses(),
                recent_count=self.store.acknowledgements_since(sender, since) if sender else 0,
                limit=mailbox.outgoing.ack_limit_per_hour,
                auto_reply=email.auto_reply,
                bounce=email.bounce,
            )
        if reason is not None:
            self.store.log_outbound(
                mailbox=mailbox.name, status="suppressed", recipients=sender, subject=email.subject,
                ticket_id=ticket_id, detail=f"No acknowledgement: {reason}.",
            )
            return None
        try:
            text = render_for(
                self.config,
                mailbox.outgoing.message_group,
                "new_ticket",
                template_context(
                    ticket_id=ticket_id, subject=subject, requester_name=email.sender.name or sender,
                    requester_email=sender, mailbox_name=mailbox.name, mailbox_address=mailbox.address,
                    body=email.text_body[:ACK_BODY_LIMIT], status="open",
                ),
            )
            mail = compose(
                mailbox, to=[Address(name=email.sender.name, address=sender)], subject=text.subject,
                body=text.body, ticket_id=ticket_id, signature=signature_for(mailbox, None),
                answered_message_id=email.message_id, answered_references=email.references, auto=True,
            )
        except IntegratorError as exc:
            self.store.log_outbound(
                mailbox=mailbox.name, status="failed", recipients=sender, subject=email.subject,
                ticket_id=ticket_id,
                detail=f"Could not compose the acknowledgement ({exc}); will not retry. Fix the mailbox's "
                "outgoing settings or message group.",
            )
            log.warning("%s: could not compose the acknowledgement of ticket %s: %s", mailbox.name, ticket_id, exc)
            return None
        return self.queue(mailbox, mail, kind="new_ticket", ticket_id=ticket_id)

    def tell_too_big(self, mailbox: Mailbox, email: ParsedEmail, size: int) -> int | None:
        """Queue a short notice to the sender of an email quarantined for its size; never to auto-replies,
        bounces, no-reply or our own addresses (the acknowledgement rules, less the hourly cap). Returns the
        queue id, or None when none goes out."""
        if mailbox.outgoing.method == "none":
            return None
        sender = email.sender.address
        if ack_suppression_reason(
            sender=sender, our_addresses=self.config.own_addresses(), recent_count=0, limit=0,
            auto_reply=email.auto_reply, bounce=email.bounce,
        ):
            return None
        mail = compose(
            mailbox,
            to=[sender],
            subject=f"Not delivered to {mailbox.name}: {email.subject}"[:200],
            body=(
                f"Your email \"{email.subject}\" is {size / 1048576:.1f} MB, more than the "
                f"{mailbox.incoming.max_email_mb:g} MB this help desk accepts, so it was not turned into a ticket. "
                "It is kept, and our staff can still release it.\n\nPlease send the attachments another way, "
                "for example as a link, or split them over several emails."
            ),
            answered_message_id=email.message_id,
            answered_references=email.references,
            auto=True,
        )
        return self.queue(mailbox, mail, kind="too_big", ticket_id=None)

    def _too_old(self, email: ParsedEmail) -> str | None:
        """Why an email is too old to acknowledge (or its age unknown), else None."""
        when = email.date or _newest_received(email)
        if when is None:  # no usable Date and no Received: it may as well be years old, as an imported archive is
            return (
                "the email has no readable Date header and no Received header, so its age is unknown (old mail, "
                "e.g. a first import, is never acknowledged)"
            )
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if self.clock() - when > ACK_MAX_AGE:
            return (
                f"the email is dated {when.isoformat(timespec='minutes')}, more than a day ago (old mail, e.g. a "
                "first import, is never acknowledged)"
            )
        return None

    def reply_target(self, ticket_id: int, agent: Agent) -> tuple[dict[str, Any], Mailbox]:
        """The ticket and the mailbox a reply goes out from, after checking that ``agent`` may send from it."""
        ticket = self.store.get_ticket(ticket_id)
        if ticket is None:
            raise OutgoingError(f"No ticket {ticket_id}; `integrator tickets list` shows the tickets.")
        mailbox = self.config.mailbox(ticket["mailbox"])
        may_send(agent, mailbox)
        if mailbox.outgoing.method == "none":
            raise OutgoingError(
                f'Mailbox {mailbox.name!r} sends no email (outgoing.method = "none"). Set its outgoing '
                f"settings, e.g. integrator mailbox edit {mailbox.name!r} --set outgoing.method=smtp "
                "--set outgoing.host=smtp.example.com"
            )
        if not ticket["requester_email"]:
            raise OutgoingError(f"Ticket {ticket_id} has no requester address to reply to.")
        return ticket, mailbox

    def reply(
        self,
        ticket_id: int,
        *,
        agent: Agent,
        body: str,
        cc: Sequence[str] = (),
        attachments: Iterable[OutgoingAttachment] = (),
        close: bool = False,
    ) -> int:
        """Queue an agent's email on a ticket (``close``: and close the ticket); returns the queue id.

        Sent from the ticket's mailbox to its requester, with the agent_reply template (ticket_closed when
        closing without a body), the signature for this agent, and threading to the newest email on the
        ticket. Raises :class:`AccessDenied` when the mailbox's sending restrictions exclude the agent.
        """
        from halo_integrator.store import now

        ticket, mailbox = self.reply_target(ticket_id, agent)
        if not body.strip() and not close:
            raise OutgoingError("The reply is empty; give --body, --body-file or write it in the editor.")
        kind = "agent_reply" if body.strip() else "ticket_closed"
        text = render_for(
            self.config,
            mailbox.outgoing.message_group,
            kind,
            template_context(
                ticket_id=ticket_id, subject=ticket["subject"], requester_name=ticket["requester_name"]
                or ticket["requester_email"], requester_email=ticket["requester_email"],
                mailbox_name=mailbox.name, mailbox_address=mailbox.address, agent_name=agent.name, body=body,
                status="closed" if close else ticket["status"],
            ),
        )
        answered = self.store.latest_email_action(ticket_id)
        mail = compose(
            mailbox,
            to=[Address(name=ticket["requester_name"], address=ticket["requester_email"])],
            cc=list(cc),
            subject=text.subject,
            body=text.body,
            ticket_id=ticket_id,
            signature=signature_for(mailbox, agent),
            answered_message_id=answered["message_id"] if answered else None,
            answered_references=answered["references"] if answered else (),
            attachments=attachments,
        )
        with self.store.transaction():
            queue_id = self.queue(mailbox, mail, kind=kind, ticket_id=ticket_id)
            self.store.touch_ticket(ticket_id, now(), status="closed" if close else None)
        return queue_id

    # ------------------------------------------------------------------------------------ sending
    def send_due(self, *, mailbox: str | None = None, ids: Sequence[int] | None = None) -> list[Attempt]:
        """Send every due email (of one mailbox, or only ``ids``); nothing when the outgoing service is off."""
        if not self.enabled:
            return []
        current = self.clock()
        due = self.store.outbound_due(
            time=stamp(current), stale_before=stamp(current - CLAIM_EXPIRES), mailbox=mailbox
        )
        if ids is not None:
            wanted = set(ids)
            due = [i for i in due if i in wanted]
        return [a for a in (self.send_one(i) for i in due) if a is not None]

    def send_one(self, queue_id: int) -> Attempt | None:
        """Claim and send one queued email; None if it is not waiting (sent, failed, or another sender has it)."""
        current = self.clock()
        item = self.store.claim_outbound(
            queue_id, time=stamp(current), stale_before=stamp(current - CLAIM_EXPIRES)
        )
        if item is None:
            return None
        answer, error, temporary, retry_after, secret = "", "", False, None, False
        try:
            mailbox = self.config.mailbox(item["mailbox"])
            message = message_from_bytes(self.store.raw_message(item["raw_id"]), policy=email_policy.default)
            assert isinstance(message, EmailMessage)
            answer = self.transport(mailbox).send(
                message, envelope_from=item["envelope_from"], recipients=item["recipients"].split(",")
            )
        except SendError as exc:
            error, temporary, retry_after = str(exc), exc.temporary, exc.retry_after
        except SecretError as exc:  # fix the credential; until then keep trying
            error, temporary, secret = str(exc), True, True
        except IntegratorError as exc:  # no such mailbox any more, outgoing.method = "none", ...
            error, temporary = str(exc), False
        except Exception as exc:  # a bug must not lose the email: it stays visible as failed
            log.exception("unexpected error sending queued email %s", queue_id)
            error, temporary = f"Unexpected {type(exc).__name__}: {exc}", False
        return self._record(item, answer=answer, error=error, temporary=temporary, retry_after=retry_after,
                            secret=secret)

    def _record(
        self,
        item: dict[str, object],
        *,
        answer: str,
        error: str,
        temporary: bool,
        retry_after: float | None,
        secret: bool,
    ) -> Attempt:
        queue_id = int(item["id"])  # type: ignore[call-overload]
        attempts = int(item["attempts"])  # type: ignore[call-overload]
        current = self.clock()
        time = stamp(current)
        retry_at = None
        with self.store.transaction():
            if not error:
                status, detail = "sent", answer or "accepted"
                self.store.finish_outbound(queue_id, status="sent", time=time, answer=detail)
            else:
                created = datetime.strptime(str(item["created_at"]), TIME_FORMAT).replace(tzinfo=UTC)
                wait = backoff(attempts)
                if retry_after is not None:
                    wait = max(wait, timedelta(seconds=retry_after))
                status = "failed"
                if temporary and current + wait - created <= GIVE_UP_AFTER:
                    retry_at = stamp(current + wait)
                    detail = f"{error} Attempt {attempts}; will retry after {retry_at}."
                    self.store.finish_outbound(
                        queue_id, status="queued", time=time, error=error, next_attempt_at=retry_at
                    )
                else:
                    why = "gave up after retrying for 5 days" if temporary else "a permanent failure"
                    detail = (
                        f"{error} Attempt {attempts}; will not retry ({why}). `integrator outbox retry "
                        f"{queue_id}` sends it again."
                    )
                    self.store.finish_outbound(queue_id, status="failed", time=time, error=error)
            self.store.log_outbound_for_queue(queue_id, status, detail, time=time)
        if error:
            log.warning("%s: email %s to %s not sent: %s", item["mailbox"], queue_id, item["recipients"], detail)
        else:
            log.info("%s: email %s to %s sent: %s", item["mailbox"], queue_id, item["recipients"], detail)
        return Attempt(
            queue_id=queue_id, mailbox=str(item["mailbox"]), status=status, detail=detail,
            recipients=str(item["recipients"]), subject=str(item["subject"]),
            ticket_id=item["ticket_id"],  # type: ignore[arg-type]
            retry_at=retry_at, secret_error=secret,
        )

    def retry(self, ids: Sequence[int] | None = None) -> list[Attempt]:
        """Make failed and waiting emails due now and send them (all of them when ``ids`` is None)."""
        due = self.store.requeue_outbound(ids, time=stamp(self.clock()))
        if not due:
            return []
        return self.send_due(ids=due)

    # ------------------------------------------------------------------------------------ test email
    def test_mailbox(self, name: str) -> Mailbox:
        """The mailbox a test email goes through: ``name``, or the outgoing defaults mailbox when ``name``
        sends nothing."""
        mailbox = self.config.mailbox(name)
        if mailbox.outgoing.method != "none":
            return mailbox
        fallback = self.config.outgoing.mailbox
        if fallback and fallback.casefold() != mailbox.name.casefold():
            other = self.config.mailbox(fallback)
            if other.outgoing.method != "none":
                return other
        raise OutgoingError(
            f'Mailbox {mailbox.name!r} sends no email (outgoing.method = "none") and no outgoing defaults mailbox '
            f"([outgoing] mailbox) can send for it. Set its outgoing settings, e.g. integrator mailbox edit "
            f"{mailbox.name!r} --set outgoing.method=smtp --set outgoing.host=smtp.example.com"
        )

    def send_test(self, mailbox: Mailbox, to: str) -> str:
        """Send the test email now (not queued) and return the server's answer; logged ``sent``/``failed``."""
        out = mailbox.outgoing
        where = f"{out.method}" + (f" via {out.host}:{out.port or 'default port'} ({out.security})"
                                   if out.method == "smtp" else "")
        mail = compose(
            mailbox,
            to=[to],
            subject=f"Test email from halo-integrator ({mailbox.name})",
            body=(
                f"This is a test email from the mailbox {mailbox.name} <{mailbox.address}>, sent through its "
                f"outgoing settings ({where}).\n\nIf you can read it, outgoing email works."
            ),
            signature=signature_for(mailbox, None),
        )
        subject = str(mail.message["Subject"])
        recipients = ",".join(mail.recipients)
        try:
            answer = self.transport(mailbox).send(
                mail.message, envelope_from=mailbox.address, recipients=list(mail.recipients)
            )
        except IntegratorError as exc:
            with self.store.transaction():
                self.store.log_outbound(
                    mailbox=mailbox.name, status="failed", recipients=recipients, subject=subject,
                    message_id=mail.message_id, detail=f"Test email: {exc}",
                )
            raise
        with self.store.transaction():
            self.store.log_outbound(
                mailbox=mailbox.name, status="sent", recipients=recipients, subject=subject,
                message_id=mail.message_id, detail=f"Test email: {answer}",
            )
        return answer


def _kind_phrase(kind: str) -> str:
    return {
        "new_ticket": "new-ticket acknowledgement",
        "agent_reply": "agent reply",
        "ticket_closed": "ticket closed notice",
    }.get(kind, kind)


def _newest_received(email: ParsedEmail) -> datetime | None:
    for name, value in email.headers:
        if name.lower() == "received" and ";" in value:
            try:
                return parsedate_to_datetime(value.rpartition(";")[2].strip())
            except (TypeError, ValueError, IndexError):
                continue
    return None
