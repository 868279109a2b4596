"""Turning raw bytes into what the store keeps: the parsed email and the compressed raw message.

This runs in the parse worker processes, so it imports only the parser: a worker never loads the store, the
connectors or the outgoing side.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def prepare(raw: bytes) -> Prepared:
    """Parse and compress one raw email (a top-level function, so worker processes can run it)."""
    sha, compressed = compress_raw(raw)
    return Prepared(email=parse(raw), raw=StoredRaw(sha256=sha, compressed=compressed, size=len(raw)))
