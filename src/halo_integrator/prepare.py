"""Turning raw bytes into what the store keeps: the parsed email and the compressed raw message.

This runs in the parse worker processes, so it imports only the parser: a worker never loads the store, the
connectors or the outgoing side.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from halo_integrator.mail import ParsedEmail, parse
from halo_integrator.picklable import Picklable
from halo_integrator.rawbytes import StoredRaw, stored

if TYPE_CHECKING:
    from multiprocessing.connection import Connection


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


def end_with(importer_alive: Connection) -> None:
    """Run in each parse worker as it starts (the pool's initializer): end the worker once the importer that
    made the pool is gone, which the pipe ``importer_alive`` says (only the importer can write to it, and it
    never does, so reading it ends when the importer does).

    An importer that ends normally, or stops on Ctrl-C or SIGTERM, shuts its pool down. One that is killed
    (SIGKILL, the out-of-memory killer, a second SIGTERM) cannot, and its workers would wait for work for ever:
    each holds both ends of the pipe it reads work from, so it never sees the importer's end close, and it
    holds Ctrl-C and SIGTERM back (see importer._running_forkserver). Their fork server, in turn, lives as long
    as they do.
    """
    import contextlib
    import threading

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            importer_alive.recv()  # returns only if the importer wrote something, which it never does
        os._exit(1)

    threading.Thread(target=watch, name="importer watch", daemon=True).start()


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
