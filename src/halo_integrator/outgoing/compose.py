"""Building outgoing emails: pure functions, no I/O.

:func:`compose` makes the :class:`~email.message.EmailMessage` for a ticket email: From the mailbox,
the ticket tag in the subject exactly once, a Message-ID under the mailbox's domain (returned, so the caller
stores it and recognises replies), threading headers to the email answered, the signature, a plain-text
body with an HTML alternative, attachments, and for automatic mail the RFC 3834 headers.

:func:`may_send` applies the mailbox's sending restrictions to an agent, :func:`signature_for` picks the
signature, and :func:`ack_suppression_reason` decides whether an acknowledgement must not be sent (DESIGN,
contract 6).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Protocol

from halo_integrator.config import Agent, Mailbox
from halo_integrator.errors import AccessDenied, OutgoingError
from halo_integrator.mail.model import Address

MAX_REFERENCES = 20
"""References keeps the thread's first id and the most recent ones, at most this many (RFC 5322 3.6.4)."""

SIGNATURE_SEPARATOR = "-- "  # the usual "dash dash space" line, which reply trimmers recognise


class AttachmentLike(Protocol):
    @property
    def filename(self) -> str: ...

    @property
    def content_type(self) -> str: ...

    @property
    def data(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class OutgoingAttachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Composed:
    message: EmailMessage
    message_id: str  # without angle brackets, as the parser stores ids
    recipients: tuple[str, ...]  # envelope recipients: To + Cc + Bcc, deduplicated, lower-case


# --------------------------------------------------------------------------------------------- subject


def ticket_tag(tag_template: str, ticket_id: int | str) -> str:
    """The mailbox's ticket tag for a ticket: ``"[#{id}]"`` → ``"[#123]"``."""
    return tag_template.replace("{id}", str(ticket_id))


def tagged_subject(subject: str, tag_template: str, ticket_id: int | str | None) -> str:
    """The subject with the ticket tag exactly once: prepended when missing, extra copies removed."""
    subject = " ".join(subject.split())  # no CR/LF (header injection), no runs of blanks
    if ticket_id is None:
        return subject
    tag = ticket_tag(tag_template, ticket_id)
    first = subject.find(tag)
    if first < 0:
        return f"{tag} {subject}".strip()
    head, tail = subject[: first + len(tag)], subject[first + len(tag) :]
    return " ".join((head + tail.replace(tag, "")).split())


# --------------------------------------------------------------------------------------------- threading


def _bare_id(message_id: str) -> str:
    return message_id.strip().strip("<>").strip()


def thread_headers(
    answered_message_id: str | None, answered_references: Sequence[str] = ()
) -> tuple[str | None, list[str]]:
    """In-Reply-To and References (bare ids) for a reply to the email with these headers.

    References is the answered email's References plus its Message-ID, without duplicates, capped at
    :data:`MAX_REFERENCES` by keeping the first id (the thread's root) and the most recent ones.
    """
    if not answered_message_id:
        return None, []
    refs: list[str] = []
    for ref in (*answered_references, answered_message_id):
        bare = _bare_id(ref)
        if bare and bare not in refs:
            refs.append(bare)
    if len(refs) > MAX_REFERENCES:
        refs = [refs[0], *refs[-(MAX_REFERENCES - 1) :]]
    return _bare_id(answered_message_id), refs


# --------------------------------------------------------------------------------------------- bodies


def signature_for(mailbox: Mailbox, agent: Agent | None) -> str:
    """The signature for mail from this mailbox by this agent (None: automatic mail).

    Order: the mailbox's override for the agent (``outgoing.signature_overrides[agent.name]``), then the
    agent's own signature, then the mailbox's signature.
    """
    if agent is not None:
        override = mailbox.outgoing.signature_overrides.get(agent.name)
        if override is not None:
            return override
        if agent.signature:
            return agent.signature
    return mailbox.outgoing.signature


def with_signature(text: str, signature: str) -> str:
    text = text.rstrip()
    signature = signature.strip("\n")
    if not signature.strip():
        return text + "\n"
    return f"{text}\n\n{SIGNATURE_SEPARATOR}\n{signature}\n"


def text_to_html(text: str) -> str:
    """A simple HTML rendering of plain text: escaped, blank lines make paragraphs, newlines make <br>."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", text) if p.strip()]
    inner = "\n".join(
        "<p>" + "<br>\n".join(html.escape(line, quote=False) for line in p.split("\n")) + "</p>"
        for p in paragraphs
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>\n'
        f'<body style="font-family: sans-serif">\n{inner}\n</body></html>\n'
    )


def _text_cte(text: str) -> str | None:
    # 8bit bodies are not safe through every relay and API; let ascii text be chosen by the library (7bit or,
    # for long lines, quoted-printable) and send anything else as quoted-printable
    return None if text.isascii() else "quoted-printable"


# --------------------------------------------------------------------------------------------- compose


def _header_address(addr: Address | str) -> HeaderAddress:
    if isinstance(addr, str):
        from email.utils import parseaddr

        name, spec = parseaddr(addr)
        addr = Address(name=name, address=spec)
    spec = addr.address.strip()
    if "@" not in spec or any(c in spec for c in "\r\n<>, "):
        raise OutgoingError(f"{spec or addr.name!r} is not an email address.")
    local, _, domain = spec.rpartition("@")
    return HeaderAddress(
        display_name=addr.name.replace("\r", " ").replace("\n", " "), username=local, domain=domain
    )


def mailbox_domain(mailbox: Mailbox) -> str:
    address = mailbox.address.strip()
    if "@" not in address:
        raise OutgoingError(
            f"Mailbox {mailbox.name!r} has no address; set mailboxes.address to the address it sends from."
        )
    return address.rpartition("@")[2].lower()


def compose(
    mailbox: Mailbox,
    *,
    to: Iterable[Address | str],
    subject: str,
    body: str,
    ticket_id: int | str | None = None,
    cc: Iterable[Address | str] = (),
    bcc: Iterable[Address | str] = (),
    from_name: str | None = None,
    signature: str = "",
    answered_message_id: str | None = None,
    answered_references: Sequence[str] = (),
    attachments: Iterable[AttachmentLike] = (),
    auto: bool = False,
    date: datetime | None = None,
) -> Composed:
    """An email from ``mailbox`` ready for a transport, and its Message-ID.

    ``subject`` gets the mailbox's ticket tag exactly once when ``ticket_id`` is given. ``signature`` is
    appended after a ``-- `` line (see :func:`signature_for`). ``answered_*`` are the Message-ID and
    References of the email this one answers. ``auto=True`` marks an automatic email (acknowledgement,
    closure notice): ``Auto-Submitted: auto-replied`` and ``X-Auto-Response-Suppress: All``, so that
    well-behaved systems do not answer it. Bcc is kept in the message (Graph and Gmail read recipients from
    the headers); the SMTP transport strips it before sending.
    """
    domain = mailbox_domain(mailbox)
    to_list = [_header_address(a) for a in to]
    cc_list = [_header_address(a) for a in cc]
    bcc_list = [_header_address(a) for a in bcc]
    if not (to_list or cc_list or bcc_list):
        raise OutgoingError("An email needs at least one recipient.")

    msg = EmailMessage()
    sender = _header_address(
        Address(name=mailbox.name if from_name is None else from_name, address=mailbox.address)
    )
    msg["From"] = sender
    if to_list:
        msg["To"] = to_list
    if cc_list:
        msg["Cc"] = cc_list
    if bcc_list:
        msg["Bcc"] = bcc_list
    msg["Subject"] = tagged_subject(subject, mailbox.incoming.ticket_tag, ticket_id)
    msg["Date"] = format_datetime(date or datetime.now().astimezone())
    message_id = make_msgid(domain=domain)
    msg["Message-ID"] = message_id
    in_reply_to, references = thread_headers(answered_message_id, answered_references)
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
        msg["References"] = " ".join(f"<{r}>" for r in references)
    if auto:
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Auto-Response-Suppress"] = "All"
    msg["MIME-Version"] = "1.0"

    text = with_signature(body, signature)
    msg.set_content(text, subtype="plain", charset="utf-8", cte=_text_cte(text))
    page = text_to_html(text)
    msg.add_alternative(page, subtype="html", charset="utf-8", cte=_text_cte(page))
    for att in attachments:
        maintype, _, subtype = (att.content_type or "application/octet-stream").partition("/")
        if not subtype:
            maintype, subtype = "application", "octet-stream"
        name = att.filename.replace("\r", " ").replace("\n", " ").strip() or "attachment"
        msg.add_attachment(att.data, maintype=maintype, subtype=subtype, filename=name)

    recipients: list[str] = []
    for a in (*to_list, *cc_list, *bcc_list):
        spec = a.addr_spec.lower()
        if spec not in recipients:
            recipients.append(spec)
    return Composed(message=msg, message_id=_bare_id(message_id), recipients=tuple(recipients))


# --------------------------------------------------------------------------------------------- access


def may_send(agent: Agent, mailbox: Mailbox) -> None:
    """Raise :class:`AccessDenied` unless ``agent`` may send from ``mailbox`` (DESIGN, contract 9).

    Admins may always send. A mailbox without ``outgoing.send_restrictions`` (or with empty lists) lets
    everyone send; otherwise the agent must be in one of the listed teams or departments (names compared
    case-insensitively).
    """
    if agent.admin:
        return
    restrictions = mailbox.outgoing.send_restrictions
    teams = tuple(restrictions.get("teams", ()))
    departments = tuple(restrictions.get("departments", ()))
    if not teams and not departments:
        return
    mine_t = {t.casefold() for t in agent.teams}
    mine_d = {d.casefold() for d in agent.departments}
    if any(t.casefold() in mine_t for t in teams) or any(d.casefold() in mine_d for d in departments):
        return
    allowed = []
    if teams:
        allowed.append(("team " if len(teams) == 1 else "teams ") + ", ".join(repr(t) for t in teams))
    if departments:
        allowed.append(
            ("department " if len(departments) == 1 else "departments ")
            + ", ".join(repr(d) for d in departments)
        )
    raise AccessDenied(
        f"Agent {agent.name!r} may not send from mailbox {mailbox.name!r}: only members of "
        f"{' or '.join(allowed)} may. Ask an admin to add you to one of them, or to change "
        "outgoing.send_restrictions of the mailbox."
    )


# --------------------------------------------------------------------------------------------- loops

_NO_REPLY_LOCAL = re.compile(
    r"(^|[-_.+])(no[-_.]?reply|do[-_.]?not[-_.]?reply|do[-_.]?not[-_.]?respond|no[-_.]?response)($|[-_.+])"
    r"|^(mailer[-_.]?daemon|postmaster|bounces?|list[-_.]?bounces)($|[-_.+])",
    re.IGNORECASE,
)


def is_no_reply_address(address: str) -> bool:
    """Whether an address is one nobody reads: noreply, do-not-reply, mailer-daemon, postmaster, bounces..."""
    local = address.strip().rpartition("@")[0] or address.strip()
    return bool(_NO_REPLY_LOCAL.search(local))


def ack_suppression_reason(
    *,
    sender: str,
    our_addresses: Iterable[str],
    recent_count: int,
    limit: int,
    auto_reply: str | None = None,
    bounce: str | None = None,
) -> str | None:
    """Why no acknowledgement may go to ``sender``, or None when one may (DESIGN, contract 6).

    ``auto_reply`` and ``bounce`` are the parser's verdicts (``ParsedEmail.auto_reply`` / ``.bounce``);
    ``recent_count`` is how many acknowledgements went to this sender in the last hour; ``limit`` is
    ``outgoing.ack_limit_per_hour`` (0: no cap). The reason is written to the outbound log's
    ``suppressed`` row.
    """
    address = sender.strip().lower()
    if not address or "@" not in address:
        return "no sender address to acknowledge"
    if bounce:
        return f"the email is a bounce ({bounce})"
    if auto_reply:
        return f"the email is an automatic reply ({auto_reply})"
    ours = {a.strip().lower() for a in our_addresses if a.strip()}
    if address in ours:
        return f"the sender {address} is one of our own mailboxes"
    if is_no_reply_address(address):
        return f"the sender {address} does not take replies"
    if limit > 0 and recent_count >= limit:
        return (
            f"{recent_count} acknowledgements went to {address} in the last hour "
            f"(limit {limit} per hour, outgoing.ack_limit_per_hour)"
        )
    return None
