"""Connectors: one module per connection type behind the contract in :mod:`.base`.

Modules are imported only when a mailbox of their type is used, so heavy libraries (exchangelib, msal,
google-auth) never slow down `integrator --help` or an IMAP-only run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from halo_integrator.errors import ConfigError

if TYPE_CHECKING:
    from halo_integrator.config import Config, Credential, Mailbox
    from halo_integrator.connectors.base import Connector, SecretLookup, StateView

_MODULES = {
    "folder": ("halo_integrator.connectors.folder", "FolderConnector"),
    "imap": ("halo_integrator.connectors.imap", "ImapConnector"),
    "pop3": ("halo_integrator.connectors.pop3", "Pop3Connector"),
}


def make_connector(
    mailbox: Mailbox,
    credential: Credential | None,
    *,
    config: Config,
    secrets: SecretLookup,
    state: StateView,
) -> Connector:
    """The connector for a mailbox's connection type, not yet opened."""
    try:
        module_name, class_name = _MODULES[mailbox.connection]
    except KeyError:
        raise ConfigError(
            f"Mailbox {mailbox.name!r}: connection {mailbox.connection!r} is not available in this version "
            f"(available: {', '.join(sorted(_MODULES))})."
        ) from None
    cls = getattr(importlib.import_module(module_name), class_name)
    connector: Connector = cls(mailbox, credential, config=config, secrets=secrets, state=state)
    return connector
