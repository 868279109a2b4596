"""Adding, changing, testing and removing mailboxes: the library behind `integrator mailbox ...`.

Every change goes through :func:`halo_integrator.config.save` (validated, atomic, ``.bak`` kept); secrets go
only to the keystore.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from halo_integrator import config as config_mod
from halo_integrator.connectors import make_connector
from halo_integrator.connectors.base import DEFAULT_PORTS, Check, Connector, MemoryState, TestReport
from halo_integrator.errors import ConfigError, IntegratorError, SecretError

if TYPE_CHECKING:
    from halo_integrator.config import Config, Credential, Mailbox
    from halo_integrator.history import Actor
    from halo_integrator.keystore import Keystore
    from halo_integrator.store import Store


def connector_for(
    cfg: Config,
    mailbox: Mailbox,
    credential: Credential | None,
    secrets: Callable[[str], str],
    store: Store | None = None,
) -> Connector:
    """A connector for tests and onboarding; state comes from the store when one is given."""
    state = store.state_view(mailbox.name, credential.name if credential else "") if store else MemoryState()
    return make_connector(mailbox, credential, config=cfg, secrets=secrets, state=state)


def test_mailbox(
    cfg: Config, mailbox: Mailbox, credential: Credential | None, secrets: Callable[[str], str]
) -> TestReport:
    """Connect, log in and find the folders; a report, never an exception."""
    return connector_for(cfg, mailbox, credential, secrets).test()


test_mailbox.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


CredentialOrNone = TypeVar("CredentialOrNone", bound="Credential | None")


def test_credentials(
    cfg: Config,
    mailbox: Mailbox,
    credentials: Sequence[CredentialOrNone],
    secrets_for: Callable[[CredentialOrNone], Callable[[str], str]],
) -> list[tuple[CredentialOrNone, TestReport]]:
    """Test each credential (None: a folder mailbox); a secret that cannot be read is a failed ``secret``
    check of that credential's report, never an exception."""
    results: list[tuple[CredentialOrNone, TestReport]] = []
    for credential in credentials:
        try:
            report = test_mailbox(cfg, mailbox, credential, secrets_for(credential))
        except SecretError as exc:
            report = TestReport(checks=[Check(name="secret", ok=False, detail=str(exc), secret=True)])
        results.append((credential, report))
    return results


test_credentials.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def only_new(
    cfg: Config, mailbox: Mailbox, credentials: Sequence[Credential | None],
    secrets_for: Callable[[Credential | None], Callable[[str], str]], store: Store,
) -> list[int]:
    """Leave every email now in the mailbox alone, for each credential: only mail arriving from now on will
    be imported. Runs under the run lock, so no run imports part of it meanwhile. How many were left alone,
    per credential."""
    from halo_integrator.lock import RunLock

    with RunLock(cfg.database_path):
        return [_mark_old(cfg, mailbox, cred, secrets_for(cred), store) for cred in credentials]


def add_mailbox_only_new(
    cfg: Config, mailbox: Mailbox, *, secrets: Mapping[str, str], keystore: Keystore, actor: Actor | None,
    store: Store,
) -> int:
    """Add a mailbox and leave every email now in it alone (`mailbox add --only-new`), under the run lock: no
    run may import the emails between the two steps. If marking them fails, or is interrupted, the mailbox
    and its secrets are taken out again. How many emails were left alone."""
    from halo_integrator.lock import RunLock

    with RunLock(cfg.database_path):
        new = add_mailbox(cfg, mailbox, secrets=secrets, keystore=keystore, actor=actor)
        added = new.mailbox(mailbox.name)
        credential = added.credentials[0] if added.credentials else None
        try:
            return _mark_old(new, added, credential, lambda kind: secrets.get(kind, ""), store)
        except BaseException:  # Ctrl-C included: without its watermark the next run would import them all
            remove_mailbox(new, mailbox.name, keystore=keystore, actor=actor)
            raise


def begin_reading(cfg: Config, name: str, *, secrets: Mapping[str, str], store: Store) -> None:
    """With ``after_import = "mark_read"``: begin reading a mailbox just added, rather than at its first run.
    The read mark is set on the mailbox as it is now (its unread emails wait to be imported), so an email that
    arrives before the first run is imported even if someone reads it meanwhile. Under the run lock; a run
    holding it begins reading itself."""
    from halo_integrator.lock import RunLock

    mailbox = cfg.mailbox(name)
    credential = mailbox.credentials[0] if mailbox.credentials else None
    with RunLock(cfg.database_path), connector_for(
        cfg, mailbox, credential, lambda kind: secrets.get(kind, ""), store
    ) as conn:
        conn.list_ids()


def _mark_old(cfg: Config, mailbox: Mailbox, credential: Credential | None, secrets: Callable[[str], str],
              store: Store) -> int:
    """The connector records its own watermark (IMAP UIDs and Message-IDs, POP3 ids and headers); every id
    present now is also remembered as ``skipped``, so protocols without one (folders) leave them alone too.
    Returns how many emails were left alone."""
    cred = credential.name if credential else ""
    with connector_for(cfg, mailbox, credential, secrets, store) as conn:
        ids = conn.list_ids()
        conn.set_watermark()
    known = store.seen_states(mailbox.name, cred, ids)  # imported already: keep what the store knows of them
    with store.transaction():
        for source_id in ids:
            if source_id not in known:
                store.mark_seen(mailbox.name, cred, source_id, "skipped")
    return len(ids)


# ------------------------------------------------------------------------------------------ editing


def check_new(cfg: Config, mailbox: Mailbox) -> Config:
    """The config with this new mailbox added, validated whole; nothing is written. Raises ConfigError for a
    taken name or an invalid setting."""
    for existing in cfg.mailboxes:
        if existing.name.casefold() == mailbox.name.casefold():
            raise ConfigError(f"A mailbox named {existing.name!r} already exists; choose another name.")
    new = config_mod.replace_mailbox(cfg, mailbox)
    config_mod.from_dict(config_mod.to_dict(new), cfg.path)
    return new


def add_mailbox(
    cfg: Config, mailbox: Mailbox, *, secrets: Mapping[str, str] | None = None, keystore: Keystore | None = None,
    actor: Actor | None = None,
) -> Config:
    """Add a mailbox: check it, store its credential's secrets (``kind -> value``) in the keystore, then write
    the config file (and the config history when tracking is on). Nothing is stored for a mailbox that cannot
    be added."""
    from halo_integrator import history
    from halo_integrator.credentials import store_secrets

    new = check_new(cfg, mailbox)
    if secrets:
        if keystore is None or not mailbox.credentials:
            raise ConfigError(f"Mailbox {mailbox.name!r}: secrets given without a credential and a keystore.")
        store_secrets(keystore, mailbox.name, mailbox.credentials[0].name, secrets)
    config_mod.save(new)
    loaded = config_mod.load(cfg.path)
    history.record(loaded, actor, mailbox.name, None, loaded.mailbox(mailbox.name))
    return loaded


def remove_mailbox(
    cfg: Config, name: str, *, keystore: Keystore | None, actor: Actor | None = None
) -> tuple[Config, Mailbox, dict[str, list[str]]]:
    """Remove a mailbox from the config file and (unless ``keystore`` is None) every secret it had from the
    keyring: each credential's, and the SMTP password of a mailbox without credentials. The keyring is
    checked first, so an unusable one leaves everything as it was. Returns the new config, the removed
    mailbox and the kinds deleted per keyring credential name."""
    from halo_integrator import history
    from halo_integrator.credentials import ALL_KINDS, OUTGOING_CREDENTIAL

    mailbox = cfg.mailbox(name)
    if keystore is not None and mailbox.credentials:
        keystore.check_backend()
    new = dataclasses.replace(cfg, mailboxes=tuple(m for m in cfg.mailboxes if m is not mailbox))
    config_mod.save(new)
    deleted: dict[str, list[str]] = {}
    if keystore is not None:
        for cred in mailbox.credentials:
            deleted[cred.name] = keystore.delete_all(mailbox.name, cred.name, ALL_KINDS)
        try:
            deleted[OUTGOING_CREDENTIAL] = keystore.delete_all(mailbox.name, OUTGOING_CREDENTIAL, ALL_KINDS)
        except IntegratorError:
            if mailbox.credentials:
                raise  # a folder mailbox needs no keyring: without a usable one, it has no SMTP password there
    deleted = {cred_name: kinds for cred_name, kinds in deleted.items() if kinds}
    loaded = config_mod.load(cfg.path)
    history.record(cfg, actor, mailbox.name, mailbox, None)
    return loaded, mailbox, deleted


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """``incoming.after_import=delete`` → (["incoming", "after_import"], "delete"); values are TOML when
    they parse as TOML (numbers, booleans, lists, quoted strings), else plain strings."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r} must look like KEY=VALUE, e.g. incoming.after_import=delete.")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return [p.strip() for p in key.strip().split(".")], value


def edit_mailbox(
    cfg: Config, name: str, assignments: list[str], *, actor: Actor | None = None
) -> tuple[Config, dict[str, tuple[Any, Any]]]:
    """Apply ``KEY=VALUE`` settings to a mailbox (``credentials.<name>.<key>`` reaches a credential).

    Returns the new config and what changed (key → (before, after)). Nothing is written if any setting is
    invalid: the whole new config is validated before the atomic write.
    """
    mailbox = cfg.mailbox(name)
    data = config_mod.to_dict(cfg)
    index = next(i for i, m in enumerate(cfg.mailboxes) if m is mailbox)
    target = data["mailboxes"][index]
    changes: dict[str, tuple[Any, Any]] = {}
    for text in assignments:
        path, value = parse_assignment(text)
        key = ".".join(path)
        before = _effective(mailbox, path)
        node = target
        if path[0] == "credentials" and len(path) >= 3:
            creds = node.setdefault("credentials", [])
            match = [c for c in creds if c.get("name", "default") == path[1]]
            if not match:
                raise ConfigError(f"Mailbox {mailbox.name!r} has no credential named {path[1]!r}.")
            node, path = match[0], path[2:]
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(path)}: {part} is not a table.")
            node = child
        node[path[-1]] = value
        changes[key] = (before, value)
    new = config_mod.from_dict(data, cfg.path)
    config_mod.save(new)
    loaded = config_mod.load(cfg.path)
    from halo_integrator import history

    history.record(loaded, actor, mailbox.name, mailbox, loaded.mailboxes[index])  # same place, maybe renamed
    return loaded, changes


def _effective(mailbox: Mailbox, path: list[str]) -> Any:
    """The value a dotted setting has now, defaults included (None when there is no such setting)."""
    node: Any = mailbox
    if path[0] == "credentials" and len(path) >= 3:
        node = next((c for c in mailbox.credentials if c.name == path[1]), None)
        path = path[2:]
    for part in path:
        if node is None:
            return None
        node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
    return node


def describe(cfg: Config, mailbox: Mailbox, instance: str) -> dict[str, Any]:
    """A mailbox's settings for `mailbox show`, with which credential this instance uses. No secrets."""
    data = config_mod.to_dict(dataclasses.replace(cfg, mailboxes=(mailbox,)))["mailboxes"][0]
    used = cfg.credentials_for(mailbox, instance)
    data["instance"] = instance
    data["processed_by_this_instance"] = [
        {"credential": c.name, "account": account(mailbox, c)} for c in used
    ]
    incoming = config_mod.to_dict(mailbox.incoming)
    data["incoming"] = {**incoming, "after_import": mailbox.incoming.after_import}
    return data


def account(mailbox: Mailbox, credential: Credential | None) -> str:
    """The server account a credential reaches, e.g. ``support@example.com@imap.example.com:993``."""
    if credential is None:
        return mailbox.path
    port = credential.port or DEFAULT_PORTS.get((mailbox.connection, credential.security), 0)
    user = credential.username or mailbox.address
    return f"{user}@{credential.host}:{port}" if credential.host else user
