"""Which ticket an email belongs to: the ticket tag in the subject, else its In-Reply-To / References.

Pure functions over strings; the importer asks the store about the ids these return.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# Reply and forward prefixes in common languages. Each may carry a counter ("Re[2]:", "RE(3):", "Re^2:").
_PREFIXES = (
    "re", "fw", "fwd", "aw", "wg", "sv", "vs", "vb", "antw", "antwort", "ref", "réf", "rép", "tr", "enc",
    "res", "rv", "r", "odp", "pd", "ynt", "fs", "vl", "továbbítás", "válasz", "atb", "ats", "doorst",
    "wtr", "πρθ", "απ", "σχετ", "ha", "תגובה", "הועבר", "رد", "إعادة توجيه", "回复", "回覆", "答复", "转发",
    "轉寄", "返信", "転送", "답장", "전달", "odg", "přeposlat", "fwd:fw", "sv", "vs",
)
_PREFIX_RE = re.compile(
    r"^\s*(?:(?:" + "|".join(sorted({re.escape(p) for p in _PREFIXES}, key=len, reverse=True)) + r")"
    r"\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:：]\s*)+",
    re.IGNORECASE,
)
# list tags such as "[support-list]" in front of a prefix
_LIST_TAG_RE = re.compile(r"^\s*\[[^\]#\d][^\]]{0,40}\]\s*")


def strip_reply_prefixes(subject: str) -> str:
    """``"RE: AW: Fwd: Printer"`` → ``"Printer"``; also after a mailing-list tag."""
    s = subject
    for _ in range(10):
        new = _PREFIX_RE.sub("", s)
        m = _LIST_TAG_RE.match(new)
        if m and _PREFIX_RE.match(new[m.end() :]):
            new = new[m.end() :]
        if new == s:
            break
        s = new
    return s.strip()


@lru_cache(maxsize=64)
def tag_pattern(ticket_tag: str) -> re.Pattern[str]:
    """A regex finding the ticket number in text, from a tag format such as ``"[#{id}]"``."""
    before, _, after = ticket_tag.partition("{id}")
    return re.compile(re.escape(before) + r"\s*(\d{1,12})\s*" + re.escape(after), re.IGNORECASE)


def format_tag(ticket_tag: str, ticket_id: int) -> str:
    return ticket_tag.replace("{id}", str(ticket_id))


def find_ticket_numbers(text: str, ticket_tag: str) -> list[int]:
    """Every ticket number tagged in the text, in order of appearance, without repeats."""
    seen: list[int] = []
    for m in tag_pattern(ticket_tag).finditer(text or ""):
        n = int(m.group(1))
        if n not in seen:
            seen.append(n)
    return seen


def remove_tag(subject: str, ticket_tag: str) -> str:
    return re.sub(r"\s{2,}", " ", tag_pattern(ticket_tag).sub("", subject)).strip()


@lru_cache(maxsize=16)  # asked up to three times for each new ticket (throttle, ticket, acknowledgement)
def clean_subject(subject: str, ticket_tag: str) -> str:
    """The subject a ticket shows: no reply prefixes, no ticket tag."""
    return strip_reply_prefixes(remove_tag(strip_reply_prefixes(subject), ticket_tag)) or "(no subject)"


@dataclass(frozen=True, slots=True)
class ThreadEvidence:
    """Why an email joined a ticket (or did not), kept in the inbound log's decision."""

    ticket_id: int | None
    how: str  # "subject_tag" | "body_tag" | "in_reply_to" | "references" | "none"
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"ticket_id": self.ticket_id, "how": self.how, "detail": self.detail}
