"""Loop protection (DESIGN contract 6): is an email an auto-reply, or a bounce / delivery report?

Each verdict is a short reason string (for the inbound log) or None. A bounce wins over an auto-reply.

``X-Auto-Response-Suppress``: Outlook/Exchange set it on out-of-office replies and other
Exchange-generated mail, but also on ordinary meeting requests and responses that people send. We
therefore count it only when the email is not a calendar message (no text/calendar part and no
``Content-Class: urn:content-classes:calendarmessage``); meeting mail from a person still makes a ticket.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(?:"
    r"auto(?:matic|matische?|matisk|maattinen|matyczna)?[\s_-]*(?:reply|response|antwort|svar|vastaus|odpowied[zź]|antwoord)"
    r"|auto:\s"
    r"|out\s+of\s+(?:the\s+)?office"
    r"|abwesenheits?(?:notiz|meldung)|abwesend\b|nicht\s+im\s+b[üu]ro"
    r"|autosvar|fr[åa]nvaro|frav[æa]r"
    r"|r[ée]ponse\s+automatique|absence\s+du\s+bureau|message\s+d'absence"
    r"|respuesta\s+autom[áa]tica|fuera\s+de\s+la\s+oficina"
    r"|risposta\s+automatica|fuori\s+sede|assente"
    r"|resposta\s+autom[áa]tica|ausente"
    r"|afwezig|niet\s+aanwezig|automatisch\s+antwoord"
    r"|poza\s+biurem|nieobecno[sś][cć]"
    r"|vacation\s+(?:reply|message|notice|response)|on\s+vacation|away\s+from\s+(?:the\s+)?office"
    r"|i\s+am\s+(?:currently\s+)?out\s+of\s+(?:the\s+)?office|autoreply|auto-reply"
    r"|自动回复|自動回覆|自動応答|不在"
    r")",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"^\s*(?:"
    r"undeliver(?:ed|able)|undelivered\s+mail\s+returned\s+to\s+sender"
    r"|delivery\s+status\s+notification\s*\((?:failure|delay)\)"
    r"|delivery\s+(?:status\s+)?(?:notification|failure|failed|problem|has\s+failed)"
    r"|mail\s+delivery\s+(?:failed|failure|system|subsystem|error|problem)"
    r"|returned\s+mail|return(?:ed)?\s+to\s+sender|failure\s+notice|message\s+not\s+delivered"
    r"|non[\s-]?deliver(?:y|able)|nondeliverable|could\s+not\s+send\s+message"
    r"|warning:\s+could\s+not\s+send|mail\s+system\s+error|delivery\s+notification"
    r"|unzustellbar|nicht\s+zustellbar|non\s+remis|onbestelbaar|olevererbart|kan\s+ikke\s+leveres"
    r"|no\s+se\s+puede\s+entregar|impossibile\s+recapitare|message\s+delivery\s+(?:failed|failure)"
    r"|delivery\s+report|permanent\s+delivery\s+failure|message\s+you\s+sent\s+(?:has|could)"
    r")",
    re.IGNORECASE,
)
_DAEMON = re.compile(r"^(?:mailer-daemon|postmaster|mail-daemon|mailerdaemon|mdaemon|mail\.?delivery)\b",
                     re.IGNORECASE)
_DAEMON_NAME = re.compile(r"mail\s*delivery\s*(?:sub)?system|mailer-?daemon|postmaster", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Signals:
    """What the parser saw that matters for the verdicts (headers are the decoded top-level ones)."""

    headers: Mapping[str, str]  # lower-cased name -> first value
    subject: str
    sender_address: str
    sender_name: str
    content_type: str  # top-level, lower-cased
    report_type: str  # report-type parameter of a multipart/report, lower-cased, "" if none
    part_types: frozenset[str]  # content types of all parts seen


def _first(headers: Mapping[str, str], name: str) -> str:
    return headers.get(name, "").strip()


def bounce_reason(sig: Signals) -> str | None:
    report = sig.report_type
    if sig.content_type == "multipart/report" and report.startswith("delivery-status"):
        return "multipart/report; report-type=delivery-status"
    if "message/delivery-status" in sig.part_types or "message/global-delivery-status" in sig.part_types:
        return "message/delivery-status part"
    if sig.content_type == "multipart/report" and report == "feedback-report":
        return "feedback report (ARF)"
    local = sig.sender_address.split("@", 1)[0]
    daemon = bool(_DAEMON.match(local)) or bool(_DAEMON_NAME.search(sig.sender_name))
    return_path = _first(sig.headers, "return-path")
    null_path = return_path.replace(" ", "") in ("<>", "") and "return-path" in sig.headers
    if daemon and null_path:
        return f"null Return-Path from {sig.sender_address or sig.sender_name}"
    if _BOUNCE_SUBJECT.match(sig.subject) and (daemon or null_path or not sig.sender_address):
        return f"bounce subject from {sig.sender_address or 'no sender'}: {sig.subject[:60]}"
    if daemon and _BOUNCE_SUBJECT.search(sig.subject):
        return f"mailer-daemon sender: {sig.sender_address}"
    if "x-failed-recipients" in sig.headers:
        return "X-Failed-Recipients header"
    if _BOUNCE_SUBJECT.match(sig.subject) and ("rfc822" in " ".join(sig.part_types)):
        return f"bounce subject with the returned message attached: {sig.subject[:60]}"
    return None


def auto_reply_reason(sig: Signals) -> str | None:
    h = sig.headers
    auto_submitted = _first(h, "auto-submitted").lower()
    if auto_submitted and not auto_submitted.startswith("no"):
        return f"Auto-Submitted: {auto_submitted[:40]}"
    for name in ("x-autoreply", "x-autorespond", "x-autoresponder", "x-auto-reply", "x-autogenerated"):
        value = _first(h, name).lower()
        if name in h and value not in ("no", "false", "0"):
            return f"{name} header"
    precedence = _first(h, "precedence").lower()
    if precedence in ("bulk", "junk", "auto_reply", "list", "auto-reply"):
        return f"Precedence: {precedence}"
    if "x-ms-exchange-generated-message-source" in h:
        source = _first(h, "x-ms-exchange-generated-message-source")
        return "X-MS-Exchange-Generated-Message-Source: " + source[:40]
    if "x-ms-exchange-inbox-rules-loop" in h:
        return "X-MS-Exchange-Inbox-Rules-Loop header"
    if sig.content_type == "multipart/report" and sig.report_type == "disposition-notification":
        return "read receipt (disposition-notification)"
    if _AUTO_REPLY_SUBJECT.match(sig.subject):
        return f"auto-reply subject: {sig.subject[:60]}"
    if "x-auto-response-suppress" in h:
        content_class = _first(h, "content-class").lower()
        calendar = "text/calendar" in sig.part_types or "calendarmessage" in content_class
        if not calendar:
            return "X-Auto-Response-Suppress: " + _first(h, "x-auto-response-suppress")[:40]
    return None


def classify(sig: Signals) -> tuple[str | None, str | None]:
    """(auto_reply, bounce): at most one of them is set; a bounce wins."""
    bounce = bounce_reason(sig)
    if bounce:
        return None, bounce
    return auto_reply_reason(sig), None


def first_values(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    result: dict[str, str] = {}
    for name, value in headers:
        result.setdefault(name.lower(), value)
    return result
