"""`integrator schedule show|install|remove`: run `integrator run` every few minutes, unattended."""

from __future__ import annotations

import click

from halo_integrator import schedule as sched
from halo_integrator.cli import output
from halo_integrator.cli.app import App
from halo_integrator.schedule import DEFAULT_EVERY, KINDS, Job, default_kind, describe_every, parse_every

EXAMPLES = f"""
\b
Examples:
  integrator schedule show                      # what would be installed, and what is
  integrator schedule install --every 5m        # a crontab line ({default_kind()} on this system)
  integrator schedule install --kind systemd    # a systemd user service + timer
  integrator schedule show --kind windows       # the schtasks command and task XML
  integrator schedule remove
"""

kind_option = click.option(
    "--kind",
    type=click.Choice(KINDS),
    default=default_kind,
    show_default="cron; launchd on macOS; windows on Windows",
    help="Which scheduler.",
)
every_option = click.option(
    "--every",
    default=DEFAULT_EVERY,
    show_default=True,
    metavar="INTERVAL",
    help="How often: 5m, 15m, 1h, ...",
)


def _job(app: App, every: str = DEFAULT_EVERY) -> Job:
    instance = app.instance_override or ""
    try:
        minutes = parse_every(every)
    except sched.ScheduleError as exc:
        raise click.BadParameter(str(exc), param_hint="--every") from None
    return Job(config_path=app.config_path.resolve(), every_minutes=minutes, instance=instance)


@click.group(epilog=EXAMPLES)
def schedule() -> None:
    """Schedule `integrator run`: a crontab line, a systemd timer, a launchd agent or a Windows task.

    Each entry uses the full path of this Python and of the config file, and is marked with
    `# halo-integrator <config>`, so `install` replaces only its own entry and `remove` removes only it.
    Without a terminal `run` prints only errors, so cron mails you (MAILTO) only when something is wrong.
    """


@schedule.command(epilog=EXAMPLES)
@kind_option
@every_option
@click.pass_obj
def show(app: App, kind: str, every: str) -> None:
    """Print the entry `install` would write, and the entries already installed for this config."""
    job = _job(app, every)
    for name, text in sched.render(job, kind).items():
        click.echo(f"# {name}")
        click.echo(text.rstrip("\n"))
        click.echo()
    if kind == "cron":
        click.echo(
            "# Cron mails what a job prints to MAILTO (default: the local user). `run` prints only errors"
        )
        click.echo(
            "# when it has no terminal, so put MAILTO=admin@example.com above the line to be told of them."
        )
    try:
        found, unknown = sched.find_installed(job)
    except sched.ScheduleError as exc:  # pragma: no cover - find_installed reports its own problems
        found, unknown = [], [str(exc)]
    if found:
        for entry in found:
            every_text = describe_every(entry.every_minutes) if entry.every_minutes else "interval unknown"
            click.echo(f"Installed: {entry.kind} ({every_text}) in {entry.where}")
    else:
        click.echo(
            f"Not installed for {job.config_path}. `integrator schedule install --kind {kind}` adds it."
        )
    for why in unknown:
        output.warn(f"could not look at {why}")


@schedule.command(epilog=EXAMPLES)
@kind_option
@every_option
@click.pass_obj
def install(app: App, kind: str, every: str) -> None:
    """Install (or replace) the scheduled run for this config. Running it twice leaves one entry."""
    job = _job(app, every)
    app.config  # noqa: B018 - a broken config fails here, not silently every 5 minutes
    outcome = sched.install(job, kind)
    for changed in outcome.changed:
        output.info(f"Installed ({describe_every(job.every_minutes)}): {changed}")
    if outcome.next_step:
        output.info(f"Now enable it:\n  {outcome.next_step}")
    if kind == "systemd":
        output.info("To run it while you are logged out: loginctl enable-linger $USER")
    if kind == "cron":
        output.info(
            "Cron mails errors to MAILTO (default: this user); set MAILTO in the crontab to change that."
        )


@schedule.command(epilog=EXAMPLES)
@kind_option
@click.pass_obj
def remove(app: App, kind: str) -> None:
    """Remove the scheduled run of this config (only what `install` wrote)."""
    job = _job(app)
    outcome = sched.remove(job, kind)
    if not outcome.changed:
        output.info(f"Nothing to remove: no {kind} entry for {job.config_path}.")
        return
    for changed in outcome.changed:
        output.info(f"Removed: {changed}")
    if outcome.next_step:
        output.info(f"Then stop it:\n  {outcome.next_step}")
