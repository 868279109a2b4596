"""Turning raw bytes into what the store keeps: the parsed email and the compressed raw message.

This runs in the parse worker processes, so it imports only the parser: a worker never loads the store, the
connectors or the outgoing side.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from halo_integrator import rawbytes
from halo_integrator.mail import ParsedEmail, parse


@dataclass(frozen=True, slots=True)
class StoredRaw:
    """A raw message as the store keeps it."""

    sha256: str
    compressed: bytes
    size: int


def compress_raw(raw: bytes) -> tuple[str, bytes]:
    """(sha256 hex, compressed bytes) of a raw message (see :mod:`halo_integrator.rawbytes`)."""
    return rawbytes.compress(raw)


@dataclass(frozen=True, slots=True)
class Prepared:
    """An email parsed and its raw bytes compressed, ready to store."""

    email: ParsedEmail
    raw: StoredRaw


BIG_EMAIL = 1024 * 1024
"""After an email this big, the memory it took is handed back to the system (see :func:`release_memory`)."""

_release_due = False


def prepare(raw: bytes) -> Prepared:
    """Parse and compress one raw email (a top-level function, so worker processes can run it)."""
    global _release_due
    if _release_due:  # the previous big email's copies are freed by now
        _release_due = False
        release_memory()
    sha, compressed = compress_raw(raw)
    _release_due = len(raw) >= BIG_EMAIL
    return Prepared(email=parse(raw), raw=StoredRaw(sha256=sha, compressed=compressed, size=len(raw)))


_libc: Any = None


def release_memory() -> None:
    """Return the free heap to the system (glibc's malloc_trim; nothing elsewhere).

    Parsing a multi-megabyte email makes several copies of it; once freed, glibc keeps that memory for the
    process. A parse worker would then hold its largest email's worth of memory until it is replaced.
    """
    global _libc
    if _libc is False or not sys.platform.startswith("linux"):
        return
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL("libc.so.6")
        _libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        _libc = False
