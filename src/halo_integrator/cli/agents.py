"""`integrator agents list|add|edit|remove`: the agents, their teams and departments, and who is an admin."""

from __future__ import annotations

from typing import Any

import click

from halo_integrator import access as access_mod
from halo_integrator.cli import output
from halo_integrator.cli.app import App


@click.group(epilog="\b\nExamples:\n  integrator agents add Omar --admin --os-user omar\n"
             "  integrator agents add 'Nina Peach' --email nina@example.com --team '3rd Line Support'\n"
             "  integrator agents list")
def agents() -> None:
    """Agents, the teams and departments they are in, and which of them are admins.

    With no agents the config is in single-admin mode: whoever runs the tool may do everything. Add an admin
    first (`--admin`); once agents exist, each command acts as one (--as, $INTEGRATOR_AGENT, or the agent
    whose --os-user is your login) and changing agents needs an admin.
    """


def _row(agent: Any) -> dict[str, Any]:
    return {"name": agent.name, "email": agent.email, "teams": list(agent.teams),
            "departments": list(agent.departments), "admin": agent.admin, "os_user": agent.os_user}


@agents.command("list", epilog="\b\nExample:\n  integrator agents list --json")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_(app: App, as_json: bool) -> None:
    """List the agents with their teams, departments, admin flag and OS user name."""
    rows = [_row(a) for a in app.config.agents]
    if as_json:
        output.print_json(rows)
        return
    if not rows:
        output.info("No agents (single-admin mode: whoever runs the tool may do everything). Add an admin first: "
                    "integrator agents add NAME --admin --os-user LOGIN")
        return
    output.table(None, ["Name", "Email", "Teams", "Departments", "Admin", "OS user"],
                 [[r["name"], r["email"], ", ".join(r["teams"]), ", ".join(r["departments"]),
                   "yes" if r["admin"] else "", r["os_user"]] for r in rows])


def _after(app: App, had_agents: bool) -> None:
    cfg = app.reload()
    for text in access_mod.admin_warnings(cfg):
        output.warn(text)
    if cfg.agents and not had_agents:
        output.info("Agents are defined now, so every command acts as one: pass --as NAME, set "
                    "INTEGRATOR_AGENT, or give the agent --os-user LOGIN.")


ADD_EXAMPLES = """
\b
Examples:
  integrator agents add Omar --admin --os-user omar       # the first agent: make it an admin
  integrator agents add 'Nina Peach' --team '3rd Line Support' --department IT --email nina@example.com
"""


@agents.command("add", epilog=ADD_EXAMPLES)
@click.argument("name")
@click.option("--email", default="", help="The agent's email address.")
@click.option("--team", "teams", multiple=True, metavar="TEAM", help="A team the agent is in (repeatable).")
@click.option("--department", "departments", multiple=True, metavar="DEPT",
              help="A department the agent is in (repeatable).")
@click.option("--admin", is_flag=True, help="May do everything, including changing agents.")
@click.option("--os-user", default="", metavar="LOGIN", help="The login name that acts as this agent.")
@click.option("--signature", default="", help="Signature for replies this agent sends.")
@click.pass_obj
def add(app: App, name: str, email: str, teams: tuple[str, ...], departments: tuple[str, ...], admin: bool,
        os_user: str, signature: str) -> None:
    """Add an agent (needs an admin; in single-admin mode anyone may add the first)."""
    from halo_integrator.cli.credentials import actor_for
    from halo_integrator.config import Agent

    app.require_admin("adding an agent")
    had_agents = bool(app.config.agents)
    agent = Agent(name=name.strip(), email=email, teams=tuple(teams), departments=tuple(departments), admin=admin,
                  os_user=os_user, signature=signature)
    access_mod.add_agent(app.config, agent, actor=actor_for(app))
    output.info(f"Added agent {agent.name}" + (" (admin)." if admin else "."))
    _after(app, had_agents)


EDIT_EXAMPLES = """
\b
Examples:
  integrator agents edit 'Nina Peach' --add-team '3rd Line Support' --remove-team 'Service Desk'
  integrator agents edit omar --os-user omar.k --admin
"""


@agents.command("edit", epilog=EDIT_EXAMPLES)
@click.argument("name")
@click.option("--email", default=None, help="The agent's email address.")
@click.option("--add-team", multiple=True, metavar="TEAM", help="Put the agent in a team (repeatable).")
@click.option("--remove-team", multiple=True, metavar="TEAM", help="Take the agent out of a team.")
@click.option("--add-department", multiple=True, metavar="DEPT", help="Put the agent in a department.")
@click.option("--remove-department", multiple=True, metavar="DEPT", help="Take the agent out of a department.")
@click.option("--admin/--no-admin", default=None, help="Make the agent an admin, or not.")
@click.option("--os-user", default=None, metavar="LOGIN", help="The login name that acts as this agent.")
@click.option("--signature", default=None, help="Signature for replies this agent sends.")
@click.pass_obj
def edit(app: App, name: str, email: str | None, add_team: tuple[str, ...], remove_team: tuple[str, ...],
         add_department: tuple[str, ...], remove_department: tuple[str, ...], admin: bool | None,
         os_user: str | None, signature: str | None) -> None:
    """Change an agent's email, teams, departments, admin flag, OS user or signature (needs an admin)."""
    from halo_integrator.cli.credentials import actor_for

    app.require_admin("changing an agent")
    cfg = app.config
    old = access_mod.agent_named(cfg, name)
    changes: dict[str, Any] = {k: v for k, v in (("email", email), ("admin", admin), ("os_user", os_user),
                                                  ("signature", signature)) if v is not None}
    for field, add_, remove in (("teams", add_team, remove_team), ("departments", add_department,
                                                                   remove_department)):
        current = list(getattr(old, field))
        gone = {r.casefold() for r in remove}
        kept = [x for x in current if x.casefold() not in gone]
        kept += [a for a in add_ if a.casefold() not in {x.casefold() for x in kept}]
        if kept != current:
            changes[field] = tuple(kept)
    _, before = access_mod.edit_agent(cfg, old.name, actor=actor_for(app), **changes)
    new = access_mod.agent_named(app.reload(), old.name)
    if new == before:
        output.info(f"Agent {old.name}: nothing changed.")
    else:
        for key, value in _row(new).items():
            if value != _row(before)[key]:
                output.info(f"{old.name}: {key}: {_row(before)[key]!r} -> {value!r}")
    _after(app, True)


@agents.command("remove", epilog="\b\nExample:\n  integrator agents remove 'Nina Peach' --yes")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@click.pass_obj
def remove(app: App, name: str, yes: bool) -> None:
    """Remove an agent and the access lines that name them (needs an admin). Team lines stay."""
    from halo_integrator.cli.credentials import actor_for

    app.require_admin("removing an agent")
    agent = access_mod.agent_named(app.config, name)
    if not yes:
        click.confirm(f"Remove agent {agent.name!r} and the access lines that name them?", abort=True)
    _, _, boxes = access_mod.remove_agent(app.config, agent.name, actor=actor_for(app))
    output.info(f"Removed agent {agent.name}"
                + (f" and their access lines on {', '.join(boxes)}." if boxes else "."))
    _after(app, True)
