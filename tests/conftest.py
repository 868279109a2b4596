"""Shared fixtures. Nothing here touches the real home, keyring or network."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from dovecot import (  # noqa: F401 - one session-wide definition of each Dovecot fixture for every module
    dovecot_bin_trash,
    dovecot_no_move,
    dovecot_no_trash,
    dovecot_no_uidplus,
    dovecot_server,
    dovecot_user,
)
from fakecloud import FakeCloud
from smtpserver import SmtpServer
from smtpsetup import SMTP_ENV, SMTP_PASSWORD, SMTP_USER


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point HOME, the XDG dirs and the integrator's own variables at a fresh temporary directory."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(var, str(home / var.lower()))
    for var in list(os.environ):
        if var.startswith("INTEGRATOR_"):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    return home


@pytest.fixture(autouse=True)
def _memory_keyring(monkeypatch: pytest.MonkeyPatch):
    """Every test (and every CLI subprocess it starts) uses the in-memory keyring, emptied between tests."""
    import keyring

    from halo_integrator.testing_keyring import MemoryKeyring

    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "halo_integrator.testing_keyring.MemoryKeyring")
    for var in list(os.environ):
        if var.startswith("KEYRING_PROPERTY_"):
            monkeypatch.delenv(var, raising=False)
    MemoryKeyring.reset()
    keyring.set_keyring(MemoryKeyring())
    yield
    MemoryKeyring.reset()
    keyring.set_keyring(MemoryKeyring())


# ------------------------------------------------------------------ a real SMTP server on loopback (aiosmtpd)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A throw-away CA for the loopback SMTP server."""
    return trustme.CA()


@pytest.fixture
def smtp(ca: trustme.CA) -> Iterator[SmtpServer]:
    """A real SMTP server on 127.0.0.1 with STARTTLS and AUTH for SMTP_USER."""
    with SmtpServer(ca, mode="starttls", users={SMTP_USER: SMTP_PASSWORD}) as server:
        yield server


@pytest.fixture(scope="module")
def cloud(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCloud]:
    """Entra ID, Graph, Google's token endpoint and Gmail as their documentation shows them, over HTTPS on
    127.0.0.1 (tests/fakecloud.py)."""
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = FakeCloud(ca, ca_file).start()
    yield server
    server.stop()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder mailbox "Desk"'s SMTP password, as an environment override."""
    for key, value in SMTP_ENV.items():
        monkeypatch.setenv(key, value)
