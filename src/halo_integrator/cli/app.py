"""The context every command shares: where the config is, who is acting, the instance; opened lazily."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from halo_integrator.access import Records
    from halo_integrator.config import Agent, Config, Mailbox
    from halo_integrator.store import Store


@dataclass
class App:
    config_option: str | None = None
    agent: str | None = None
    instance_option: str | None = None
    verbose: int = 0  # the global -v count (-v: summaries even without a terminal)
    _config: Config | None = None
    _store: Store | None = None
    _files_checked: bool = False

    @property
    def config_path(self) -> Path:
        from halo_integrator.config import find_config_path

        return find_config_path(self.config_option)

    @property
    def config(self) -> Config:
        if self._config is None:
            from halo_integrator import config as config_mod

            loaded = config_mod.load(self.config_path)
            if not self._files_checked:  # once per command: refuse files others can write (access.py)
                from halo_integrator import access
                from halo_integrator.cli import output

                for text in access.check_files(loaded):
                    output.warn(text)
                self._files_checked = True
            self._config = loaded
        return self._config

    def reload(self) -> Config:
        self._config = None
        return self.config

    @property
    def instance_override(self) -> str | None:
        """``--instance`` or ``$INTEGRATOR_INSTANCE``; None when neither is given."""
        from halo_integrator.config import instance_override

        return instance_override(self.instance_option)

    @property
    def instance(self) -> str:
        return self.instance_override or self.config.instance

    # ---- access control (access.py): one call per command; no agents defined = single-admin mode
    @property
    def acting(self) -> Agent | None:
        """The agent this command acts as (--as, $INTEGRATOR_AGENT, os_user); None in single-admin mode."""
        from halo_integrator import access

        return access.resolve_agent(self.config, self.agent)

    @property
    def acting_name(self) -> str:
        """Who to record in the config history: the acting agent, else the --as label, else ""."""
        from halo_integrator.errors import AccessDenied

        try:
            agent = self.acting
        except AccessDenied:
            agent = None
        return agent.name if agent else (self.agent or "")

    def require(self, mailbox: str, needed: str, doing: str = "") -> Mailbox:
        """The named mailbox, once the acting agent is known to hold ``needed`` (read|modify|owner) on it."""
        from halo_integrator import access

        mb = self.config.mailbox(mailbox)
        access.require(self.config, self.acting, mb, needed, doing=doing)
        return mb

    def require_admin(self, doing: str) -> None:
        from halo_integrator import access

        access.require_admin(self.config, self.acting, doing)

    def readable(self, mailboxes: Iterable[Mailbox] | None = None) -> list[Mailbox]:
        """The mailboxes (default: all of the config's) the acting agent may read."""
        from halo_integrator import access

        return access.readable(self.config, self.acting, mailboxes)

    def records(self, mailbox: str | None = None, needed: str = "read") -> Records:
        """The store's logs, quarantine and config history limited to what the acting agent may read; with
        ``mailbox``, first check ``needed`` on that mailbox's records."""
        from halo_integrator import access

        if mailbox:
            access.require_records(self.config, self.acting, mailbox, needed)
        return access.Records(self.store(), self.config, self.acting)

    def store(self, *, create: bool = True) -> Store:
        if self._store is None:
            from halo_integrator.store import Store

            self._store = Store.open(self.config.database_path, create=create)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
