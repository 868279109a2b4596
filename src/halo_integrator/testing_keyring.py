"""An in-memory keyring backend FOR THE TEST SUITE ONLY.

Nothing is written to disk and everything is forgotten when the process ends. The test suite selects it for
every test (``tests/conftest.py``) with ``keyring.set_keyring(MemoryKeyring())`` and, for CLI tests run in a
subprocess, with ``PYTHON_KEYRING_BACKEND=halo_integrator.testing_keyring.MemoryKeyring``.

All instances in one process share one store, so two :class:`~halo_integrator.keystore.Keystore` objects in
a test see the same secrets; :meth:`MemoryKeyring.reset` empties it between tests.

Its priority is below keyring's ``null`` backend, so keyring never picks it on its own (importing this
module registers the class with keyring, as every backend subclass is registered).
"""

from __future__ import annotations

from typing import ClassVar

from keyring.backend import KeyringBackend
from keyring.compat import properties
from keyring.errors import PasswordDeleteError


class MemoryKeyring(KeyringBackend):
    """A dict-backed keyring for tests. Never use it for real secrets: nothing survives the process."""

    _store: ClassVar[dict[tuple[str, str], str]] = {}

    @properties.classproperty
    def priority(cls) -> float:
        return -2  # below null (-1) and fail (0): chosen only when named explicitly

    @classmethod
    def reset(cls) -> None:
        """Forget every secret (called between tests)."""
        cls._store.clear()

    @classmethod
    def entries(cls) -> dict[tuple[str, str], str]:
        """A copy of everything stored, keyed by (service, username); for assertions in tests."""
        return dict(cls._store)

    def get_password(self, service: str, username: str) -> str | None:
        return self._store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        if not isinstance(password, str):
            raise TypeError("password must be a str")
        self._store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        try:
            del self._store[(service, username)]
        except KeyError:
            raise PasswordDeleteError("no such password") from None
