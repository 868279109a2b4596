"""Email rules: ordered conditions on an email and what to do when they match. Pure functions, no I/O.

A rule matches on ``from``, ``to``, ``cc``, ``subject``, ``body``, ``attachment`` (any attachment's file name)
or ``header:<Name>`` (any header), with ``exact``, ``contains`` or ``regex`` (case-insensitive unless
``case_sensitive = true``), each condition optionally negated; ``match = "all"`` needs every condition,
``"any"`` one of them. The global rules run first, then the mailbox's, in the order written; a matching rule
with ``stop = true`` ends the evaluation. Later rules override the fields that earlier ones set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from halo_integrator.config import Condition, Rule
    from halo_integrator.mail.model import ParsedEmail

FIELDS = ("from", "to", "cc", "subject", "body", "attachment")
TICKET_FIELDS = ("type", "priority", "status", "category", "team", "agent")


@dataclass
class RuleOutcome:
    """What the rules decided for one email, and which rules matched (for the inbound log)."""

    matched: list[str] = field(default_factory=list)
    ignore_rule: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    acknowledge: bool = True
    ticket_number: int | None = None  # from a rule's update_ticket_pattern
    ticket_number_rule: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "matched": self.matched,
            "ignore": self.ignore_rule,
            "fields": self.fields,
            "acknowledge": self.acknowledge,
            "ticket_number": self.ticket_number,
        }


@lru_cache(maxsize=512)
def compiled(pattern: str, case_sensitive: bool) -> re.Pattern[str]:
    return re.compile(pattern, 0 if case_sensitive else re.IGNORECASE)


def field_values(email: ParsedEmail, name: str) -> list[str]:
    """The strings a condition on ``name`` looks at."""
    if name == "from":
        return [email.sender.address, str(email.sender)]
    if name in ("to", "cc"):
        addresses = email.to if name == "to" else email.cc
        return [v for a in addresses for v in (a.address, str(a))]
    if name == "subject":
        return [email.subject]
    if name == "body":
        return [email.text_body]
    if name == "attachment":
        return [a.filename for a in email.attachments]
    if name.startswith("header:"):
        wanted = name.partition(":")[2].strip().lower()
        return [v for k, v in email.headers if k.lower() == wanted]
    return []


def condition_matches(condition: Condition, email: ParsedEmail) -> bool:
    values = field_values(email, condition.field)
    if condition.op == "regex":
        pattern = compiled(condition.value, condition.case_sensitive)
        hit = any(pattern.search(v) for v in values)
    else:
        want = condition.value if condition.case_sensitive else condition.value.casefold()
        seen = values if condition.case_sensitive else [v.casefold() for v in values]
        hit = any(v == want for v in seen) if condition.op == "exact" else any(want in v for v in seen)
    return hit != condition.negate


def rule_matches(rule: Rule, email: ParsedEmail) -> bool:
    if not rule.conditions:
        return True
    results = (condition_matches(c, email) for c in rule.conditions)
    return all(results) if rule.match == "all" else any(results)


def evaluate(rules: list[Rule] | tuple[Rule, ...], email: ParsedEmail) -> RuleOutcome:
    """Run the rules in order over an email."""
    out = RuleOutcome()
    for rule in rules:
        if not rule_matches(rule, email):
            continue
        out.matched.append(rule.name)
        act = rule.actions
        if act.ignore and out.ignore_rule is None:
            out.ignore_rule = rule.name
        for name in TICKET_FIELDS:
            value = getattr(act, name)
            if value:
                out.fields[name] = value
        if act.no_acknowledgement:
            out.acknowledge = False
        if act.update_ticket_pattern and out.ticket_number is None:
            where = [email.subject] if act.update_ticket_in in ("subject", "both") else []
            if act.update_ticket_in in ("body", "both"):
                where.append(email.text_body[:50000])
            pattern = compiled(act.update_ticket_pattern, False)
            for text in where:
                m = pattern.search(text)
                if m and m.groups() and (m.group(1) or "").isdigit():
                    out.ticket_number = int(m.group(1))
                    out.ticket_number_rule = rule.name
                    break
        if rule.stop:
            break
    return out


def check_pattern(pattern: str, *, needs_group: bool = False) -> str | None:
    """Why a pattern is unusable, or None."""
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        return f"is not a valid regular expression ({exc})"
    if needs_group and rx.groups < 1:
        return "needs a group such as (\\d+) around the ticket number"
    return None
