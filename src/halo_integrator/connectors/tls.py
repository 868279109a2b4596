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
from pathlib import Path
from typing import TYPE_CHECKING

from halo_integrator.errors import ConfigError

if TYPE_CHECKING:
    from halo_integrator.config import Config, Credential

log = logging.getLogger(__name__)


def make_ssl_context(credential: Credential, config: Config | None = None) -> ssl.SSLContext:
    """The SSL context for one credential's server (see the module docstring)."""
    ctx = ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH)
    if credential.ca_file:
        path = config.resolve(credential.ca_file) if config is not None else Path(credential.ca_file)
        try:
            ctx.load_verify_locations(cafile=str(path))
        except FileNotFoundError:
            raise ConfigError(
                f"Credential {credential.name!r}: ca_file {path} does not exist. Point ca_file at the PEM "
                "file of the CA that signed the server's certificate."
            ) from None
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"Credential {credential.name!r}: ca_file {path} is not a readable PEM certificate file "
                f"({getattr(exc, 'reason', None) or exc})."
            ) from None
    if not credential.tls_verify:
        log.warning(
            "TLS certificate verification is OFF for %s (tls_verify = false): the connection is encrypted "
            "but the server is not authenticated. Use ca_file to trust a private CA instead.",
            credential.host,
        )
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
