"""Email templates of a mailbox's message group, rendered with the placeholders of :data:`PLACEHOLDERS`.

A template is ``str.format`` text over plain names only (``{ticket_id}``, ``{requester_name}``, ...); the
config loader already rejects unknown names. Every placeholder always has a value (``""`` when the caller
has none), so a template never fails on a missing one. A kind that a group does not define falls back to
the ``Default`` group's template of that kind, then to the built-in one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from halo_integrator.config import PLACEHOLDERS, TEMPLATE_KINDS, Config, MessageGroup, MessageTemplate, template_problem
from halo_integrator.errors import OutgoingError

DEFAULT_GROUP = "Default"


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    body: str


def template_context(**values: object) -> dict[str, str]:
    """A context holding every placeholder: the values given (as text), ``""`` for the rest.

    ``None`` becomes ``""``. A name that is not a placeholder is an error, so a typo in the caller shows up
    at once instead of as an empty field in a customer's email.
    """
    unknown = sorted(set(values) - set(PLACEHOLDERS))
    if unknown:
        raise OutgoingError(
            f"Unknown template placeholder(s): {', '.join(unknown)}; allowed: {', '.join(PLACEHOLDERS)}."
        )
    context = dict.fromkeys(PLACEHOLDERS, "")
    for key, value in values.items():
        context[key] = "" if value is None else str(value)
    return context


def pick_template(group: MessageGroup, kind: str, default: MessageGroup | None = None) -> MessageTemplate:
    """The group's template of that kind, else the default group's, else the built-in one."""
    if kind not in TEMPLATE_KINDS:
        raise OutgoingError(f"No template kind {kind!r}; kinds: {', '.join(TEMPLATE_KINDS)}.")
    for candidate in (group, default, MessageGroup(name=DEFAULT_GROUP)):
        if candidate is not None and kind in candidate.templates:
            return candidate.templates[kind]
    raise OutgoingError(f"No {kind} template anywhere.")  # pragma: no cover - the built-in group has all


def render_text(text: str, context: Mapping[str, str], *, where: str = "template") -> str:
    """Fill one template text. Only plain placeholder names are allowed (no ``{x.attr}``, ``{x[0]}``)."""
    values = template_context()
    values.update(context)
    if problem := template_problem(text):
        raise OutgoingError(f"The {where} {problem}.")
    try:
        return text.format_map(values)
    except (ValueError, KeyError, IndexError) as exc:  # e.g. a bad format spec such as {ticket_id:d} on text
        raise OutgoingError(f"The {where} cannot be filled in: {exc}.") from None


def render(
    group: MessageGroup,
    kind: str,
    context: Mapping[str, str],
    *,
    default: MessageGroup | None = None,
) -> Rendered:
    """Render the template ``kind`` of ``group`` (falling back to ``default``) with ``context``."""
    tmpl = pick_template(group, kind, default)
    where = f"{kind} template of message group {group.name!r}"
    return Rendered(
        subject=render_text(tmpl.subject, context, where=f"subject of the {where}").strip(),
        body=render_text(tmpl.body, context, where=f"body of the {where}"),
    )


def render_for(config: Config, group_name: str, kind: str, context: Mapping[str, str]) -> Rendered:
    """Render with the config's message group ``group_name``, falling back to its ``Default`` group."""
    return render(
        config.message_group(group_name), kind, context, default=config.message_group(DEFAULT_GROUP)
    )
