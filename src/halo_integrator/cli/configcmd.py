"""`integrator config history|check|show`."""

from __future__ import annotations

import json
from dataclasses import replace

import click

from halo_integrator.cli import output
from halo_integrator.cli.app import App


@click.group(epilog="\b\nExamples:\n  integrator config check\n  integrator config history Support")
def config() -> None:
    """The config file: check it, show it, and see who changed what (with [config] track_changes = true)."""


HISTORY_EXAMPLES = """
\b
Examples:
  integrator config history                 # every mailbox, newest first
  integrator config history Support --limit 10
  integrator config history Support --json
"""


@config.command("history", epilog=HISTORY_EXAMPLES)
@click.argument("mailbox", required=False)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def history(app: App, mailbox: str | None, limit: int, as_json: bool) -> None:
    """Changes that commands made to mailboxes, their credentials and access lines: when, who, which
    instance, what changed (before -> after). Secret-like values are masked.

    Recorded only while `[config] track_changes = true` is set in the config.
    """
    cfg = app.config
    rows = app.records(mailbox).config_history(mailbox, limit=limit)  # only mailboxes the agent may read
    if as_json:
        output.print_json(rows)
        return
    if not cfg.config.track_changes:
        output.warn("Config change tracking is off; set `track_changes = true` under [config] to record "
                    "changes.")
    if not rows:
        output.info("No config changes recorded" + (f" for {mailbox}." if mailbox else "."))
        return
    for row in rows:
        click.echo(f"#{row['id']} {row['time']} {row['agent']} (instance {row['instance'] or '-'}): "
                   f"{row['mailbox']}: {row['action']}")
        for change in row["changes"]:
            click.echo(f"    {change['key']}: {_show(change['before'])} -> {_show(change['after'])}")


def _show(value: object) -> str:
    if value is None:
        return "(none)"
    return json.dumps(value, ensure_ascii=False, default=str)


@config.command("check", epilog="\b\nExample:\n  integrator --instance uat config check")
@click.pass_obj
def check(app: App) -> None:
    """Load the config (errors name the key and the allowed values), say what this instance processes and
    warn about server accounts whose mail would be split between instances."""
    from halo_integrator.credentials import split_warnings
    from halo_integrator.mailboxes import account

    cfg = app.config
    click.echo(f"{cfg.path}: OK; instance {app.instance or '(none)'}; {len(cfg.mailboxes)} mailbox(es).")
    for mb in app.readable():
        if mb.connection == "folder":
            click.echo(f"  {mb.name}: folder {cfg.resolve(mb.path)}")
            continue
        used = cfg.credentials_for(mb, app.instance)
        if not used:
            click.echo(f"  {mb.name}: no credential for this instance; runs skip it.")
        for cred in used:
            click.echo(f"  {mb.name}: credential {cred.name} -> {account(mb, cred)}")
    warnings = split_warnings(cfg)
    for text in warnings:
        output.warn(text)


@config.command("show", epilog="\b\nExample:\n  integrator config show --json")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show(app: App, as_json: bool) -> None:
    """Print the config as it was read (values equal to their defaults left out). It holds no secret."""
    import tomli_w

    from halo_integrator import config as config_mod

    data = config_mod.to_dict(replace(app.config, mailboxes=tuple(app.readable())))  # what the agent may read
    if as_json:
        output.print_json(data)
        return
    click.echo(f"# {app.config.path}")
    click.echo(tomli_w.dumps(data), nl=False)
