"""Templates of message groups: every placeholder rendered, fallbacks, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from halo_integrator.config import PLACEHOLDERS, Config, MessageGroup, MessageTemplate
from halo_integrator.errors import OutgoingError
from halo_integrator.outgoing import render, render_for, template_context
from halo_integrator.outgoing.templates import pick_template, render_text

CONTEXT = template_context(
    ticket_id=123,
    subject="Printer broken",
    requester_name="Ann",
    requester_email="ann@customer.test",
    agent_name="Nina",
    mailbox_name="Support",
    mailbox_address="support@example.com",
    body="It works again.",
    status="Closed",
)


def test_every_placeholder_is_rendered() -> None:
    text = " | ".join("{" + p + "}" for p in PLACEHOLDERS)
    assert render_text(text, CONTEXT) == (
        "123 | Printer broken | Ann | ann@customer.test | Nina | Support | support@example.com | "
        "It works again. | Closed"
    )


def test_context_defaults_and_refusals() -> None:
    ctx = template_context(ticket_id=5, agent_name=None)
    assert set(ctx) == set(PLACEHOLDERS)
    assert ctx["ticket_id"] == "5" and ctx["agent_name"] == "" and ctx["status"] == ""
    with pytest.raises(OutgoingError, match="ticket_number"):
        template_context(ticket_number=5)


def test_default_templates() -> None:
    new = render(MessageGroup(name="Default"), "new_ticket", CONTEXT)
    assert new.subject == "Printer broken"
    assert new.body.startswith("Hello Ann,")
    assert "ticket 123" in new.body
    assert render(MessageGroup(name="Default"), "agent_reply", CONTEXT).body == "It works again."


def test_missing_kind_falls_back_to_the_default_group() -> None:
    custom_default = MessageGroup(
        name="Default",
        templates={
            "ticket_closed": MessageTemplate(subject="Closed: {subject}", body="Bye {requester_name}")
        },
    )
    vip = MessageGroup(
        name="VIP",
        templates={"new_ticket": MessageTemplate(subject="{subject}", body="Dear {requester_name}")},
    )
    assert render(vip, "new_ticket", CONTEXT, default=custom_default).body == "Dear Ann"
    closed = render(vip, "ticket_closed", CONTEXT, default=custom_default)
    assert (closed.subject, closed.body) == ("Closed: Printer broken", "Bye Ann")
    # neither group has agent_reply: the built-in one
    assert render(vip, "agent_reply", CONTEXT, default=custom_default).body == "It works again."
    assert pick_template(vip, "agent_reply").body == "{body}"
    with pytest.raises(OutgoingError, match="kinds"):
        pick_template(vip, "weekly_digest")


def test_render_for_uses_the_configs_groups(tmp_path: Path) -> None:
    cfg = Config(
        path=tmp_path / "integrator.toml",
        message_groups=(
            MessageGroup(
                name="Default",
                templates={
                    "new_ticket": MessageTemplate(subject="[Logged] {subject}", body="Logged {ticket_id}")
                },
            ),
            MessageGroup(name="Quiet", templates={}),
        ),
    )
    out = render_for(cfg, "Quiet", "new_ticket", CONTEXT)
    assert (out.subject, out.body) == ("[Logged] Printer broken", "Logged 123")


def test_values_are_not_reinterpreted() -> None:
    # a customer's subject containing braces must come out as typed, never be formatted again
    ctx = template_context(subject="{ticket_id} {0} {__class__}", requester_name="Ann")
    out = render(MessageGroup(name="Default"), "new_ticket", ctx)
    assert out.subject == "{ticket_id} {0} {__class__}"


@pytest.mark.parametrize(
    "text",
    ["{subject.__class__}", "{subject[0]}", "{0}", "{}", "{unknown}", "{subject", "{ticket_id:d}"],
)
def test_bad_templates_are_refused(text: str) -> None:
    with pytest.raises(OutgoingError):
        render_text(text, CONTEXT)
