"""The one exception family. Only the CLI turns these into exit codes (see DESIGN, contract 4).

Every message says what happened and what to do next; none ever contains a secret.
"""

from __future__ import annotations

import enum

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_SECRET = 4
EXIT_PARTIAL = 5
EXIT_LOCKED = 75
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C: 128 + SIGINT, as shells report it
EXIT_TERMINATED = 143  # stopped by SIGTERM (a service manager stopping the job, `timeout`): 128 + SIGTERM


class Stop(enum.Enum):
    """What stopped a run early (see ``Importer.request_stop``): its name in messages and the run's exit code."""

    CTRL_C = ("Ctrl-C", EXIT_INTERRUPTED)
    SIGTERM = ("SIGTERM", EXIT_TERMINATED)

    def __init__(self, label: str, exit_code: int) -> None:
        self.label = label
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.label


class IntegratorError(Exception):
    """Base of every error the integrator raises on purpose."""

    exit_code = EXIT_ERROR


class ConfigError(IntegratorError):
    """The config file is missing, unreadable or invalid."""

    exit_code = EXIT_CONFIG


class SecretError(IntegratorError):
    """A secret is missing, or no keyring backend is usable, or the server refused the credentials."""

    exit_code = EXIT_SECRET


class ConnectError(IntegratorError):
    """The server cannot be reached: DNS, TCP, TLS, timeout."""


class RetrievalError(IntegratorError):
    """Listing or fetching messages failed after the connection was made."""


class DisposeError(IntegratorError):
    """Moving or deleting an imported message on the server failed."""


class StoreError(IntegratorError):
    """The ticket store cannot be opened or written (locked, full disk, corrupt)."""


class OutgoingError(IntegratorError):
    """Composing or sending an email failed."""


class AccessDenied(IntegratorError):
    """The acting agent lacks the access level a command needs."""

    exit_code = EXIT_USAGE


class LockHeld(IntegratorError):
    """Another run holds the lock file."""

    exit_code = EXIT_LOCKED
