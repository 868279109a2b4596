"""Turning raw bytes into what the store keeps: the parsed email and the compressed raw message.

This runs in the parse worker processes, so it imports only the parser: a worker never loads the store, the
connectors or the outgoing side.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass

from halo_integrator.mail import ParsedEmail, parse
from halo_integrator.picklable import Picklable
from halo_integrator.rawbytes import StoredRaw, stored


@dataclass(frozen=True, slots=True)
class Prepared(Picklable):
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
    _release_due = len(raw) >= BIG_EMAIL
    return Prepared(email=parse(raw), raw=stored(raw))


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where there is none (not Linux, or musl)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_memory() -> None:
    """Return the free heap to the system (glibc's malloc_trim; nothing elsewhere).

    Parsing a multi-megabyte email makes several copies of it; once freed, glibc keeps that memory for the
    process. A parse worker would then hold its largest email's worth of memory until it is replaced.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
