"""TLS contexts for the mail connectors: certificates are verified unless the admin explicitly says not to.

* Default: the system's trusted CAs, hostname checking on.
* ``ca_file``: a PEM file (relative to the config file) with the private CA that signed the server's
  certificate; it is trusted in addition to the system CAs.
* ``tls_verify = false``: no verification at all. Each connection logs a warning, because anyone on the
  path can then read the password and the mail.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING

from halo_integrator.errors import ConfigError

if TYPE_CHECKING:
    from halo_integrator.config import Config, Credential

log = logging.getLogger(__name__)

_NAME_MISMATCH = (62, 64)  # OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH

NAME_MISMATCH_FIX = (
    "a name the certificate is issued for: usually the server's full DNS name (mail.example.com), not its IP "
    "address or a short name"
)


def is_name_mismatch(exc: ssl.SSLCertVerificationError) -> bool:
    """The certificate is trusted but issued for other names than the host we connected to."""
    return getattr(exc, "verify_code", None) in _NAME_MISMATCH


def make_ssl_context(credential: Credential, config: Config) -> ssl.SSLContext:
    """The SSL context for one credential's server (see the module docstring)."""
    ca_file = str(config.resolve(credential.ca_file)) if credential.ca_file else ""
    return client_context(ca_file=ca_file, verify=credential.tls_verify, what=f"Credential {credential.name!r}",
                          server=credential.host)


def client_context(*, ca_file: str = "", verify: bool = True, what: str, server: str) -> ssl.SSLContext:
    """A client TLS context for every connection the tool makes (mailboxes and SMTP): the system CAs plus
    ``ca_file``; or, with ``verify=False``, no checks at all and a warning. ``what`` names the setting in
    errors (``Credential 'prod'``), ``server`` the server in the warning."""
    ctx = ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH)
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except FileNotFoundError:
            raise ConfigError(
                f"{what}: ca_file {ca_file} does not exist. Point ca_file at the PEM file of the CA that signed "
                "the server's certificate."
            ) from None
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"{what}: ca_file {ca_file} is not a readable PEM certificate file "
                f"({getattr(exc, 'reason', None) or exc})."
            ) from None
    if not verify:
        log.warning(
            "TLS certificate checks are OFF for %s (tls_verify = false): the connection is encrypted but the "
            "server is not authenticated, so anyone on the network path could read the password and the mail. "
            "Use ca_file to trust a private CA instead.",
            server,
        )
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
