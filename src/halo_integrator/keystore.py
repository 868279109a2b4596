"""Secrets: the only module that talks to :mod:`keyring`.

Every secret is stored under the service ``halo-integrator`` and the entry ``"<mailbox>/<credential>/<kind>"``
(kind: ``password``, ``client_secret``, ``refresh_token``, ``token_cache``, ...).

Lookup order for :meth:`Keystore.get`:

1. the environment variable ``INTEGRATOR_SECRET_<MAILBOX>_<CREDENTIAL>_<KIND>`` (see :func:`env_name`), used
   as-is (no stripping, no decoding); an empty variable counts as unset. This is the way to run from cron on a
   machine with no keyring at all. Note that names differing only in punctuation ("IT Support" and
   "IT-Support") share one variable name.
2. the keyring backend (below);
3. only for interactive commands (``Keystore(..., interactive=True)``): a hidden prompt.
   ``run`` never prompts.
   A prompted value is returned, not stored; the caller decides whether to :meth:`Keystore.set` it.

Which keyring backend:

* ``[secrets] backend = "<dotted class path>"`` pins one (it wins over ``PYTHON_KEYRING_BACKEND``);
  ``""`` takes keyring's own choice, which honours ``PYTHON_KEYRING_BACKEND`` and ``keyringrc.cfg``.
  When keyring's choice is its chainer, its members are used in priority order (reads try each, writes go to
  the first), leaving out those that cannot work here (see below).
* keyring's ``fail`` backend (nothing found), its ``null`` backend (stores nothing) or a chainer with no
  usable member is one :class:`SecretError` whose text names the fix for this operating system
  (:func:`no_backend_help`).
* ``keyrings.cryptfile.cryptfile.CryptFileKeyring`` (``pip install 'halo-integrator[headless]'``) is the
  unattended choice for headless Linux. Its master key comes from ``$INTEGRATOR_KEYRING_KEY`` if set, else
  from ``[secrets] master_key_file`` (relative to the config file; refused unless mode 0600 on POSIX). It is
  never typed in, because the scheduled run needs the same key; without one the backend is an error, never
  a ``getpass()`` prompt. The encrypted file is keyring's default, ``<data root>/cryptfile_pass.cfg``
  (``~/.local/share/python_keyring/`` on Linux); ``KEYRING_PROPERTY_FILE_PATH`` moves it.
* Plain-text backends (``keyrings.alt.file.PlaintextKeyring``: base64 only) are used only with
  ``[secrets] allow_plaintext = true``, with a warning each time they are opened.

Large secrets (service-account JSON, PEM keys, token caches) are split so that every backend can hold them,
including Windows Credential Manager (2,560 bytes of UTF-16 per entry): a value longer than
:data:`CHUNK_UNITS` UTF-16 code units is stored as pieces ``"<entry>#1"``, ``"<entry>#2"``, ... and the main
entry holds the header ``"chunked:<N>:<sha256 hex>"``; :meth:`Keystore.get` reassembles and verifies them
and :meth:`Keystore.delete` removes every piece.

Where a secret came from is logged at DEBUG; its value never is, and no error message ever contains it.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from halo_integrator.config import SecretsSettings
from halo_integrator.errors import SecretError

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

logger = logging.getLogger(__name__)

SERVICE = "halo-integrator"
ENV_PREFIX = "INTEGRATOR_SECRET_"
MASTER_KEY_ENV = "INTEGRATOR_KEYRING_KEY"
CRYPTFILE_BACKEND = "keyrings.cryptfile.cryptfile.CryptFileKeyring"
HEADLESS_INSTALL = "pip install 'halo-integrator[headless]'"
# Windows Credential Manager holds 2,560 bytes per entry, as UTF-16 (1,280 code units); stay well below.
CHUNK_UNITS = 1000
_HEADER_RE = re.compile(r"\Achunked:([1-9][0-9]{0,5}):([0-9a-f]{64})\Z")
_PROBE_ENTRY = "_probe/_probe/_probe"

Prompter = Callable[[str], str]


def entry_name(mailbox: str, credential: str, kind: str) -> str:
    """The keyring entry (``username``) of a secret: ``"<mailbox>/<credential>/<kind>"``."""
    return f"{mailbox}/{credential}/{kind}"


def env_name(mailbox: str, credential: str, kind: str) -> str:
    """The override variable: ``INTEGRATOR_SECRET_<MAILBOX>_<CREDENTIAL>_<KIND>``, upper-cased, with every
    character other than ASCII letters and digits turned into ``_``.

    >>> env_name("IT Support", "prod-1", "client_secret")
    'INTEGRATOR_SECRET_IT_SUPPORT_PROD_1_CLIENT_SECRET'
    """
    raw = f"{mailbox}_{credential}_{kind}".upper()
    return ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", raw)


def no_backend_help(platform: str | None = None, env_var: str | None = None) -> str:
    """What to do when no keyring backend is usable, for this operating system (``sys.platform``)."""
    platform = sys.platform if platform is None else platform
    env = env_var or f"{ENV_PREFIX}<MAILBOX>_<CREDENTIAL>_<KIND>"
    env_fix = (
        f"or give the secret in the environment of the scheduled job as {env} "
        "(upper case; characters other than letters and digits become '_')."
    )
    if platform == "win32":
        return (
            "On Windows secrets live in Credential Manager, which a scheduled task can reach only when it "
            "runs as the same Windows account that stored them with `integrator credentials add`: in Task "
            "Scheduler choose \"Run whether user is logged on or not\" and let it store the password (not "
            f"\"Do not store password\"); {env_fix}"
        )
    if platform == "darwin":
        return (
            "On macOS the login keychain cannot be unlocked from cron or SSH (errSecInteractionNotAllowed): "
            "schedule `integrator run` as a LaunchAgent in the logged-in user's session "
            "(~/Library/LaunchAgents, see `integrator schedule install`); or pin the encrypted-file backend "
            f"(`{HEADLESS_INSTALL}`, then [secrets] backend = \"{CRYPTFILE_BACKEND}\" with master_key_file); "
            f"{env_fix}"
        )
    return (
        "On a Linux server, under cron or over SSH there is no desktop keyring (Secret Service needs "
        f"DBUS_SESSION_BUS_ADDRESS). Run `{HEADLESS_INSTALL}`, then in the config set\n"
        "    [secrets]\n"
        f"    backend = \"{CRYPTFILE_BACKEND}\"\n"
        "    master_key_file = \"keyring.key\"\n"
        "and write a long random master key to that file, readable only by you "
        "(umask 077; head -c 32 /dev/urandom | base64 > keyring.key; chmod 600 keyring.key), "
        f"or put the master key in ${MASTER_KEY_ENV} instead; {env_fix}"
    )


def _backend_name(kr: object) -> str:
    cls = type(kr)
    return f"{cls.__module__}.{cls.__qualname__}"


def _utf16_units(text: str) -> int:
    return sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)


def _split(value: str, limit: int = CHUNK_UNITS) -> list[str]:
    """Pieces of at most ``limit`` UTF-16 code units, never splitting a character."""
    parts: list[str] = []
    current: list[str] = []
    units = 0
    for ch in value:
        width = 2 if ord(ch) > 0xFFFF else 1
        if units + width > limit:
            parts.append("".join(current))
            current, units = [], 0
        current.append(ch)
        units += width
    if current:
        parts.append("".join(current))
    return parts


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _shares_text(text: str, secret: str, window: int = 8) -> bool:
    """Whether ``text`` holds any run of ``window`` characters of ``secret`` (all of it, if shorter)."""
    size = min(window, len(secret))
    return any(text[i : i + size] in secret for i in range(len(text) - size + 1))


def _quote(word: str) -> str:
    return f'"{word}"' if re.search(r"[^A-Za-z0-9_.\-]", word) else word


def _default_prompter(text: str) -> str:
    import click

    return str(click.prompt(text, hide_input=True))


class _Unusable(Exception):
    """A backend that cannot be used here: a short reason (for a chain summary) and the full message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message


class Keystore:
    """Secrets of the mailboxes' credentials. The keyring backend is opened on first use, so a run whose
    secrets all come from the environment works on a machine with no keyring at all."""

    def __init__(
        self,
        settings: SecretsSettings,
        *,
        base_dir: Path | None = None,
        interactive: bool = False,
        prompter: Prompter | None = None,
    ) -> None:
        """``base_dir`` resolves a relative ``master_key_file`` (the config file's directory; default: the
        current directory). ``prompter`` replaces the hidden ``click.prompt`` of interactive lookups."""
        self.settings = settings
        self.base_dir = base_dir
        self.interactive = interactive
        self._prompter: Prompter = prompter or _default_prompter
        self._backends: list[KeyringBackend] | None = None

    # ------------------------------------------------------------------------------------------ public API

    def get(self, mailbox: str, credential: str, kind: str, *, prompt: str | None = None) -> str:
        """The secret: from the environment, else the keyring, else (interactive only) a hidden prompt."""
        env = env_name(mailbox, credential, kind)
        value = os.environ.get(env)
        if value:
            logger.debug("%s for %s/%s from environment (%s)", kind, mailbox, credential, env)
            return value
        entry = entry_name(mailbox, credential, kind)
        value = self._fetch(entry, env_var=env)
        if value is not None:
            logger.debug("%s for %s/%s from keyring (%s)", kind, mailbox, credential, self.backend_name)
            return value
        if self.interactive:
            text = prompt or f"{kind.replace('_', ' ').capitalize()} for {mailbox}/{credential}"
            value = self._prompter(text)
            logger.debug("%s for %s/%s from prompt", kind, mailbox, credential)
            return value
        raise SecretError(
            f"No {kind} is stored for mailbox {mailbox!r}, credential {credential!r} "
            f"(keyring backend {self.backend_name}). Store it with "
            f"`integrator credentials add {_quote(mailbox)}` (credential {credential!r}), "
            f"or set the environment variable {env}."
        )

    def source(self, mailbox: str, credential: str, kind: str) -> str | None:
        """Where :meth:`get` would find the secret: ``"environment"``, ``"keyring"`` or ``None``; never the
        value. Pieces of a large secret are not verified here (:meth:`get` does). Raises
        :class:`SecretError` when the keyring is consulted and unusable."""
        env = env_name(mailbox, credential, kind)
        if os.environ.get(env):
            return "environment"
        if self._read(entry_name(mailbox, credential, kind), env_var=env) is not None:
            return "keyring"
        return None

    def has(self, mailbox: str, credential: str, kind: str) -> bool:
        return self.source(mailbox, credential, kind) is not None

    def set(self, mailbox: str, credential: str, kind: str, value: str) -> None:
        """Store a secret in the keyring, in pieces when it is large (see the module docstring)."""
        if not isinstance(value, str) or not value:
            raise SecretError(f"Refusing to store an empty {kind} for {mailbox}/{credential}.")
        entry = entry_name(mailbox, credential, kind)
        env = env_name(mailbox, credential, kind)
        old_pieces = self._piece_count(self._read(entry, env_var=env))
        if _utf16_units(value) > CHUNK_UNITS or _HEADER_RE.match(value):
            parts = _split(value)
            for i, part in enumerate(parts, 1):
                self._write(f"{entry}#{i}", part, secret=value)
            self._write(entry, f"chunked:{len(parts)}:{_digest(value)}", secret=value)
            pieces = len(parts)
        else:
            self._write(entry, value, secret=value)
            pieces = 0
        self._remove_pieces(entry, pieces + 1, old_pieces)
        logger.debug(
            "%s for %s/%s stored in keyring (%s)%s",
            kind, mailbox, credential, self.backend_name, f" in {pieces} pieces" if pieces else "",
        )
        if os.environ.get(env):
            logger.warning("%s is set and overrides the %s just stored in the keyring.", env, kind)

    def delete(self, mailbox: str, credential: str, kind: str) -> bool:
        """Remove a secret (and all its pieces) from the keyring; True if anything was removed.
        An environment override is not touched."""
        entry = entry_name(mailbox, credential, kind)
        pieces = self._piece_count(self._read(entry))
        removed = self._remove(entry)
        removed = self._remove_pieces(entry, 1, pieces) or removed
        if removed:
            logger.debug("%s for %s/%s deleted from keyring", kind, mailbox, credential)
        return removed

    def delete_all(self, mailbox: str, credential: str, kinds: Iterable[str]) -> list[str]:
        """Delete several kinds; the kinds that were there."""
        return [kind for kind in kinds if self.delete(mailbox, credential, kind)]

    def check_backend(self) -> str:
        """Open the backend and read a probe entry; its dotted class path (for a chain, its members).
        Raises :class:`SecretError` when it is unusable."""
        self._read(_PROBE_ENTRY)
        return self.backend_name

    def lookup(self, mailbox: str, credential: str) -> Callable[[str], str]:
        """``kind -> secret`` for one credential, for connectors."""

        def secret(kind: str) -> str:
            return self.get(mailbox, credential, kind)

        return secret

    @property
    def backend_name(self) -> str:
        """The backend in use (opening it if needed)."""
        backends = self._open()
        if len(backends) == 1:
            return _backend_name(backends[0])
        return "keyring.backends.chainer.ChainerBackend (" + ", ".join(map(_backend_name, backends)) + ")"

    # ------------------------------------------------------------------------------------ opening a backend

    def _open(self, env_var: str | None = None) -> list[KeyringBackend]:
        if self._backends is None:
            self._backends = self._resolve(env_var)
        return self._backends

    def _resolve(self, env_var: str | None) -> list[KeyringBackend]:
        from keyring.backends.chainer import ChainerBackend

        if self.settings.backend:
            pinned = self._load_pinned(self.settings.backend, env_var)
            try:
                return [self._prepare(pinned, env_var)]
            except _Unusable as exc:
                raise SecretError(exc.message) from None

        import keyring

        try:
            chosen = keyring.get_keyring()
        except Exception as exc:
            raise SecretError(
                f"keyring could not choose a backend ({type(exc).__name__}: {exc}). "
                + no_backend_help(env_var=env_var)
            ) from None
        if not isinstance(chosen, ChainerBackend):
            try:
                return [self._prepare(chosen, env_var)]
            except _Unusable as exc:
                raise SecretError(exc.message) from None

        members = list(chosen.backends)
        usable: list[KeyringBackend] = []
        skipped: list[str] = []
        for member in members:
            try:
                usable.append(self._prepare(member, env_var))
            except _Unusable as exc:
                logger.debug("keyring backend %s left out: %s", _backend_name(member), exc.reason)
                skipped.append(f"{_backend_name(member)}: {exc.reason}")
        if not usable:
            detail = "; ".join(skipped) if skipped else "it found no backend at all"
            raise SecretError(
                f"No usable keyring backend: keyring chose its chainer, and none of its backends can be "
                f"used here ({detail}). " + no_backend_help(env_var=env_var)
            )
        return usable

    def _load_pinned(self, path: str, env_var: str | None) -> KeyringBackend:
        from keyring.backend import KeyringBackend

        module_name, _, class_name = path.rpartition(".")
        example = f'e.g. "{CRYPTFILE_BACKEND}" or "keyring.backends.SecretService.Keyring"'
        if not module_name or not class_name:
            raise SecretError(
                f"[secrets] backend = {path!r} is not a dotted class path ({example}); "
                "use \"\" to let keyring choose."
            )
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if module_name.startswith("keyrings.cryptfile"):
                fix = f"Install it with `{HEADLESS_INSTALL}`."
            elif module_name.startswith("keyrings.alt"):
                fix = "Install it with `pip install keyrings.alt`."
            else:
                fix = f"Install the package that provides the module {module_name!r}."
            raise SecretError(
                f"The keyring backend {path} named in [secrets] backend cannot be loaded ({exc}). {fix}"
            ) from None
        cls = getattr(module, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, KeyringBackend)):
            raise SecretError(
                f"[secrets] backend = {path!r}: {module_name} has no keyring backend class named "
                f"{class_name!r} ({example})."
            )
        try:
            cls.priority  # noqa: B018 - raises when the backend cannot work here (e.g. no D-Bus session)
        except Exception as exc:
            raise SecretError(
                f"The keyring backend {path} cannot be used here: {exc}. " + no_backend_help(env_var=env_var)
            ) from None
        try:
            backend = cls()
            backend.set_properties_from_env()  # KEYRING_PROPERTY_*; some backends skip it in __init__
        except Exception as exc:
            raise SecretError(
                f"The keyring backend {path} could not be started ({type(exc).__name__}: {exc}). "
                + no_backend_help(env_var=env_var)
            ) from None
        return backend

    def _prepare(self, kr: KeyringBackend, env_var: str | None) -> KeyringBackend:
        """Check that a backend can be used here and make it ready; :class:`_Unusable` otherwise."""
        from keyring.backends import fail, null

        name = _backend_name(kr)
        if isinstance(kr, fail.Keyring):
            raise _Unusable(
                "keyring found no backend",
                f"No usable keyring backend: keyring found none here ({name}). "
                + no_backend_help(env_var=env_var),
            )
        if isinstance(kr, null.Keyring):
            raise _Unusable(
                "keyring is disabled",
                f"No usable keyring backend: keyring is disabled ({name} stores nothing; it is chosen by "
                "PYTHON_KEYRING_BACKEND or `keyring --disable`). " + no_backend_help(env_var=env_var),
            )
        if "plaintext" in name.lower():
            location = getattr(kr, "file_path", "")
            if not self.settings.allow_plaintext:
                raise _Unusable(
                    "stores secrets in plain text",
                    f"The keyring backend {name} stores secrets in plain text (merely base64) in "
                    f"{location or 'a file'}. It is used only if you opt in with `allow_plaintext = true` "
                    "under [secrets] in the config. Better: " + no_backend_help(env_var=env_var),
                )
            logger.warning(
                "Secrets are kept in PLAIN TEXT by %s in %s because [secrets] allow_plaintext = true; "
                "anyone who can read that file can read them.",
                name, location or "a file",
            )
            return kr
        if kr.__class__.__module__ == "halo_integrator.testing_keyring":
            logger.info("Using the in-memory test keyring: nothing stored is kept after this process.")
            return kr
        key_attr = inspect.getattr_static(type(kr), "keyring_key", None)
        if key_attr is not None:
            if not (isinstance(key_attr, property) and key_attr.fset is not None):
                raise _Unusable(
                    "asks for its password on a terminal",
                    f"The keyring backend {name} asks for its password on a terminal, which a scheduled run "
                    f"does not have. Use {CRYPTFILE_BACKEND} instead: " + no_backend_help(env_var=env_var),
                )
            self._unlock(kr, name)
        return kr

    def _unlock(self, kr: KeyringBackend, name: str) -> None:
        """Hand an encrypted-file backend (keyrings.cryptfile) its master key, so it never prompts."""
        location = getattr(kr, "file_path", "its file")
        key = os.environ.get(MASTER_KEY_ENV)
        origin = f"${MASTER_KEY_ENV}"
        if not key and self.settings.master_key_file:
            path = Path(self.settings.master_key_file).expanduser()
            if not path.is_absolute() and self.base_dir is not None:
                path = self.base_dir / path
            key = self._read_master_key_file(path)
            origin = str(path)
        if not key:
            raise _Unusable(
                "needs a master key",
                f"The encrypted keyring file of {name} ({location}) needs its master key, and none is given: "
                f"set `master_key_file` under [secrets] to a file of mode 0600 holding it, or set "
                f"${MASTER_KEY_ENV}. It is never asked for on a terminal, because the scheduled run needs "
                "it too. To create one: umask 077; head -c 32 /dev/urandom | base64 > keyring.key",
            )
        try:
            kr.keyring_key = key  # type: ignore[attr-defined]
        except ValueError:
            raise _Unusable(
                "the master key does not open its file",
                f"The master key from {origin} does not open the encrypted keyring file {location} of "
                f"{name}. Give the key the file was created with, or move the file away to start a new "
                "one (its secrets are then lost and must be stored again).",
            ) from None
        except Exception as exc:
            raise _Unusable(
                "its file cannot be opened",
                f"The encrypted keyring file {location} of {name} cannot be opened "
                f"({type(exc).__name__}: {exc}). Check that it is readable and not damaged.",
            ) from None
        logger.debug("encrypted keyring %s unlocked with the master key from %s", location, origin)

    @staticmethod
    def _read_master_key_file(path: Path) -> str:
        try:
            mode = path.stat().st_mode
            if sys.platform != "win32" and mode & 0o077:
                raise SecretError(
                    f"The master key file {path} can be read or written by other users (mode "
                    f"{mode & 0o777:04o}); refusing to use it. Run: chmod 600 {path}"
                )
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SecretError(
                f"The master key file {path} (master_key_file under [secrets]) does not exist. Create it: "
                f"umask 077; head -c 32 /dev/urandom | base64 > {path}"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretError(f"The master key file {path} cannot be read ({type(exc).__name__}).") from None
        key = text.strip("\r\n")
        if not key.strip():
            raise SecretError(f"The master key file {path} is empty; write a long random key into it.")
        return key

    # --------------------------------------------------------------------------------- backend operations

    def _fail(self, action: str, entry: str, exc: BaseException, secret: str | None = None) -> NoReturn:
        from keyring.errors import KeyringLocked, NoKeyringError

        detail = str(exc)
        if secret:
            for part in sorted({secret, *_split(secret)}, key=len, reverse=True):
                detail = detail.replace(part, "***")
            if _shares_text(detail, secret):
                detail = "details withheld because they contain part of the secret"
        if isinstance(exc, KeyringLocked):
            advice = (
                "The keyring is locked: unlock it (log in to the desktop session), or use a backend that "
                "works unattended. " + no_backend_help()
            )
        elif isinstance(exc, NoKeyringError | EOFError):
            advice = no_backend_help()
        elif sys.platform == "win32" and "1783" in detail:
            advice = "Windows Credential Manager refused the entry as too large; please report this."
        else:
            advice = "Check the keyring with `integrator doctor`. " + no_backend_help()
        names = self.backend_name if self._backends is not None else self.settings.backend or "keyring"
        raise SecretError(
            f"The keyring backend {names} failed to {action} {entry!r} ({type(exc).__name__}: {detail}). "
            + advice
        ) from None

    def _read(self, entry: str, env_var: str | None = None) -> str | None:
        for kr in self._open(env_var):
            try:
                value = kr.get_password(SERVICE, entry)
            except Exception as exc:
                self._fail("read", entry, exc)
            if value is not None:
                return value
        return None

    def _write(self, entry: str, value: str, *, secret: str) -> None:
        kr = self._open()[0]
        try:
            kr.set_password(SERVICE, entry, value)
        except Exception as exc:
            self._fail("store", entry, exc, secret)

    def _remove(self, entry: str) -> bool:
        from keyring.errors import PasswordDeleteError

        removed = False
        for kr in self._open():
            try:
                kr.delete_password(SERVICE, entry)
            except PasswordDeleteError:
                continue
            except Exception as exc:
                self._fail("delete", entry, exc)
            removed = True
        return removed

    @staticmethod
    def _piece_count(raw: str | None) -> int:
        match = _HEADER_RE.match(raw) if raw else None
        return int(match.group(1)) if match else 0

    def _remove_pieces(self, entry: str, first: int, last: int) -> bool:
        """Delete pieces ``first..last``, then any stray pieces after them."""
        removed = False
        for i in range(first, last + 1):
            removed = self._remove(f"{entry}#{i}") or removed
        i = max(first, last + 1)
        while self._read(f"{entry}#{i}") is not None:
            removed = self._remove(f"{entry}#{i}") or removed
            i += 1
        return removed

    def _fetch(self, entry: str, env_var: str | None = None) -> str | None:
        raw = self._read(entry, env_var)
        if raw is None:
            return None
        match = _HEADER_RE.match(raw)
        if not match:
            return raw
        count, digest = int(match.group(1)), match.group(2)
        parts: list[str] = []
        for i in range(1, count + 1):
            part = self._read(f"{entry}#{i}")
            if part is None:
                self._damaged(entry, f"piece {i} of {count} is missing")
            parts.append(part)
        value = "".join(parts)
        if _digest(value) != digest:
            self._damaged(entry, f"its {count} pieces do not match the checksum")
        return value

    def _damaged(self, entry: str, why: str) -> NoReturn:
        mailbox = entry.split("/", 1)[0]
        raise SecretError(
            f"The secret {entry!r} in the keyring ({self.backend_name}) is damaged: {why}. Store it again "
            f"with `integrator credentials add {_quote(mailbox)}`."
        )
