"""Times as the store keeps them, and the durations users type."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
"""How every time is stored: UTC, ISO 8601 with microseconds and a Z (so they sort as text)."""


def stamp(when: datetime) -> str:
    """A moment as the store keeps it (:data:`TIME_FORMAT`; ``isoformat`` writes it faster than strftime)."""
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def utc_today() -> str:
    """Today's date in UTC, ISO 8601 (``2026-11-28``)."""
    return datetime.now(UTC).date().isoformat()


def since_to_iso(value: str) -> str:
    """``"2h"``, ``"3d"``, ``"45m"``, ``"1w"`` or a date / datetime → the stored time format."""
    v = value.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if v and v[-1] in units and v[:-1].isdigit():
        moment = datetime.now(UTC) - timedelta(seconds=int(v[:-1]) * units[v[-1]])
    else:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"--since {value!r} is neither a duration (45m, 2h, 3d, 1w) nor a date (2026-11-27 or "
                "2026-11-27T09:30)."
            ) from None
        if moment.tzinfo is None:
            moment = moment.astimezone()
    return stamp(moment)
