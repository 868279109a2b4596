"""Outgoing email: templates, composition, loop protection and transports (SMTP, Graph, Gmail).

Most callers want :class:`~halo_integrator.outgoing.outbox.Outbox` (queue, acknowledge, reply, send_due;
see docs/outgoing.md). Underneath, typical use of the parts::

    from halo_integrator.outgoing import compose, make_transport, render_for, template_context

    text = render_for(cfg, mailbox.outgoing.message_group, "new_ticket", template_context(ticket_id=7, ...))
    mail = compose(mailbox, to=[requester], subject=text.subject, body=text.body, ticket_id=7,
                   answered_message_id=parsed.message_id, answered_references=parsed.references, auto=True)
    answer = make_transport(mailbox, credential, secrets).send(
        mail.message, envelope_from=mailbox.address, recipients=list(mail.recipients))

Heavy libraries (msal, google-auth, requests) load only when a cloud transport or token provider is used.
"""

from __future__ import annotations

from halo_integrator.outgoing.compose import (
    Composed,
    OutgoingAttachment,
    ack_suppression_reason,
    compose,
    is_no_reply_address,
    may_send,
    signature_for,
    tagged_subject,
    text_to_html,
    thread_headers,
)
from halo_integrator.outgoing.outbox import Attempt, Outbox, resolve_agent
from halo_integrator.outgoing.templates import Rendered, render, render_for, template_context
from halo_integrator.outgoing.tokens import (
    GoogleServiceAccount,
    MsalClientCredentials,
    StaticToken,
    TokenProvider,
)
from halo_integrator.outgoing.transports import (
    GmailTransport,
    GraphTransport,
    SendError,
    SmtpTransport,
    Transport,
    make_transport,
    to_bytes,
)

__all__ = [
    "Attempt",
    "Composed",
    "GmailTransport",
    "GoogleServiceAccount",
    "GraphTransport",
    "MsalClientCredentials",
    "Outbox",
    "OutgoingAttachment",
    "Rendered",
    "SendError",
    "SmtpTransport",
    "StaticToken",
    "TokenProvider",
    "Transport",
    "ack_suppression_reason",
    "compose",
    "is_no_reply_address",
    "make_transport",
    "may_send",
    "render",
    "render_for",
    "resolve_agent",
    "signature_for",
    "tagged_subject",
    "template_context",
    "text_to_html",
    "thread_headers",
    "to_bytes",
]
