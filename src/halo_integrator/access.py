"""Who may do what: agents, teams, departments and each mailbox's access lines (DESIGN contract 9).

Who is acting: ``--as AGENT``, else ``$INTEGRATOR_AGENT``, else the agent whose ``os_user`` is the current
login (``$SUDO_USER`` when running under sudo, since sudo sets it to the person who ran it; else the login
name). A config with no ``[[agents]]`` is single-admin mode: whoever runs the tool may do everything, and a
``--as`` name is only a label for the config history. Once agents are defined, an unknown name is an error,
never a silent admin, and so is nobody being resolved.

Levels are ``none < read < modify < owner``: ``read`` may see a mailbox's settings and its logs, ``modify``
may also change its settings and credentials, ``owner`` may also change its access lines (and remove it).
A mailbox's lines are OR-ed and the highest level any line grants wins; admin agents may do everything.
Using a mailbox (run, import, reply, tickets) needs no line.

This is enforced by the tool only. Anyone who can read or write the config file or the database directly
is past it, so :func:`check_files` refuses files that other users can write and warns about files they can
read; docs/access.md lays out the file permissions for a shared server.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from halo_integrator.errors import AccessDenied, ConfigError, IntegratorError

if TYPE_CHECKING:
    from halo_integrator.config import AccessLine, Agent, Config, Mailbox
    from halo_integrator.history import Actor
    from halo_integrator.store import Store

LEVELS = ("none", "read", "modify", "owner")
ENTITIES = ("agent", "team", "department")
AGENTS_SCOPE = "(agents)"  # the config-history "mailbox" of changes to the agents themselves

# what each level lets an agent do, for refusals: "...; changing its settings needs modify."
DOING = {
    "read": "viewing its settings and logs",
    "modify": "changing its settings or credentials",
    "owner": "changing its access lines",
}
HOLDING = {"read": "may only read", "modify": "may only read and modify"}


class UnsafeFiles(IntegratorError):
    """The config or database can be written by other users: refuse to run (exit 1)."""


def rank(level: str) -> int:
    return LEVELS.index(level)


def _fold(text: str) -> str:
    return text.casefold().strip()


def _q(text: str) -> str:
    return shlex.quote(text)


# ------------------------------------------------------------------------------------------ who is acting


def current_login() -> str:
    """``$SUDO_USER`` under sudo (the person who ran it), else the login name; "" when there is none."""
    import getpass

    sudo_user = os.environ.get("SUDO_USER", "")
    if sudo_user:
        return sudo_user
    try:
        return getpass.getuser()
    except Exception:  # no login name at all (some containers)
        return ""


def find_agent(cfg: Config, name: str) -> Agent | None:
    for agent in cfg.agents:
        if _fold(agent.name) == _fold(name):
            return agent
    return None


def agent_named(cfg: Config, name: str) -> Agent:
    """The agent of that name (case-insensitive), else an error listing the agents."""
    agent = find_agent(cfg, name)
    if agent is None:
        known = ", ".join(a.name for a in cfg.agents) or "none"
        raise AccessDenied(
            f"No agent named {name!r} in {cfg.path} (agents: {known}). Check --as / $INTEGRATOR_AGENT, or "
            f"add the agent: integrator agents add {_q(name)}"
        )
    return agent


def resolve_agent(cfg: Config, name: str | None, *, login: str | None = None) -> Agent | None:
    """The acting agent; ``None`` in single-admin mode (no agents defined)."""
    if not cfg.agents:
        return None
    if name:
        return agent_named(cfg, name)
    login = current_login() if login is None else login
    if login:
        matches = [a for a in cfg.agents if a.os_user and a.os_user == login]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(a.name for a in matches)
            raise AccessDenied(
                f"Several agents have os_user {login!r} ({names}); say which you are with --as NAME."
            )
    known = ", ".join(a.name for a in cfg.agents)
    raise AccessDenied(
        f"This config defines agents ({known}) and none is you (login {login or 'unknown'!r}). Say who you are "
        "with --as NAME or $INTEGRATOR_AGENT, or let an admin link your login: "
        f"integrator agents edit NAME --os-user {_q(login or 'LOGIN')}"
    )


# --------------------------------------------------------------------------------------------- levels


@dataclass(frozen=True, kw_only=True)
class Grant:
    """One reason an agent holds a level on a mailbox: a line naming them, their team or department, or
    being an admin (entity "admin")."""

    level: str
    entity: str
    name: str

    def __str__(self) -> str:
        return "admin" if self.entity == "admin" else f"{self.entity} {self.name}"


def grants(cfg: Config, agent: Agent, mailbox: Mailbox) -> list[Grant]:
    """Every line of the mailbox that applies to the agent (and "admin" first for an admin)."""
    teams = {_fold(t) for t in agent.teams}
    departments = {_fold(d) for d in agent.departments}
    out = [Grant(level="owner", entity="admin", name=agent.name)] if agent.admin else []
    for line in mailbox.access:
        if line.level == "none":
            continue
        applies = (
            (line.entity == "agent" and _fold(line.name) == _fold(agent.name))
            or (line.entity == "team" and _fold(line.name) in teams)
            or (line.entity == "department" and _fold(line.name) in departments)
        )
        if applies:
            out.append(Grant(level=line.level, entity=line.entity, name=line.name))
    return out


def level_for(cfg: Config, agent: Agent | None, mailbox: Mailbox) -> tuple[str, list[Grant]]:
    """The highest level any line (or being an admin) gives the agent, and the grants behind it.

    ``agent`` None is single-admin mode: "owner", with no grants.
    """
    if agent is None:
        return "owner", []
    found = grants(cfg, agent, mailbox)
    best = max((g.level for g in found), key=rank, default="none")
    return best, found


def allows(cfg: Config, agent: Agent | None, mailbox: Mailbox, needed: str) -> bool:
    return rank(level_for(cfg, agent, mailbox)[0]) >= rank(needed)


def explain(cfg: Config, agent: Agent | None, mailbox: Mailbox) -> str:
    """E.g. "nina: read (team 3rd Line Support), modify (agent nina)" or "nina: no access (...)"."""
    if agent is None:
        return "No agents are defined (single-admin mode): whoever runs the tool may do everything."
    _, found = level_for(cfg, agent, mailbox)
    if agent.admin:
        rest = [g for g in found if g.entity != "admin"]
        also = f"; lines: {', '.join(f'{g.level} ({g})' for g in rest)}" if rest else ""
        return f"{agent.name}: owner (admin: may do everything){also}"
    if not found:
        return (f"{agent.name}: no access (no line of {mailbox.name} names {agent.name}, their teams or their "
                "departments)")
    return f"{agent.name}: " + ", ".join(f"{g.level} ({g})" for g in found)


def require(cfg: Config, agent: Agent | None, mailbox: Mailbox, needed: str, *, doing: str = "") -> None:
    """Raise :class:`AccessDenied` unless the agent holds ``needed`` on the mailbox; the message names the
    level needed, the level held and the command that would grant it."""
    held, _ = level_for(cfg, agent, mailbox)
    if rank(held) >= rank(needed) or agent is None:
        return
    doing = doing or DOING[needed]
    holds = f"has no access to mailbox {mailbox.name}" if held == "none" else (
        f"{HOLDING[held]} mailbox {mailbox.name}"
    )
    who = "An owner or admin" if needed != "owner" else "An owner of it or an admin"
    raise AccessDenied(
        f"{agent.name} {holds}; {doing} needs {needed}. {who} can grant it: integrator access set "
        f"{_q(mailbox.name)} --entity agent --name {_q(agent.name)} --level {needed}"
    )


def require_admin(cfg: Config, agent: Agent | None, doing: str) -> None:
    """Raise unless in single-admin mode or the agent is an admin."""
    if agent is None or agent.admin:
        return
    raise AccessDenied(
        f"{doing[:1].upper()}{doing[1:]} needs an admin agent, and {agent.name} is not one. An admin can make "
        f"them one: integrator agents edit {_q(agent.name)} --admin"
    )


def readable(cfg: Config, agent: Agent | None, mailboxes: Iterable[Mailbox] | None = None) -> list[Mailbox]:
    """The mailboxes (of the config, by default) the agent may read, in order."""
    boxes = cfg.mailboxes if mailboxes is None else mailboxes
    return [mb for mb in boxes if allows(cfg, agent, mb, "read")]


def edit_level(assignments: Sequence[str]) -> str:
    """The level `mailbox edit --set ...` needs: owner when a setting reaches the access lines."""
    keys = [text.partition("=")[0].strip().split(".")[0].strip() for text in assignments]
    return "owner" if "access" in keys else "modify"


def require_records(cfg: Config, agent: Agent | None, mailbox: str, needed: str = "read") -> None:
    """Check ``needed`` on a mailbox's records (logs, quarantine, history). Records of a mailbox that is no
    longer in the config (or of the agents themselves) are for admins only."""
    if agent is None or agent.admin:
        return
    found = next((mb for mb in cfg.mailboxes if _fold(mb.name) == _fold(mailbox)), None)
    if found is None:
        raise AccessDenied(
            f"{mailbox} is not a mailbox in the config now; only an admin may see its records "
            f"({agent.name} is not one)."
        )
    require(cfg, agent, found, needed)


class Records:
    """The store's log, quarantine and config-history queries, limited to the mailboxes an agent may read.

    Everything else is passed through to the store. ``names`` None means every mailbox (admin,
    single-admin mode).
    """

    def __init__(self, store: Store, cfg: Config, agent: Agent | None) -> None:
        self.store = store
        self.cfg = cfg
        self.agent = agent
        self.names: list[str] | None = (
            None if agent is None or agent.admin else [mb.name for mb in readable(cfg, agent)]
        )

    def _targets(self, mailbox: str | None) -> list[str] | None:
        """The mailboxes to show records of: the one asked for, or every one the agent may read; None: all."""
        if self.names is None:
            return [mailbox] if mailbox else None
        if mailbox:
            return [n for n in self.names if _fold(n) == _fold(mailbox)]
        return list(self.names)

    def logs(self, *, mailbox: str | None = None, limit: int = 50, **filters: Any) -> list[dict[str, Any]]:
        return self.store.logs(mailboxes=self._targets(mailbox), limit=limit, **filters)

    def config_history(self, mailbox: str | None = None, *, limit: int = 100) -> list[dict[str, Any]]:
        return self.store.config_history(mailboxes=self._targets(mailbox), limit=limit)

    def quarantined(self, mailbox: str | None = None) -> list[dict[str, Any]]:
        rows = self.store.quarantined(mailbox)
        if self.names is None:
            return rows
        visible = {_fold(n) for n in self.names}
        return [r for r in rows if _fold(r["mailbox"]) in visible]

    def log_entry(self, log_id: int, direction: str = "inbound") -> dict[str, Any] | None:
        entry = self.store.log_entry(log_id, direction)
        if entry is not None:
            require_records(self.cfg, self.agent, entry["mailbox"], "read")
        return entry

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


# ----------------------------------------------------------------------------------------- access lines


@dataclass(frozen=True, kw_only=True)
class AccessChange:
    config: Config
    mailbox: Mailbox
    entity: str
    name: str  # as spelled in the line (an agent's or team's own spelling)
    before: str  # the line's level before ("none" = there was no line)
    after: str
    warnings: list[str]


def set_line(
    cfg: Config, mailbox: str, *, entity: str, name: str, level: str, actor: Actor | None = None
) -> AccessChange:
    """Give an entity a level on a mailbox (``none`` removes its line), save the config and record the
    change in the config history. An agent must exist; a team or department no agent is in is a warning."""
    from halo_integrator import config as config_mod
    from halo_integrator import history
    from halo_integrator.config import AccessLine

    if entity not in ENTITIES:
        raise ConfigError(f"--entity must be one of {', '.join(ENTITIES)}, not {entity!r}.")
    if level not in LEVELS:
        raise ConfigError(f"--level must be one of {', '.join(LEVELS)}, not {level!r}.")
    name = name.strip()
    if not name:
        raise ConfigError("--name must not be empty.")
    warnings: list[str] = []
    if entity == "agent":
        if not cfg.agents:
            raise ConfigError(
                f"No agents are defined, so no agent {name!r} can be given access. Add agents first: "
                f"integrator agents add {_q(name)}"
            )
        name = agent_named(cfg, name).name
    else:
        spellings = [g for a in cfg.agents for g in (a.teams if entity == "team" else a.departments)]
        match = next((s for s in spellings if _fold(s) == _fold(name)), None)
        if match is not None:
            name = match
        elif level != "none":
            option = "--add-team" if entity == "team" else "--add-department"
            warnings.append(
                f"No agent is in {entity} {name!r} yet, so this line grants nothing until one is "
                f"(integrator agents edit NAME {option} {_q(name)})."
            )
    mb = cfg.mailbox(mailbox)
    old = next((ln for ln in mb.access if ln.entity == entity and _fold(ln.name) == _fold(name)), None)
    before = old.level if old is not None else "none"
    if old is not None:
        name = old.name
    kept: list[AccessLine] = [ln for ln in mb.access if ln is not old]
    if level != "none":
        new_line = AccessLine(entity=entity, name=name, level=level)
        index = list(mb.access).index(old) if old is not None else len(kept)
        kept.insert(index, new_line)
    if before == level:
        return AccessChange(config=cfg, mailbox=mb, entity=entity, name=name, before=before, after=level,
                            warnings=warnings)
    new_mb = dataclasses.replace(mb, access=tuple(kept))
    config_mod.save(config_mod.replace_mailbox(cfg, new_mb))
    loaded = config_mod.load(cfg.path)
    history.record(loaded, actor, mb.name, mb, loaded.mailbox(mb.name), action="access changed")
    return AccessChange(config=loaded, mailbox=loaded.mailbox(mb.name), entity=entity, name=name, before=before,
                        after=level, warnings=warnings)


def lines_as_dicts(mailbox: Mailbox) -> list[dict[str, str]]:
    return [{"entity": ln.entity, "name": ln.name, "level": ln.level} for ln in mailbox.access]


def members(cfg: Config, line: AccessLine) -> list[str]:
    """The agents a line names: the agent itself, or everyone in the team or department."""
    if line.entity == "agent":
        agent = find_agent(cfg, line.name)
        return [agent.name] if agent else []
    return [
        a.name for a in cfg.agents
        if _fold(line.name) in {_fold(x) for x in (a.teams if line.entity == "team" else a.departments)}
    ]


# ---------------------------------------------------------------------------------------------- agents


def _record_agents(cfg: Config, actor: Actor | None, action: str, before: Agent | None,
                   after: Agent | None) -> None:
    """A config-history row for a change to the agents themselves (with tracking on)."""
    from halo_integrator import config as config_mod
    from halo_integrator import history

    if not cfg.config.track_changes:
        return
    key = f"agents.{(after or before).name}"  # type: ignore[union-attr]
    if before is None or after is None:
        changes = [{"key": key, "before": before and config_mod.to_dict(before),
                    "after": after and config_mod.to_dict(after)}]
    else:
        changes = history.diff(dataclasses.asdict(before), dataclasses.asdict(after), key)
    if changes:
        history.write(cfg, actor, AGENTS_SCOPE, action, history.summarise(changes), changes)


def admin_warnings(cfg: Config) -> list[str]:
    """What to say about a config's agents after a change: no admin left, or back to single-admin mode."""
    if not cfg.agents:
        return ["No agents are left: this config is in single-admin mode again, so whoever can run the tool "
                "on it may do everything."]
    if not any(a.admin for a in cfg.agents):
        return ["No agent is an admin now: nobody can add, change or remove agents or add mailboxes through "
                "the tool. Make one an admin by editing the config file as its owner (admin = true)."]
    return []


def add_agent(cfg: Config, agent: Agent, *, actor: Actor | None = None) -> Config:
    """Add an agent to the config (the first one ends single-admin mode)."""
    from halo_integrator import config as config_mod

    if not agent.name.strip():
        raise ConfigError("An agent needs a name.")
    if find_agent(cfg, agent.name) is not None:
        raise ConfigError(f"An agent named {find_agent(cfg, agent.name).name!r} already exists.")  # type: ignore[union-attr]
    config_mod.save(dataclasses.replace(cfg, agents=(*cfg.agents, agent)))
    loaded = config_mod.load(cfg.path)
    _record_agents(loaded, actor, "agent added", None, agent)
    return loaded


def edit_agent(cfg: Config, name: str, *, actor: Actor | None = None, **changes: Any) -> tuple[Config, Agent]:
    """Change an agent's settings (the keyword arguments are :class:`~halo_integrator.config.Agent`
    fields); returns the new config and the agent as it was."""
    from halo_integrator import config as config_mod

    old = agent_named(cfg, name)
    new = dataclasses.replace(old, **changes)
    if new == old:
        return cfg, old
    config_mod.save(dataclasses.replace(cfg, agents=tuple(new if a is old else a for a in cfg.agents)))
    loaded = config_mod.load(cfg.path)
    _record_agents(loaded, actor, "agent edited", old, new)
    return loaded, old


def remove_agent(cfg: Config, name: str, *, actor: Actor | None = None) -> tuple[Config, Agent, list[str]]:
    """Remove an agent and the access lines that name them (so a later agent of the same name does not
    inherit them). Returns the new config, the agent and the mailboxes whose lines were removed."""
    from halo_integrator import config as config_mod
    from halo_integrator import history

    old = agent_named(cfg, name)
    boxes = []
    changed: list[tuple[Mailbox, Mailbox]] = []
    for mb in cfg.mailboxes:
        kept = tuple(ln for ln in mb.access if not (ln.entity == "agent" and _fold(ln.name) == _fold(old.name)))
        if kept != mb.access:
            new_mb = dataclasses.replace(mb, access=kept)
            changed.append((mb, new_mb))
        boxes.append(new_mb if kept != mb.access else mb)
    new_cfg = dataclasses.replace(cfg, agents=tuple(a for a in cfg.agents if a is not old), mailboxes=tuple(boxes))
    config_mod.save(new_cfg)
    loaded = config_mod.load(cfg.path)
    for before, after in changed:
        history.record(loaded, actor, before.name, before, after, action="access changed")
    _record_agents(loaded, actor, "agent removed", old, None)
    return loaded, old, [b.name for b, _ in changed]


# -------------------------------------------------------------------------------------- file permissions


def check_files(cfg: Config) -> list[str]:
    """Refuse (:class:`UnsafeFiles`) a config or database that group or others can write; return warnings
    for ones that they can read while agents are defined (access lines mean nothing to someone who can read
    the files directly). In single-admin mode `integrator doctor` reports readable files instead."""
    from halo_integrator.permissions import check_private_file

    refusals, warnings = [], []
    for what, path, harm in (
        ("config", cfg.path, "change where mail goes and who may do what"),
        ("database", cfg.database_path, "plant tickets or rewrite the logs"),
    ):
        verdict = check_private_file(path.resolve())
        if verdict.status == "fail":
            fix = f" Fix: {verdict.fix}" if verdict.fix else ""
            refusals.append(f"The {what} {verdict.reason}: other users could {harm}.{fix}")
        elif cfg.agents:
            strict = check_private_file(path.resolve(), secret=True)
            if strict.status == "fail":
                warnings.append(
                    f"The {what} {strict.reason}: whoever can read it sees every mailbox's "
                    f"{'settings' if what == 'config' else 'logs and tickets'}, whatever the access lines. "
                    f"Fix: {strict.fix} (see docs/access.md)"
                )
    if refusals:
        raise UnsafeFiles(
            "Refusing to run. " + " ".join(refusals) + " See docs/access.md for a shared server's layout."
        )
    return warnings
