"""What the parser returns: plain, picklable, immutable values (they cross process boundaries)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from halo_integrator.picklable import Picklable


@dataclass(frozen=True, slots=True)
class Address(Picklable):
    name: str
    address: str  # lower-cased addr-spec, "" when none could be found

    def __str__(self) -> str:
        if self.name and self.address:
            return f"{self.name} <{self.address}>"
        return self.address or self.name


@dataclass(frozen=True, slots=True)
class Attachment(Picklable):
    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None  # without angle brackets
    inline: bool = False
    sha256: str = field(default="", compare=False)
    """Hex SHA-256 of ``data``, computed when the attachment is made (in the parse worker, not the importer)."""

    def __post_init__(self) -> None:
        if not self.sha256:
            object.__setattr__(self, "sha256", hashlib.sha256(self.data).hexdigest())

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class ParsedEmail(Picklable):
    """One email, decoded. Produced by :func:`halo_integrator.mail.parse`, which never raises."""

    message_id: str | None  # without angle brackets
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    sender: Address  # From (falls back to Sender, Reply-To, Return-Path)
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    date: datetime | None  # timezone-aware when the header had a zone
    headers: tuple[tuple[str, str], ...]  # every top-level header, decoded, in order
    text_body: str
    html_body: str | None  # sanitised; cid: references kept
    attachments: tuple[Attachment, ...]
    auto_reply: str | None = None  # why we think it is an auto-reply (RFC 3834 etc.), else None
    bounce: str | None = None  # why we think it is a bounce / DSN, else None
    defects: tuple[str, ...] = field(default=())  # what was wrong with the MIME, for the log
    fingerprint: str = ""  # sha256 hex of the content, not of transport headers
    returned_ids: tuple[str, ...] = ()  # of a bounce: Message-ID, In-Reply-To, References of the email returned

    def header(self, name: str) -> str | None:
        """The first header of that name (case-insensitive), decoded."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None
