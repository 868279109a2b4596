"""Attachment file names: safe to write to any file system, with an extension that fits the content."""

from __future__ import annotations

import mimetypes
import re

_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')
_SPACES = re.compile(r"\s+")
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
)
MAX_NAME = 200

# Preferred extensions where mimetypes' first guess is odd (".jpe", ".ksh", ...).
_EXTENSIONS = {
    "text/plain": ".txt",
    "text/html": ".html",
    "text/calendar": ".ics",
    "text/csv": ".csv",
    "text/rfc822-headers": ".txt",
    "text/x-vcard": ".vcf",
    "text/vcard": ".vcf",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/pjpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/tiff": ".tif",
    "image/svg+xml": ".svg",
    "application/pdf": ".pdf",
    "application/octet-stream": ".bin",
    "application/ms-tnef": ".dat",
    "application/vnd.ms-tnef": ".dat",
    "application/pkcs7-signature": ".p7s",
    "application/x-pkcs7-signature": ".p7s",
    "application/pkcs7-mime": ".p7m",
    "application/x-pkcs7-mime": ".p7m",
    "application/pgp-signature": ".asc",
    "application/pgp-encrypted": ".asc",
    "message/rfc822": ".eml",
    "message/delivery-status": ".txt",
    "message/disposition-notification": ".txt",
    "message/feedback-report": ".txt",
    "application/vnd.ms-outlook": ".msg",
    "application/zip": ".zip",
    "application/msword": ".doc",
    "application/vnd.ms-excel": ".xls",
}

# Default stems for parts without a name, so a ticket shows "delivery-status.txt" not "attachment.txt".
_STEMS = {
    "message/delivery-status": "delivery-status",
    "message/disposition-notification": "disposition-notification",
    "message/feedback-report": "feedback-report",
    "text/rfc822-headers": "headers",
    "text/calendar": "invite",
    "application/pkcs7-signature": "smime",
    "application/x-pkcs7-signature": "smime",
    "application/pkcs7-mime": "smime",
    "application/ms-tnef": "winmail",
    "application/vnd.ms-tnef": "winmail",
    "application/pgp-signature": "signature",
    "message/rfc822": "forwarded",
    "text/html": "message",
}


def extension_for(content_type: str) -> str:
    ext = _EXTENSIONS.get(content_type)
    if ext:
        return ext
    guessed = mimetypes.guess_extension(content_type, strict=False)
    return guessed or ".bin"


def content_type_for(filename: str) -> str:
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    return guessed or "application/octet-stream"


def safe_filename(name: str | None, content_type: str, fallback_stem: str = "attachment") -> str:
    """A file name without path parts or control characters; a default from the content type if empty."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name)
    name = _SPACES.sub(" ", name).strip(" ._")
    if name.split(".", 1)[0].lower() in _RESERVED:
        name = "_" + name
    if len(name) > MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: MAX_NAME - len(ext) - 1] + "." + ext) if dot and len(ext) <= 10 else name[:MAX_NAME]
    if not name:
        major = content_type.split("/", 1)[0]
        stem = _STEMS.get(content_type) or (major if major in ("image", "audio", "video") else fallback_stem)
        name = stem + extension_for(content_type)
    return name


def unique_filenames(names: list[str]) -> list[str]:
    """Make file names unique within one email, case-insensitively: a second ``video.mov`` becomes
    ``video (2).mov``, so that no attachment hides another when saved to disk."""
    taken: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 1
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem:
            stem, dot, ext = name, "", ""
        while candidate.casefold() in taken:
            n += 1
            candidate = f"{stem} ({n}){dot}{ext}"
        taken.add(candidate.casefold())
        out.append(candidate)
    return out
