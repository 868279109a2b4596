"""Composition, sending restrictions, signatures and the acknowledgement policy (pure functions)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from halo_integrator.config import Agent, Incoming, Mailbox, Outgoing
from halo_integrator.errors import AccessDenied, OutgoingError
from halo_integrator.mail.model import Address
from halo_integrator.outgoing import (
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
from halo_integrator.outgoing.compose import MAX_REFERENCES

MAILBOX = Mailbox(
    name="IT Support",
    address="Support@Example.COM",
    connection="imap",
    outgoing=Outgoing(method="smtp", signature="The IT Service Desk"),
)


def test_subject_carries_the_tag_exactly_once() -> None:
    tag = "[#{id}]"
    assert tagged_subject("Printer broken", tag, 123) == "[#123] Printer broken"
    assert tagged_subject("Re: [#123] Printer broken", tag, 123) == "Re: [#123] Printer broken"
    assert tagged_subject("[#123] Re: [#123] Printer [#123] broken", tag, 123) == "[#123] Re: Printer broken"
    assert tagged_subject("Re: [#12] old ticket", tag, 123) == "[#123] Re: [#12] old ticket"
    assert tagged_subject("Ticket {id}", "HD-{id}:", 7) == "HD-7: Ticket {id}"
    assert tagged_subject("line\r\nBcc: evil@x.test", tag, 1) == "[#1] line Bcc: evil@x.test"
    assert tagged_subject("No ticket yet", tag, None) == "No ticket yet"


def test_compose_headers() -> None:
    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    mail = compose(
        MAILBOX,
        to=[Address("Ann", "ann@customer.test"), "Bob <bob@customer.test>"],
        cc=[Address("", "ANN@customer.test")],  # same address twice: one envelope recipient
        subject="Printer broken",
        body="Hi",
        ticket_id=9,
        date=when,
    )
    msg = mail.message
    assert msg["From"] == "IT Support <Support@Example.COM>"
    assert msg["To"] == "Ann <ann@customer.test>, Bob <bob@customer.test>"
    assert msg["Subject"] == "[#9] Printer broken"
    assert msg["Date"] == "Mon, 06 May 2024 07:08:09 +0000"
    assert msg["Message-ID"] == f"<{mail.message_id}>"
    assert mail.message_id.endswith("@example.com")
    assert "In-Reply-To" not in msg and "References" not in msg
    assert "Auto-Submitted" not in msg and "X-Auto-Response-Suppress" not in msg
    assert mail.recipients == ("ann@customer.test", "bob@customer.test")
    other = compose(MAILBOX, to=["ann@customer.test"], subject="x", body="y")
    assert other.message_id != mail.message_id


def test_compose_with_a_custom_tag_and_from_name() -> None:
    mb = dataclasses.replace(MAILBOX, incoming=Incoming(ticket_tag="Ticket#{id}:"))
    mail = compose(mb, to=["a@b.test"], subject="Hello", body="x", ticket_id=5, from_name="Nina via IT")
    assert mail.message["Subject"] == "Ticket#5: Hello"
    assert mail.message["From"] == "Nina via IT <Support@Example.COM>"


def test_auto_headers() -> None:
    msg = compose(MAILBOX, to=["a@b.test"], subject="Ack", body="x", auto=True).message
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"


def test_thread_headers() -> None:
    assert thread_headers(None, ["<a@x>"]) == (None, [])
    assert thread_headers("<c@x>", ["<a@x>", "b@x", "<a@x>"]) == ("c@x", ["a@x", "b@x", "c@x"])
    refs = [f"<r{i}@x>" for i in range(50)]
    irt, capped = thread_headers("<last@x>", refs)
    assert irt == "last@x"
    assert len(capped) == MAX_REFERENCES
    assert capped[0] == "r0@x"  # the thread's root is kept
    assert capped[-2:] == ["r49@x", "last@x"]
    msg = compose(
        MAILBOX,
        to=["a@b.test"],
        subject="x",
        body="y",
        answered_message_id="c@x",
        answered_references=["<a@x>"],
    ).message
    assert msg["In-Reply-To"] == "<c@x>"
    assert msg["References"] == "<a@x> <c@x>"


def test_body_signature_and_html() -> None:
    mail = compose(
        MAILBOX,
        to=["a@b.test"],
        subject="x",
        body="Dear <customer> & co,\n\nline one\nline two\n\n\n",
        signature="Nina Peach\n3rd Line",
    )
    plain = mail.message.get_body(("plain",))
    html = mail.message.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content() == "Dear <customer> & co,\n\nline one\nline two\n\n-- \nNina Peach\n3rd Line\n"
    page = html.get_content()
    assert "<p>Dear &lt;customer&gt; &amp; co,</p>" in page
    assert "<p>line one<br>\nline two</p>" in page
    assert "<p>-- <br>\nNina Peach<br>\n3rd Line</p>" in page
    assert mail.message.get_content_type() == "multipart/alternative"


def test_text_to_html_escapes_everything() -> None:
    page = text_to_html('<script>alert("x")</script>')
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_attachments() -> None:
    files = [
        OutgoingAttachment("log.txt", "text/plain", "Grüße\n".encode()),
        OutgoingAttachment("shot.png", "image/png", b"\x89PNG\r\n\x1a\n"),
        OutgoingAttachment("noname", "", b"\x00\x01"),
    ]
    msg = compose(MAILBOX, to=["a@b.test"], subject="x", body="see attached", attachments=files).message
    assert msg.get_content_type() == "multipart/mixed"
    got = [
        (p.get_filename(), p.get_content_type(), p.get_payload(decode=True)) for p in msg.iter_attachments()
    ]
    assert got == [
        ("log.txt", "text/plain", "Grüße\n".encode()),
        ("shot.png", "image/png", b"\x89PNG\r\n\x1a\n"),
        ("noname", "application/octet-stream", b"\x00\x01"),
    ]


def test_compose_refuses_bad_input() -> None:
    with pytest.raises(OutgoingError, match="recipient"):
        compose(MAILBOX, to=[], subject="x", body="y")
    with pytest.raises(OutgoingError, match="not an email address"):
        compose(MAILBOX, to=["not an address"], subject="x", body="y")
    with pytest.raises(OutgoingError, match="no address"):
        compose(dataclasses.replace(MAILBOX, address=""), to=["a@b.test"], subject="x", body="y")


# --------------------------------------------------------------------------------------------- signatures


def test_signature_order() -> None:
    nina = Agent(name="nina", signature="Nina's own")
    tom = Agent(name="tom")
    mb = dataclasses.replace(
        MAILBOX,
        outgoing=dataclasses.replace(
            MAILBOX.outgoing, signature_overrides={"nina": "Nina | 3rd Line Support"}
        ),
    )
    assert signature_for(mb, nina) == "Nina | 3rd Line Support"  # the mailbox's override wins
    assert signature_for(MAILBOX, nina) == "Nina's own"  # then the agent's own
    assert signature_for(mb, tom) == "The IT Service Desk"  # then the mailbox's
    assert signature_for(mb, None) == "The IT Service Desk"  # automatic mail


# --------------------------------------------------------------------------------------------- may_send

RESTRICTED = dataclasses.replace(
    MAILBOX,
    outgoing=dataclasses.replace(
        MAILBOX.outgoing, send_restrictions={"teams": ("Service Desk",), "departments": ("IT", "Facilities")}
    ),
)


def test_may_send_restricted() -> None:
    outsider = Agent(name="sam", teams=("Sales",), departments=("Finance",))
    with pytest.raises(AccessDenied) as info:
        may_send(outsider, RESTRICTED)
    message = str(info.value)
    assert "sam" in message and "IT Support" in message
    assert "team 'Service Desk'" in message and "departments 'IT', 'Facilities'" in message


def test_may_send_by_team_department_admin_or_unrestricted() -> None:
    may_send(Agent(name="a", teams=("service desk",)), RESTRICTED)  # case-insensitive
    may_send(Agent(name="b", departments=("Facilities",)), RESTRICTED)
    may_send(Agent(name="c", admin=True), RESTRICTED)
    may_send(Agent(name="d"), MAILBOX)
    empty = dataclasses.replace(
        MAILBOX,
        outgoing=dataclasses.replace(MAILBOX.outgoing, send_restrictions={"teams": (), "departments": ()}),
    )
    may_send(Agent(name="e"), empty)


def test_may_send_departments_only() -> None:
    mb = dataclasses.replace(
        MAILBOX, outgoing=dataclasses.replace(MAILBOX.outgoing, send_restrictions={"departments": ("HR",)})
    )
    with pytest.raises(AccessDenied, match="only members of department 'HR'"):
        may_send(Agent(name="x", teams=("HR",)), mb)  # a team named like the department does not count


# --------------------------------------------------------------------------------------------- ack policy

OURS = ["support@example.com", "billing@example.com"]


def reason(sender: str = "ann@customer.test", **kwargs: object) -> str | None:
    args: dict[str, object] = {"sender": sender, "our_addresses": OURS, "recent_count": 0, "limit": 10}
    args.update(kwargs)
    return ack_suppression_reason(**args)  # type: ignore[arg-type]


def test_ack_allowed() -> None:
    assert reason() is None
    assert reason(recent_count=9) is None
    assert reason(recent_count=500, limit=0) is None  # 0 switches the cap off


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"sender": ""}, "no sender address"),
        ({"sender": "undisclosed-recipients:;"}, "no sender address"),
        ({"auto_reply": "Auto-Submitted: auto-replied"}, "automatic reply (Auto-Submitted: auto-replied)"),
        ({"bounce": "multipart/report delivery-status"}, "bounce (multipart/report delivery-status)"),
        ({"sender": "Support@Example.com"}, "one of our own mailboxes"),
        ({"sender": "noreply@shop.test"}, "does not take replies"),
        ({"sender": "no-reply@shop.test"}, "does not take replies"),
        ({"sender": "do-not-reply@bank.test"}, "does not take replies"),
        ({"sender": "DoNotReply@bank.test"}, "does not take replies"),
        ({"sender": "jira-noreply@corp.test"}, "does not take replies"),
        ({"sender": "MAILER-DAEMON@mx.test"}, "does not take replies"),
        ({"sender": "postmaster@mx.test"}, "does not take replies"),
        ({"recent_count": 10}, "10 acknowledgements went to ann@customer.test in the last hour (limit 10"),
    ],
)
def test_ack_suppressed(kwargs: dict[str, object], expected: str) -> None:
    got = reason(**kwargs)
    assert got is not None and expected in got


def test_no_reply_addresses() -> None:
    for address in ("noreply@x.test", "no_reply@x.test", "no.reply@x.test", "bounces+123@lists.test"):
        assert is_no_reply_address(address), address
    for address in ("nora@x.test", "replyto@x.test", "support@x.test", "postmasters@x.test", "anne@x.test"):
        assert not is_no_reply_address(address), address
