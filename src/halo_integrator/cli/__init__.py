"""The `integrator` command line. Commands only parse, call the library, render, and map errors.

Exit codes (DESIGN contract 4): 0 all good, 1 error, 2 usage, 3 config error, 4 secret/credential error,
5 some mailboxes or emails failed, 75 another run holds the lock; 130 stopped by Ctrl-C, 143 by SIGTERM.
"""

from __future__ import annotations

import contextlib

import click

from halo_integrator import __version__
from halo_integrator.cli import output
from halo_integrator.cli.app import App
from halo_integrator.errors import EXIT_INTERRUPTED, IntegratorError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs (keeps `integrator --help` fast)."""

    def __init__(self, *args: object, lazy: dict[str, tuple[str, str]] | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = {*super().list_commands(ctx)}
        names.update(name for name in self.lazy if self._available(name))
        return sorted(names)

    def _available(self, name: str) -> bool:
        import importlib.util

        return importlib.util.find_spec(self.lazy[name][0]) is not None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and self._available(cmd_name):
            import importlib

            module, attr = self.lazy[cmd_name]
            cmd: click.Command = getattr(importlib.import_module(module), attr)
            return cmd
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> object:
        """The one edge where our errors become a one-line message and an exit code."""
        try:
            return super().invoke(ctx)
        except IntegratorError as exc:
            output.error(str(exc))
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            import signal

            with contextlib.suppress(ValueError):  # not the main thread: nothing to change
                # one more Ctrl-C on the way out would turn into click's "Aborted!" (exit 1), or kill the
                # interpreter as it shuts down: the run is ending already
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            output.error("Interrupted. Nothing committed is lost; the next run carries on.")
            ctx.exit(EXIT_INTERRUPTED)


COMMANDS = {
    "init": ("halo_integrator.cli.init", "init"),
    "run": ("halo_integrator.cli.run", "run"),
    "import": ("halo_integrator.cli.run", "import_"),
    "tickets": ("halo_integrator.cli.tickets", "tickets"),
    "logs": ("halo_integrator.cli.logs", "logs"),
    "mailbox": ("halo_integrator.cli.mailbox", "mailbox"),
    "credentials": ("halo_integrator.cli.credentials", "credentials"),
    "config": ("halo_integrator.cli.configcmd", "config"),
    "access": ("halo_integrator.cli.access", "access"),
    "agents": ("halo_integrator.cli.agents", "agents"),
    "reply": ("halo_integrator.cli.reply", "reply"),
    "outbox": ("halo_integrator.cli.reply", "outbox"),
    "quarantine": ("halo_integrator.cli.quarantine", "quarantine"),
    "reprocess": ("halo_integrator.cli.quarantine", "reprocess"),
    "simulate": ("halo_integrator.cli.rules", "simulate"),
    "rules": ("halo_integrator.cli.rules", "rules"),
    "doctor": ("halo_integrator.cli.doctor", "doctor"),
    "schedule": ("halo_integrator.cli.schedule", "schedule"),
}
"""Every command and where it lives; a module not written yet simply hides its command."""


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings=CONTEXT_SETTINGS)
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="Config file. Default: $INTEGRATOR_CONFIG, ./integrator.toml, then the user config dir.",
)
@click.option("--as", "agent", metavar="AGENT", help="Act as this agent (default: $INTEGRATOR_AGENT).")
@click.option("--instance", metavar="NAME", help="Run as this instance (default: $INTEGRATOR_INSTANCE, then config).")
@click.option("-v", "--verbose", count=True, help="More detail on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.version_option(__version__, prog_name="integrator")
@click.pass_context
def cli(
    ctx: click.Context, config_path: str | None, agent: str | None, instance: str | None, verbose: int, quiet: bool
) -> None:
    """Turn mailboxes into help-desk tickets.

    \b
    Example, the embedded demo (a folder of .eml files, no server needed):
      integrator --config examples/config.toml run
      integrator --config examples/config.toml tickets list
    """
    import os

    output.reset()
    output.configure_logging(verbose, quiet)
    ctx.obj = App(
        config_option=config_path, agent=agent or os.environ.get("INTEGRATOR_AGENT"), instance_option=instance,
        verbose=0 if quiet else verbose,
    )
    ctx.call_on_close(ctx.obj.close)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="integrator")
