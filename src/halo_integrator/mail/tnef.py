"""Outlook's TNEF (``winmail.dat``, application/ms-tnef): unpacked into a body and attachments."""

from __future__ import annotations

from dataclasses import dataclass, field

from halo_integrator.mail.charsets import decode_bytes
from halo_integrator.mail.model import Attachment
from halo_integrator.mail.names import content_type_for, safe_filename


@dataclass
class TnefContent:
    text: str = ""
    html: str = ""
    rtf_only: bool = False  # the body exists only as (compressed) RTF, which we cannot render
    attachments: list[Attachment] = field(default_factory=list)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return decode_bytes(value.rstrip(b"\x00"), None)[0]
    if isinstance(value, str):
        return value.rstrip("\x00")
    return ""


def unpack(data: bytes) -> TnefContent:
    """Unpack a TNEF blob. Raises on a blob that is not TNEF (the caller keeps it as an attachment)."""
    from tnefparse import TNEF

    tnef = TNEF(data, do_checksum=False)
    result = TnefContent(text=_text(tnef.body), html=_text(tnef.htmlbody))
    result.rtf_only = not (result.text or result.html) and bool(getattr(tnef, "_rtfbody", None))
    for index, item in enumerate(tnef.attachments, 1):
        try:
            name = item.long_filename()
        except Exception:
            name = getattr(item, "name", "")
        name = _text(name) if not isinstance(name, str) else name.rstrip("\x00")
        payload = item.data if isinstance(item.data, bytes) else b""
        filename = safe_filename(name, "application/octet-stream", f"attachment-{index}")
        result.attachments.append(Attachment(filename, content_type_for(filename), payload))
    return result
