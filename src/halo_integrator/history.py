"""Config change tracking: with ``[config] track_changes = true`` every change a command makes to a mailbox,
its credentials or its access lines becomes one row in the store (``integrator config history``).

A row says when, who (the acting agent, ``--as`` / ``$INTEGRATOR_AGENT``, else the operating-system user),
which instance, which mailbox, and what changed: a list of ``{"key", "before", "after"}`` with dotted keys
such as ``incoming.after_import``, ``credentials.prod.port`` or ``access.team:Service Desk.level``. The
config never holds a secret, but any key named like a password, secret, token or key is masked anyway.

Callers pass an :class:`Actor` and the mailbox before and after the change (``None`` when it did not exist
or is gone); :func:`record` works out the differences and writes nothing when tracking is off or nothing
changed.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from halo_integrator.config import Config, Mailbox
    from halo_integrator.store import Store

logger = logging.getLogger(__name__)

MASK = "***"
_SECRET_KEY_RE = re.compile(r"pass(word|phrase|wd)?|secret|token|api_?key|private_?key|account_?json", re.I)


@dataclass(frozen=True, kw_only=True)
class Actor:
    """Who makes a change, as which instance, and how to reach the store (opened only when tracking is on)."""

    agent: str = ""  # "" = the operating-system user
    instance: str = ""
    open_store: Callable[[], Store] | None = None  # None = open the config's database for the one write


def os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers): still record the change
        return "unknown"


def who(actor: Actor | None) -> str:
    return (actor.agent if actor else "") or f"os:{os_user()}"


def is_secret_key(key: str) -> bool:
    """Whether a (dotted) key names something secret, judged by its last part."""
    last = key.rsplit(".", 1)[-1]
    return bool(_SECRET_KEY_RE.search(last))


def mask(key: str, value: Any) -> Any:
    if value in (None, "") or not is_secret_key(key):
        return value
    return MASK


def _masked(data: Any, prefix: str = "") -> Any:
    """A nested value with every secret-like key masked."""
    if isinstance(data, dict):
        return {k: _masked(v, f"{prefix}.{k}" if prefix else str(k)) for k, v in data.items()}
    return mask(prefix, data)


def _compact(obj: Any) -> Any:
    """A dataclass as in the config file (values equal to their defaults left out), masked."""
    from halo_integrator import config as config_mod

    return None if obj is None else _masked(config_mod.to_dict(obj))


def _flatten(data: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(data, dict) and data:
        for key, value in data.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(data, list | tuple):
        out[prefix] = list(data)
    else:
        out[prefix] = data


def diff(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> list[dict[str, Any]]:
    """``[{"key", "before", "after"}]`` for every leaf that differs, secret-like keys masked."""
    flat_before: dict[str, Any] = {}
    flat_after: dict[str, Any] = {}
    _flatten(before, prefix, flat_before)
    _flatten(after, prefix, flat_after)
    changes = []
    for key in sorted(flat_before.keys() | flat_after.keys()):
        old, new = flat_before.get(key), flat_after.get(key)
        if old == new:
            continue
        masked_old, masked_new = mask(key, old), mask(key, new)
        if masked_old == masked_new:  # a secret-like value changed: say so without showing it
            masked_new = f"{MASK} (changed)"
        changes.append({"key": key, "before": masked_old, "after": masked_new})
    return changes


def diff_mailboxes(before: Mailbox | None, after: Mailbox | None) -> list[dict[str, Any]]:
    """What changed between two versions of a mailbox. A mailbox, credential or access line that was added
    or removed is one entry with its settings (defaults left out); other changes are one entry per setting,
    keyed like ``incoming.after_import``, ``credentials.prod.port`` or ``access.team:Service Desk.level``."""
    if before is None or after is None:
        return [{"key": "mailbox", "before": _compact(before), "after": _compact(after)}]
    plain = {"credentials", "access"}
    changes = diff(
        {k: v for k, v in dataclasses.asdict(before).items() if k not in plain},
        {k: v for k, v in dataclasses.asdict(after).items() if k not in plain},
    )
    for kind, key_of in (("credentials", lambda c: c.name), ("access", lambda a: f"{a.entity}:{a.name}")):
        old = {key_of(x): x for x in getattr(before, kind)}
        new = {key_of(x): x for x in getattr(after, kind)}
        for name in sorted(old.keys() | new.keys()):
            key = f"{kind}.{name}"
            if name not in old or name not in new:
                was, now = _compact(old.get(name)), _compact(new.get(name))
                changes.append({"key": key, "before": was, "after": now})
            else:
                changes += diff(dataclasses.asdict(old[name]), dataclasses.asdict(new[name]), key)
    return changes


def summarise(changes: Sequence[dict[str, Any]], limit: int = 4) -> str:
    keys = [c["key"] for c in changes]
    text = ", ".join(keys[:limit])
    return text + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def record(
    cfg: Config,
    actor: Actor | None,
    mailbox: str,
    before: Mailbox | None,
    after: Mailbox | None,
    *,
    action: str | None = None,
    notes: Sequence[dict[str, Any]] = (),
) -> int | None:
    """Write one history row if ``[config] track_changes`` is on and something changed; its id, or None.

    ``notes`` are extra ``{"key", "before", "after"}`` entries (e.g. a secret stored in the keyring); they
    are masked like the rest.
    """
    if not cfg.config.track_changes:
        return None
    changes = diff_mailboxes(before, after)
    changes += [
        {"key": n["key"], "before": mask(n["key"], n.get("before")), "after": mask(n["key"], n.get("after"))}
        for n in notes
    ]
    if not changes:
        return None
    if action is None:
        action = "mailbox edited"
        if before is None or after is None:
            action = "mailbox added" if before is None else "mailbox removed"
    summary = summarise(changes) if before is not None and after is not None else ""
    return write(cfg, actor, mailbox, action, summary, changes)


def write(
    cfg: Config, actor: Actor | None, mailbox: str, action: str, summary: str, changes: list[dict[str, Any]]
) -> int:
    """One config-history row, through the actor's store when it has one open. Returns its id."""
    row: dict[str, Any] = {
        "agent": who(actor),
        "instance": (actor.instance if actor else "") or cfg.instance,
        "mailbox": mailbox,
        "action": action,
        "summary": summary,
        "changes": changes,
    }
    if actor is not None and actor.open_store is not None:
        return actor.open_store().record_config_change(**row)
    from halo_integrator.store import Store

    with Store.open(cfg.database_path) as store:
        return store.record_config_change(**row)
