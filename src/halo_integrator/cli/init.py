"""`integrator init [DIR]`: write a commented starter config and create the database."""

from __future__ import annotations

from pathlib import Path

import click

from halo_integrator.cli import output
from halo_integrator.cli.app import App
from halo_integrator.errors import ConfigError


@click.command(epilog="\b\nExamples:\n  integrator init\n  integrator init /etc/halo-integrator")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing config (the old one is kept as .bak).")
@click.pass_obj
def init(app: App, directory: Path | None, force: bool) -> None:
    """Write a commented starter integrator.toml and create the ticket database.

    DIR defaults to the folder of --config, else the current folder.
    """
    from halo_integrator import config as config_mod
    from halo_integrator.starter import STARTER_CONFIG
    from halo_integrator.store import Store

    if directory is not None:
        path = directory / config_mod.CONFIG_NAME
    elif app.config_option:
        path = Path(app.config_option)
    else:
        path = Path.cwd() / config_mod.CONFIG_NAME
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; nothing was changed. Use --force to replace it (kept as .bak).")
    config_mod.write_text_atomic(path, STARTER_CONFIG, backup=True, mode=0o600)
    cfg = config_mod.load(path)
    (cfg.base_dir / "mail").mkdir(exist_ok=True)
    with Store.open(cfg.database_path):
        pass
    output.info(f"Wrote {path}")
    output.info(f"Created the database {cfg.database_path}")
    output.info(f"Put .eml files in {cfg.base_dir / 'mail'} and run: integrator --config {path} run")
