"""Pure functions from raw bytes to a parsed email. No I/O."""

from halo_integrator.mail.model import Address, Attachment, ParsedEmail
from halo_integrator.mail.parse import parse

__all__ = ["Address", "Attachment", "ParsedEmail", "parse"]
