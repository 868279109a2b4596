"""Calendar invitations (text/calendar): a short human summary for the ticket body."""

from __future__ import annotations

from datetime import date, datetime


def _when(value: object) -> str:
    moment = getattr(value, "dt", value)
    if isinstance(moment, datetime):
        text = moment.strftime("%Y-%m-%d %H:%M")
        zone = moment.tzname() if moment.tzinfo else None
        return f"{text} {zone}" if zone else text
    if isinstance(moment, date):
        return moment.isoformat()
    return str(moment) if moment else ""


def _person(value: object) -> str:
    if value is None:
        return ""
    text = str(value)
    if text.lower().startswith("mailto:"):
        text = text[7:]
    name = getattr(value, "params", {}).get("CN") if hasattr(value, "params") else None
    return f"{name} <{text}>" if name and name != text else text


def summarise(ics: bytes | str) -> str:
    """Method, summary, start/end, location and organizer of each event. Raises on non-iCalendar."""
    from icalendar import Calendar

    calendar = Calendar.from_ical(ics)
    method = str(calendar.get("METHOD", "") or "")
    blocks: list[str] = []
    for event in calendar.walk("VEVENT"):
        lines = ["Calendar invitation" + (f" ({method.upper()})" if method else "")]
        for label, key, render in (
            ("Summary", "SUMMARY", str),
            ("Start", "DTSTART", _when),
            ("End", "DTEND", _when),
            ("Location", "LOCATION", str),
            ("Organizer", "ORGANIZER", _person),
        ):
            value = event.get(key)
            if value is not None:
                text = render(value).strip()
                if text:
                    lines.append(f"{label}: {text}")
        blocks.append("\n".join(lines))
    if not blocks and method:
        blocks.append(f"Calendar message ({method.upper()})")
    return "\n\n".join(blocks)
