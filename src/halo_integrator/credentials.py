"""A mailbox's credentials: the library behind `integrator credentials add|list|remove|test`.

A mailbox holds one or more ``[[mailboxes.credentials]]``, each bound to an instance (``""`` serves every
instance; DESIGN contract 7). The settings live in the config file; the secret of each credential lives only
in the keystore under ``"<mailbox>/<credential>/<kind>"``. Which kinds a credential needs follows from the
mailbox's connection and the credential's ``auth`` (:func:`needed_kinds`).

Two credentials of different instances that reach the same server account split its mail between the
instances: whichever runs first imports an email and moves it to Deleted Items, so the other never sees it.
:func:`split_warnings` finds these; the CLI prints them when the config is used (`credentials add`,
`mailbox show`, `run`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from halo_integrator import config as config_mod
from halo_integrator.errors import ConfigError, SecretError

if TYPE_CHECKING:
    from halo_integrator.config import Config, Credential, Mailbox
    from halo_integrator.history import Actor
    from halo_integrator.keystore import Keystore

OUTGOING_CREDENTIAL = "outgoing"
"""The credential name under which a mailbox without credentials keeps its ``smtp_password``."""

# every kind a credential's secrets may be stored under; `remove` deletes all of them
ALL_KINDS = (
    "password",
    "access_token",
    "client_secret",
    "refresh_token",
    "token_cache",
    "service_account_json",
    "smtp_password",
)


def needed_kinds(mailbox: Mailbox, credential: Credential) -> list[str]:
    """The secrets a credential needs to log in, by connection and auth."""
    if mailbox.connection == "folder":
        return []
    if mailbox.connection == "google":
        return ["service_account_json"]
    if mailbox.connection in ("microsoft365", "ews") and credential.auth == "oauth2":
        return ["client_secret"]
    if credential.auth != "oauth2":
        return ["password"]
    # IMAP / POP3 XOAUTH2: the token itself, or what a token is asked for with
    issued_with = {"microsoft365": "client_secret", "google": "service_account_json"}
    return [issued_with.get(credential.oauth_provider, "access_token")]


def find(mailbox: Mailbox, name: str) -> Credential:
    for cred in mailbox.credentials:
        if cred.name == name:
            return cred
    known = ", ".join(c.name for c in mailbox.credentials) or "none"
    raise ConfigError(f"Mailbox {mailbox.name!r} has no credential named {name!r} (credentials: {known}).")


def account(mailbox: Mailbox, credential: Credential) -> str:
    """The server account a credential reaches, e.g. ``support@example.com@imap.example.com:993``."""
    from halo_integrator.mailboxes import account as mailbox_account

    return mailbox_account(mailbox, credential)


def _account_key(mailbox: Mailbox, credential: Credential) -> tuple[str, str]:
    return (mailbox.connection, account(mailbox, credential).casefold())


# ------------------------------------------------------------------------------------------ checking


def split_warnings(cfg: Config, mailboxes: Iterable[str] | None = None) -> list[str]:
    """One warning per server account reached by credentials of different instances.

    Credentials are compared across all mailboxes of the config (same connection, host, port and user).
    ``mailboxes`` limits the warnings to those that involve one of these mailbox names.
    """
    groups: dict[tuple[str, str], list[tuple[Mailbox, Credential]]] = {}
    for mb in cfg.mailboxes:
        if mb.connection == "folder":
            continue
        for cred in mb.credentials:
            groups.setdefault(_account_key(mb, cred), []).append((mb, cred))
    wanted = {n.casefold() for n in mailboxes} if mailboxes is not None else None
    warnings = []
    for pairs in groups.values():
        instances = {c.instance for _, c in pairs}
        if len(instances) < 2:
            continue
        if wanted is not None and not any(mb.name.casefold() in wanted for mb, _ in pairs):
            continue
        named = " and ".join(
            f"{mb.name}/{c.name} (instance {c.instance or 'all'})" for mb, c in pairs
        )
        mb0, c0 = pairs[0]
        warnings.append(
            f"Credentials {named} reach the same server account {account(mb0, c0)}: the mail will be split "
            "between the instances (whichever runs first imports an email and moves it away, so the other "
            "never sees it). Give each instance its own account, or bind one credential to every instance "
            "(instance = \"\")."
        )
    return warnings


# ------------------------------------------------------------------------------------------ listing


def describe(cfg: Config, mailbox: Mailbox, instance: str, keystore: Keystore | None) -> list[dict[str, Any]]:
    """Each credential of a mailbox with its instance, the account it reaches, whether this instance uses
    it, and where each of its secrets is (``"keyring"``, ``"environment"``, ``None`` = missing; or
    ``"unknown"`` when the keyring cannot be read). Never a secret's value.

    Raises nothing for an unusable keyring: the rows say ``"unknown"`` and ``keyring_error`` holds the
    keystore's message (the same for every row).
    """
    used = {c.name for c in cfg.credentials_for(mailbox, instance)}
    rows = []
    for cred in mailbox.credentials:
        secrets: dict[str, str | None] = {}
        error = ""
        for kind in _kinds_to_show(mailbox, cred, keystore):
            if keystore is None:
                secrets[kind] = "unknown"
                continue
            try:
                secrets[kind] = keystore.source(mailbox.name, cred.name, kind)
            except SecretError as exc:
                secrets[kind] = "unknown"
                error = str(exc)
        rows.append(
            {
                "mailbox": mailbox.name,
                "name": cred.name,
                "instance": cred.instance,
                "account": account(mailbox, cred),
                "host": cred.host,
                "port": cred.port,
                "security": cred.security,
                "username": cred.username or mailbox.address,
                "auth": cred.auth,
                "used_by_this_instance": cred.name in used,
                "secrets": secrets,
                "keyring_error": error or None,
            }
        )
    return rows


def _kinds_to_show(mailbox: Mailbox, cred: Credential, keystore: Keystore | None) -> list[str]:
    """The kinds a credential needs, then any other known kind that is present (e.g. a token cache)."""
    kinds = needed_kinds(mailbox, cred)
    if keystore is None:
        return kinds
    for kind in ALL_KINDS:
        if kind in kinds:
            continue
        try:
            if keystore.has(mailbox.name, cred.name, kind):
                kinds.append(kind)
        except SecretError:
            break
    return kinds


# ------------------------------------------------------------------------------------------ changing


def add(
    cfg: Config,
    mailbox_name: str,
    credential: Credential,
    secrets: Mapping[str, str],
    *,
    keystore: Keystore,
    actor: Actor | None = None,
) -> Config:
    """Add a credential to a mailbox: check the whole new config, store the secrets in the keystore, then
    write the config atomically. Returns the new config."""
    from halo_integrator import history

    mailbox = cfg.mailbox(mailbox_name)
    if any(c.name == credential.name for c in mailbox.credentials):
        raise ConfigError(
            f"Mailbox {mailbox.name!r} already has a credential named {credential.name!r}. Store a new "
            f"secret for it with `integrator credentials add {mailbox.name} --name {credential.name}` (no "
            f"other options), change its settings with `integrator mailbox edit {mailbox.name} --set "
            f"credentials.{credential.name}.host=...`, or pick another --name."
        )
    if mailbox.connection == "folder":
        raise ConfigError(f"Mailbox {mailbox.name!r} is a folder mailbox; it needs no credentials.")
    new_mailbox = dataclasses.replace(mailbox, credentials=(*mailbox.credentials, credential))
    new_cfg = config_mod.replace_mailbox(cfg, new_mailbox)
    config_mod.from_dict(config_mod.to_dict(new_cfg), cfg.path)  # validate before touching anything
    missing = [k for k in needed_kinds(mailbox, credential) if not secrets.get(k)]
    if missing:
        raise SecretError(f"No {', '.join(missing)} given for credential {credential.name!r}.")
    stored = store_secrets(keystore, mailbox.name, credential.name, secrets)
    config_mod.save(new_cfg)
    loaded = config_mod.load(cfg.path)
    history.record(
        loaded, actor, mailbox.name, mailbox, loaded.mailbox(mailbox.name), action="credential added",
        notes=[_secret_note(credential.name, kind) for kind in stored],
    )
    return loaded


def set_secrets(
    cfg: Config,
    mailbox_name: str,
    credential_name: str,
    secrets: Mapping[str, str],
    *,
    keystore: Keystore,
    actor: Actor | None = None,
) -> list[str]:
    """Store new secrets for an existing credential (a changed password); the kinds stored."""
    from halo_integrator import history

    mailbox = cfg.mailbox(mailbox_name)
    find(mailbox, credential_name)
    stored = store_secrets(keystore, mailbox.name, credential_name, secrets)
    history.record(
        cfg, actor, mailbox.name, mailbox, mailbox, action="credential secret replaced",
        notes=[_secret_note(credential_name, kind, before="***") for kind in stored],
    )
    return stored


def set_smtp_password(
    cfg: Config,
    mailbox_name: str,
    instance: str,
    value: str,
    *,
    keystore: Keystore,
    actor: Actor | None = None,
) -> str:
    """Store the SMTP password a mailbox sends with, where the outbox looks for it: under the mailbox's
    credential for this instance, or under :data:`OUTGOING_CREDENTIAL` for a mailbox without credentials (a folder
    mailbox). Returns the keyring entry's credential name."""
    from halo_integrator import history

    mailbox = cfg.mailbox(mailbox_name)
    mine = cfg.credentials_for(mailbox, instance)
    name = mine[0].name if mine else OUTGOING_CREDENTIAL
    keystore.set(mailbox.name, name, "smtp_password", value)
    history.record(
        cfg, actor, mailbox.name, mailbox, mailbox, action="smtp password replaced",
        notes=[_secret_note(name, "smtp_password", before="***")],
    )
    return name


def remove(
    cfg: Config,
    mailbox_name: str,
    credential_name: str,
    *,
    keystore: Keystore | None,
    actor: Actor | None = None,
) -> tuple[Config, list[str]]:
    """Remove a credential from a mailbox and (unless ``keystore`` is None) its secrets from the keyring.

    The keyring is checked before the config changes, so an unusable keyring leaves everything as it was.
    Returns the new config and the kinds deleted from the keyring.
    """
    from halo_integrator import history

    mailbox = cfg.mailbox(mailbox_name)
    cred = find(mailbox, credential_name)
    kept = tuple(c for c in mailbox.credentials if c is not cred)
    new_mailbox = dataclasses.replace(mailbox, credentials=kept)
    new_cfg = config_mod.replace_mailbox(cfg, new_mailbox)
    config_mod.from_dict(config_mod.to_dict(new_cfg), cfg.path)
    if keystore is not None:
        keystore.check_backend()
    config_mod.save(new_cfg)
    deleted = keystore.delete_all(mailbox.name, cred.name, ALL_KINDS) if keystore is not None else []
    loaded = config_mod.load(cfg.path)
    history.record(
        loaded, actor, mailbox.name, mailbox, loaded.mailbox(mailbox.name), action="credential removed",
        notes=[_secret_note(cred.name, kind, before="***", after=None) for kind in deleted],
    )
    return loaded, deleted


def store_secrets(keystore: Keystore, mailbox: str, credential: str, secrets: Mapping[str, str]) -> list[str]:
    """Store each secret (kind -> value); the kinds stored."""
    for kind, value in secrets.items():
        keystore.set(mailbox, credential, kind, value)
    return list(secrets)


def _secret_note(credential: str, kind: str, *, before: str | None = None, after: str | None = "***"
                 ) -> dict[str, Any]:
    key = f"credentials.{credential}.secret:{kind}"
    # the key may not look secret (e.g. "token_cache" does, "service_account_json" may not): mask by hand
    return {"key": key, "before": before and "***", "after": after and "***"}


def secret_origins(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Human text for the secrets of each row: ``password: present (keyring)`` / ``password: missing``."""
    out = []
    for row in rows:
        parts = []
        for kind, where in row["secrets"].items():
            if where is None:
                parts.append(f"{kind}: missing")
            elif where == "unknown":
                parts.append(f"{kind}: unknown (keyring unusable)")
            else:
                parts.append(f"{kind}: present ({where})")
        out.append("; ".join(parts) or "-")
    return out
