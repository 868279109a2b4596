"""`integrator access show|set|explain MAILBOX`: who may view and configure a mailbox."""

from __future__ import annotations

import click

from halo_integrator import access as access_mod
from halo_integrator.cli import output
from halo_integrator.cli.app import App


@click.group(epilog="\b\nExamples:\n  integrator access show Support\n"
             "  integrator access set Support --entity team --name '3rd Line Support' --level read\n"
             "  integrator access explain Support --agent nina")
def access() -> None:
    """Mailbox access lines: which agents, teams or departments may view or configure a mailbox.

    Levels: read (see its settings and logs), modify (also change its settings and credentials), owner (also
    change its access lines). Lines are OR-ed: the highest level any line gives an agent wins. Admin agents
    may do everything. Using a mailbox (run, import, reply, tickets) needs no line. A config with no agents
    is single-admin mode: everything is allowed.
    """


@access.command("show", epilog="\b\nExample:\n  integrator access show Support --json")
@click.argument("mailbox")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show(app: App, mailbox: str, as_json: bool) -> None:
    """List a mailbox's access lines and the agents each one reaches (needs read)."""
    mb = app.require(mailbox, "read")
    cfg = app.config
    lines = [{**d, "agents": access_mod.members(cfg, ln)}
             for d, ln in zip(access_mod.lines_as_dicts(mb), mb.access, strict=True)]
    admins = [a.name for a in cfg.agents if a.admin]
    if as_json:
        output.print_json({"mailbox": mb.name, "single_admin": not cfg.agents, "lines": lines, "admins": admins})
        return
    if not cfg.agents:
        output.info("No agents are defined (single-admin mode): whoever runs the tool may do everything.")
    if not lines:
        output.info(f"{mb.name} has no access lines: only admins may view or configure it.")
    else:
        output.table(
            f"Access to {mb.name}" if output.is_terminal() else None,
            ["Entity", "Name", "Level", "Agents"],
            [[ln["entity"], ln["name"], ln["level"], ", ".join(ln["agents"]) or "(nobody yet)"] for ln in lines],
        )
    if admins:
        output.info(f"Admins (may do everything): {', '.join(admins)}")


SET_EXAMPLES = """
\b
Examples:
  integrator access set Support --entity team --name '3rd Line Support' --level read
  integrator access set Support --entity agent --name 'Nina Peach' --level modify
  integrator access set Support --entity department --name Finance --level none   # removes the line
"""


@access.command("set", epilog=SET_EXAMPLES)
@click.argument("mailbox")
@click.option("--entity", type=click.Choice(list(access_mod.ENTITIES)), required=True,
              help="Who the line is for.")
@click.option("--name", required=True, help="The agent's, team's or department's name.")
@click.option("--level", type=click.Choice(list(access_mod.LEVELS)), required=True,
              help="none removes the line; read, modify or owner.")
@click.pass_obj
def set_(app: App, mailbox: str, entity: str, name: str, level: str) -> None:
    """Give an agent, team or department a level on a mailbox (needs owner, or an admin).

    An agent must exist (`integrator agents list`); a team or department no agent is in yet is warned about.
    With [config] track_changes = true the change is recorded in `integrator config history`.
    """
    from halo_integrator.cli.credentials import actor_for

    mb = app.require(mailbox, "owner")
    change = access_mod.set_line(app.config, mb.name, entity=entity, name=name, level=level,
                                 actor=actor_for(app))
    for text in change.warnings:
        output.warn(text)
    label = f"{change.entity} {change.name}"
    if change.before == change.after:
        output.info(f"{mb.name}: {label} already has {'no line' if level == 'none' else level}; nothing changed.")
    elif level == "none":
        output.info(f"{mb.name}: removed the line of {label} (was {change.before}).")
    else:
        output.info(f"{mb.name}: {label}: {change.before} -> {change.after}.")


@access.command("explain", epilog="\b\nExample:\n  integrator access explain Support --agent 'Nina Peach'")
@click.argument("mailbox")
@click.option("--agent", "agent_name", metavar="NAME", help="Explain for this agent (default: you).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def explain(app: App, mailbox: str, agent_name: str | None, as_json: bool) -> None:
    """Say which lines give an agent what on a mailbox, or that none does (needs read)."""
    mb = app.require(mailbox, "read")
    cfg = app.config
    agent = access_mod.agent_named(cfg, agent_name) if agent_name else app.acting
    level, grants = access_mod.level_for(cfg, agent, mb)
    text = access_mod.explain(cfg, agent, mb)
    if as_json:
        output.print_json({
            "mailbox": mb.name, "agent": agent.name if agent else None, "level": level,
            "admin": bool(agent and agent.admin) or agent is None,
            "grants": [{"level": g.level, "entity": g.entity, "name": g.name} for g in grants], "text": text,
        })
        return
    output.info(text)
