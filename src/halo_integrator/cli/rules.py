"""`integrator simulate FILE.eml` and `integrator rules list|test`: see what the importer would decide."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import click

from halo_integrator.cli import output
from halo_integrator.cli.app import App
from halo_integrator.errors import ConfigError


def _importer(app: App) -> Any:
    """An importer over the real store when there is one, else over an empty in-memory store (no file made)."""
    from halo_integrator.importer import Importer
    from halo_integrator.store import Store

    cfg = app.config
    store = app.store(create=False) if cfg.database_path.exists() else Store.open(Path(":memory:"))

    def no_secrets(*_: object) -> Any:
        raise ConfigError("simulating needs no server")

    return Importer(cfg, store, secrets=no_secrets, instance=app.instance, dry_run=True)


def _pick_mailbox(app: App, name: str | None) -> Any:
    cfg = app.config
    if name:
        return app.require(name, "read")
    if len(cfg.mailboxes) == 1:
        return app.require(cfg.mailboxes[0].name, "read")
    raise click.UsageError(
        f"The config has {len(cfg.mailboxes)} mailboxes; say which one with --mailbox "
        f"({', '.join(m.name for m in cfg.mailboxes) or 'none'})."
    )


def _print_decision(d: dict[str, Any]) -> None:
    click.echo(f"Outcome:  {d['outcome']}" + (f" (ticket {d['ticket_id']})" if d.get("ticket_id") else ""))
    click.echo(f"Why:      {d['reason']}")
    click.echo(f"From:     {d.get('sender')}")
    click.echo(f"Subject:  {d.get('subject')}")
    rules = d.get("rules") or {}
    if rules.get("matched"):
        click.echo(f"Rules:    {', '.join(rules['matched'])}")
    if d.get("fields"):
        click.echo("Sets:     " + ", ".join(f"{k}={v}" for k, v in d["fields"].items()))
    if d.get("linked_ticket_id"):
        click.echo(f"Linked:   ticket {d['linked_ticket_id']}")
    if d.get("loop"):
        click.echo(f"Loop:     {d['loop']}")
    thread = d.get("thread") or {}
    if thread:
        click.echo(f"Thread:   {thread.get('detail')}")
    if d.get("outcome") == "created":
        click.echo(f"Acknowledge: {'yes' if d.get('acknowledge') else 'no'}")


@click.command(epilog="\b\nExample:\n  integrator simulate stuck.eml --mailbox Support --json")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--mailbox", "-m", metavar="NAME", help="Decide as this mailbox (needed when there are several).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def simulate(app: App, file: Path, mailbox: str | None, as_json: bool) -> None:
    """Show what a run would do with one email file, and why. Changes nothing."""
    mb = _pick_mailbox(app, mailbox)
    decision = _importer(app).simulate(mb, file.read_bytes(), file.name)
    if as_json:
        output.print_json(decision)
    else:
        _print_decision(decision)


@click.group()
def rules() -> None:
    """Email rules: list them, and test them against example emails before they go live.

    \b
    Examples:
      integrator rules list
      integrator rules test tests/rule-cases --mailbox Support
    """


@rules.command("list", epilog="\b\nExample:\n  integrator rules list --mailbox Support")
@click.option("--mailbox", "-m", metavar="NAME", help="Only the global rules and this mailbox's.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_(app: App, mailbox: str | None, as_json: bool) -> None:
    """List the rules in the order they run: global first, then each mailbox's."""
    from halo_integrator import config as config_mod

    cfg = app.config
    if mailbox:
        app.require(mailbox, "read")
    scopes = [("(global)", cfg.rules)] + [
        (m.name, m.rules) for m in app.readable() if not mailbox or m.name.casefold() == mailbox.casefold()
    ]
    rows = [{"scope": scope, **config_mod.to_dict(r)} for scope, rules_ in scopes for r in rules_]
    if as_json:
        output.print_json(rows)
        return
    if not rows:
        output.info("No rules. Add [[rules]] (global) or [[mailboxes.rules]] to the config.")
        return
    output.table(
        None, ["Scope", "Rule", "Match", "Conditions", "Actions", "Stop"],
        [[r["scope"], r["name"], r.get("match", "all"),
          "; ".join(f"{'not ' if c.get('negate') else ''}{c['field']} {c.get('op', 'contains')} {c['value']!r}"
                    for c in r.get("conditions", [])) or "(always)",
          ", ".join(f"{k}={v}" for k, v in r.get("actions", {}).items()), "yes" if r.get("stop") else ""]
         for r in rows],
    )


EXPECTABLE = ("outcome", "ticket_id", "linked_ticket_id", "acknowledge")


def _compare(decision: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    problems = []
    for key, want in expected.items():
        if key == "mailbox":
            continue
        if key in EXPECTABLE:
            got = decision.get(key)
        elif key == "rules":
            got = (decision.get("rules") or {}).get("matched", [])
        elif key in ("type", "priority", "status", "category", "team", "agent"):
            got = (decision.get("fields") or {}).get(key, "")
        else:
            problems.append(f"unknown expectation {key!r} (allowed: {', '.join(EXPECTABLE)}, rules, type, "
                            "priority, status, category, team, agent, mailbox)")
            continue
        if got != want:
            problems.append(f"{key}: expected {want!r}, got {got!r}")
    return problems


@rules.command("test", epilog="\b\nExample:\n  integrator rules test rule-cases/\n\n"
               "\b\nrule-cases/supplier.eml is checked against rule-cases/supplier.toml, e.g.:\n"
               "  outcome = \"created\"\n  rules = [\"Supplier updates\"]\n  priority = \"High\"")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--mailbox", "-m", metavar="NAME", help="Decide as this mailbox (else `mailbox` in each .toml).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def test(app: App, directory: Path, mailbox: str | None, as_json: bool) -> None:
    """Run each .eml in DIRECTORY through the rules and compare with the outcome kept beside it in TOML."""
    importer = _importer(app)
    results: list[dict[str, Any]] = []
    for eml in sorted(directory.glob("*.eml")):
        spec = eml.with_suffix(".toml")
        if not spec.exists():
            results.append({"file": eml.name, "ok": False, "problems": [f"no {spec.name} beside it"]})
            continue
        try:
            expected = tomllib.loads(spec.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            results.append({"file": eml.name, "ok": False, "problems": [f"{spec.name} is not valid TOML: {exc}"]})
            continue
        mb = _pick_mailbox(app, mailbox or expected.get("mailbox"))
        decision = importer.simulate(mb, eml.read_bytes(), eml.name)
        problems = _compare(decision, expected)
        results.append(
            {"file": eml.name, "ok": not problems, "problems": problems, "outcome": decision["outcome"],
             "reason": decision["reason"]}
        )
    if not results:
        raise click.UsageError(f"No .eml files in {directory}.")
    failed = [r for r in results if not r["ok"]]
    if as_json:
        output.print_json(results)
    else:
        for r in results:
            click.echo(f"{'PASS' if r['ok'] else 'FAIL'}  {r['file']}: {r.get('outcome', '')}")
            for problem in r["problems"]:
                click.echo(f"        {problem}")
        click.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    click.get_current_context().exit(1 if failed else 0)
