"""The context every command shares: where the config is, who is acting, the instance; opened lazily."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from halo_integrator.config import Config
    from halo_integrator.store import Store


@dataclass
class App:
    config_option: str | None = None
    agent: str | None = None
    instance_option: str | None = None
    verbose: int = 0  # the global -v count (-v: summaries even without a terminal)
    _config: Config | None = None
    _store: Store | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        from halo_integrator.config import find_config_path

        return find_config_path(self.config_option)

    @property
    def config(self) -> Config:
        if self._config is None:
            from halo_integrator import config as config_mod

            self._config = config_mod.load(self.config_path)
        return self._config

    def reload(self) -> Config:
        self._config = None
        return self.config

    @property
    def instance(self) -> str:
        import os

        return self.instance_option or os.environ.get("INTEGRATOR_INSTANCE") or self.config.instance

    def store(self, *, create: bool = True) -> Store:
        if self._store is None:
            from halo_integrator.store import Store

            self._store = Store.open(self.config.database_path, create=create)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
