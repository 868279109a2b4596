"""`integrator credentials add|list|remove|test MAILBOX`."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from halo_integrator.cli import output
from halo_integrator.cli.app import App
from halo_integrator.errors import EXIT_SECRET

if TYPE_CHECKING:
    from collections.abc import Callable

    from halo_integrator.config import Credential, Mailbox
    from halo_integrator.history import Actor
    from halo_integrator.keystore import Keystore


def keystore_for(app: App) -> Keystore:
    from halo_integrator.keystore import Keystore

    return Keystore(app.config.secrets, base_dir=app.config.base_dir, interactive=False)


def secret_lookups(app: App, mailbox: Mailbox) -> Callable[[Credential | None], Callable[[str], str]]:
    """The secret lookup of each of a mailbox's credentials, all from one keystore (whose backend opens on
    first use); a folder mailbox (credential None) has no secrets."""
    keystore = keystore_for(app)

    def lookup(credential: Credential | None) -> Callable[[str], str]:
        return (lambda kind: "") if credential is None else keystore.lookup(mailbox.name, credential.name)

    return lookup


def actor_for(app: App) -> Actor:
    from halo_integrator.history import Actor

    return Actor(agent=app.acting_name, instance=app.instance, open_store=app.store)


def forget_earlier(app: App, mailbox: str, credential: str | None = None) -> None:
    """Before a mailbox (or a credential of one) is added under a name: drop what the store still knows of
    reading an earlier one of that name (Store.forget_mailbox), and say so when it knew anything."""
    if not app.config.database_path.exists():  # no store yet: nothing to forget, and none is made for it
        return
    forgotten = app.store().forget_mailbox(mailbox, credential)
    if forgotten:
        earlier = f"credential {mailbox}/{credential}" if credential is not None else f"mailbox named {mailbox}"
        output.warn(
            f"The store still knew {forgotten:,} email id(s) an earlier {earlier} had seen; they are forgotten, so "
            "this one starts afresh (its tickets and logs stay)."
        )


def warn_split(app: App, mailboxes: list[str] | None = None) -> None:
    """Print the "mail will be split between the instances" warnings for these mailboxes (all if None)."""
    from halo_integrator.credentials import split_warnings

    for text in split_warnings(app.config, mailboxes):
        output.warn(text)


@click.group(epilog="\b\nExamples:\n  integrator credentials list Support\n"
             "  integrator credentials add Support --name uat --instance uat --host imap-uat.example.com\n"
             "  integrator credentials test Support --name uat")
def credentials() -> None:
    """The credentials of a mailbox: one per instance (production, UAT, ...); secrets in the OS keyring.

    A run uses only the credentials of its own instance (and those with no instance).
    """


ADD_EXAMPLES = """
\b
Examples:
  # a UAT credential; the password is asked for (hidden)
  integrator credentials add Support --name uat --instance uat \\
      --host imap-uat.example.com --username support-uat@example.com
  # from a script: the secret on standard input
  printf '%s\\n' "$PW" | integrator credentials add Support --name uat --instance uat \\
      --host imap-uat.example.com --secret-stdin
  # a new password for an existing credential
  integrator credentials add Support --name prod
"""


@credentials.command("add", epilog=ADD_EXAMPLES)
@click.argument("mailbox")
@click.option("--name", help="Credential name (default: the instance's name, else 'default').")
@click.option("--instance", "cred_instance", default=None, metavar="NAME",
              help="Instance this credential serves (default: the current instance; '' for every instance).")
@click.option("--host", help="Server host name.")
@click.option("--port", type=click.IntRange(1, 65535), help="Server port (default: by protocol, security).")
@click.option("--security", type=click.Choice(["ssl", "starttls", "none"]), help="Default: ssl.")
@click.option("--username", help="Login name (default: the mailbox address).")
@click.option("--auth", type=click.Choice(["password", "oauth2"]), help="Default: password.")
@click.option("--ca-file", help="Trust this CA certificate file (PEM) for a private CA.")
@click.option("--oauth-provider", type=click.Choice(["none", "microsoft365", "google"]),
              help="IMAP/POP3 with --auth oauth2: who issues the access token at each login (default: none, a "
              "token kept as is).")
@click.option("--tenant-id", help="Microsoft 365: the directory (tenant) id.")
@click.option("--client-id", help="Microsoft 365: the application (client) id.")
@click.option("--authority", help="Microsoft 365: another Entra ID authority URL (a national cloud).")
@click.option("--secret-stdin", is_flag=True,
              help="Read the secret from standard input (one line; a JSON key file whole).")
@click.option("--test/--no-test", "run_test", default=True, show_default=True,
              help="Log in with it before saving (skip when the server is not reachable from here).")
@click.pass_obj
def add(
    app: App, mailbox: str, name: str | None, cred_instance: str | None, host: str | None, port: int | None,
    security: str | None, username: str | None, auth: str | None, ca_file: str | None, oauth_provider: str | None,
    tenant_id: str | None, client_id: str | None, authority: str | None, secret_stdin: bool, run_test: bool,
) -> None:
    """Add a credential to a mailbox, or store a new secret for an existing one.

    The secret goes to the OS keyring (or the backend pinned by [secrets] backend), never into the config.
    With --test (the default) the credential must log in before anything is saved.
    """
    from halo_integrator import config as config_mod
    from halo_integrator import credentials as svc
    from halo_integrator import mailboxes

    cfg = app.config
    mb = app.require(mailbox, "modify")
    keystore = keystore_for(app)
    keystore.check_backend()  # before asking for a secret that could not be kept
    settings = {"host": host, "port": port, "security": security, "username": username, "auth": auth,
                "ca_file": ca_file, "oauth_provider": oauth_provider, "tenant_id": tenant_id, "client_id": client_id,
                "authority": authority, "instance": cred_instance}
    given = {k: v for k, v in settings.items() if v is not None}
    existing = {c.name: c for c in mb.credentials}
    if name is None and not given:
        mine = cfg.credentials_for(mb, app.instance)
        if len(mine) == 1:
            name = mine[0].name
    inst = app.instance if cred_instance is None else cred_instance
    name = name or inst or "default"

    if name in existing:
        if given:
            raise click.UsageError(
                f"Mailbox {mb.name} already has a credential {name!r}; to change its settings use "
                f"`integrator mailbox edit {mb.name} --set credentials.{name}.KEY=VALUE`, or choose another "
                "--name. "
                "Without other options, this command stores a new secret for it."
            )
        cred = existing[name]
        kinds = svc.needed_kinds(mb, cred)
        secrets = {kind: _read_secret(kind, mb.name, name, secret_stdin) for kind in kinds}
        if run_test:
            _test_or_exit(app, mb.name, cred, secrets)
        stored = svc.set_secrets(cfg, mb.name, name, secrets, keystore=keystore, actor=actor_for(app))
        click.echo(
            f"Stored a new {', '.join(stored)} for {mb.name}/{name} in the keyring ({keystore.backend_name})."
        )
        return

    if mb.connection in ("imap", "pop3") and not host:
        raise click.UsageError("--host is needed for a new credential of an IMAP or POP3 mailbox.")
    cred = config_mod.Credential(
        name=name, instance=inst, host=host or "", port=port or 0, security=security or "ssl",
        username=username or "", auth=auth or "password", ca_file=ca_file or "",
        oauth_provider=oauth_provider or "none", tenant_id=tenant_id or "", client_id=client_id or "",
        authority=authority or "",
    )
    kinds = svc.needed_kinds(mb, cred)
    secrets = {kind: _read_secret(kind, mb.name, name, secret_stdin) for kind in kinds}
    if run_test:
        _test_or_exit(app, mb.name, cred, secrets)
    forget_earlier(app, mb.name, name)  # a credential removed earlier under this name read another account, maybe
    new_cfg = svc.add(cfg, mb.name, cred, secrets, keystore=keystore, actor=actor_for(app))
    app.reload()
    click.echo(
        f"Added credential {name} to {mb.name}: instance {inst or '(every instance)'}, account "
        f"{mailboxes.account(mb, cred)}; {', '.join(kinds) or 'no secret'} stored in the keyring "
        f"({keystore.backend_name})."
    )
    warn_split(app, [mb.name])
    if name not in {c.name for c in new_cfg.credentials_for(new_cfg.mailbox(mb.name), app.instance)}:
        output.warn(f"This instance ({app.instance or 'none'}) does not use it; runs of instance {inst} do.")


@credentials.command(
    "smtp-password",
    epilog="\b\nExample:\n  integrator credentials smtp-password Support --secret-stdin < smtp-password.txt",
)
@click.argument("mailbox")
@click.option("--secret-stdin", is_flag=True, help="Read the password from standard input (one line).")
@click.pass_obj
def smtp_password(app: App, mailbox: str, secret_stdin: bool) -> None:
    """Store the password the mailbox sends email with (outgoing.method = "smtp").

    It is kept in the keyring under the credential this instance uses, or under "outgoing" for a mailbox
    without credentials. When outgoing.username is the mailbox's own login, its password is used if none
    is stored here.
    """
    from halo_integrator import credentials as svc

    mb = app.require(mailbox, "modify")
    keystore = keystore_for(app)
    keystore.check_backend()
    value = _read_secret("smtp_password", mb.name, "outgoing", secret_stdin)
    name = svc.set_smtp_password(app.config, mb.name, app.instance, value, keystore=keystore, actor=actor_for(app))
    click.echo(f"Stored the SMTP password of {mb.name} as {mb.name}/{name}/smtp_password ({keystore.backend_name}).")
    click.echo(f"Check it with: integrator mailbox send-test {mb.name} --to you@example.com")


def stdin_secret(kind: str) -> str:
    """A secret piped in: its first line, or for a JSON key file all of standard input."""
    if kind == "service_account_json":
        return sys.stdin.read().strip()
    return sys.stdin.readline().rstrip("\r\n")


def _read_secret(kind: str, mailbox: str, credential: str, from_stdin: bool) -> str:
    label = kind.replace("_", " ")
    if from_stdin:
        value = stdin_secret(kind)
    elif kind == "service_account_json":
        raise click.UsageError(f"Pipe the {label} key file in: --secret-stdin < key.json.")
    elif sys.stdin.isatty():
        value = click.prompt(f"{label.capitalize()} for {mailbox}/{credential}", hide_input=True, default="",
                             show_default=False)
    else:
        raise click.UsageError(f"No {label} given: use --secret-stdin in scripts (input is not a terminal).")
    if not value:
        raise click.UsageError(f"The {label} is empty; nothing was saved.")
    return value


def _test_or_exit(app: App, mailbox: str, cred: Credential, secrets: dict[str, str]) -> None:
    from halo_integrator import config as config_mod
    from halo_integrator.errors import SecretError
    from halo_integrator.mailboxes import test_mailbox

    cfg = app.config
    mb = cfg.mailbox(mailbox)
    trial = config_mod.replace_mailbox(cfg, _with_credential(mb, cred))

    def lookup(kind: str) -> str:
        if kind in secrets:
            return secrets[kind]
        raise SecretError(f"No {kind} was given for {mb.name}/{cred.name}.")

    report = test_mailbox(trial, trial.mailbox(mailbox), cred, lookup)
    output.print_report(report, f"Testing {mb.name}/{cred.name}:")
    if not report.ok:
        output.error("The test failed, so nothing was saved. Fix it, or use --no-test if the server is "
                     "not reachable from this machine.")
        click.get_current_context().exit(output.report_exit_code(report))


def _with_credential(mb: Any, cred: Credential) -> Any:
    import dataclasses

    others = tuple(c for c in mb.credentials if c.name != cred.name)
    return dataclasses.replace(mb, credentials=(*others, cred))


LIST_EXAMPLES = """
\b
Examples:
  integrator credentials list Support
  integrator --instance uat credentials list --json
"""


@credentials.command("list", epilog=LIST_EXAMPLES)
@click.argument("mailbox", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_(app: App, mailbox: str | None, as_json: bool) -> None:
    """Each credential, its instance, the server account it reaches and whether its secrets are present.

    Never shows a secret. A mark (*) shows the credentials this instance uses.
    """
    from halo_integrator import credentials as svc

    cfg = app.config
    boxes = [app.require(mailbox, "read")] if mailbox else [m for m in app.readable() if m.connection != "folder"]
    keystore = keystore_for(app)
    rows = [row for mb in boxes for row in svc.describe(cfg, mb, app.instance, keystore)]
    error = next((r["keyring_error"] for r in rows if r["keyring_error"]), None)
    if as_json:
        output.print_json([{k: v for k, v in r.items() if k != "keyring_error"} for r in rows])
    elif not rows:
        output.info("No credentials. Add one with `integrator credentials add MAILBOX`.")
    else:
        output.table(
            f"Credentials (this instance: {app.instance or 'none'})" if output.is_terminal() else None,
            ["", "Mailbox", "Credential", "Instance", "Account", "Auth", "Secrets"],
            [["*" if r["used_by_this_instance"] else "", r["mailbox"], r["name"], r["instance"] or "(all)",
              r["account"], r["auth"], text] for r, text in zip(rows, svc.secret_origins(rows), strict=True)],
        )
    warn_split(app, [mb.name for mb in boxes])
    if error:
        output.error(error)
        click.get_current_context().exit(EXIT_SECRET)


@credentials.command("remove", epilog="\b\nExample:\n  integrator credentials remove Support uat --yes")
@click.argument("mailbox")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@click.option("--keep-secrets", is_flag=True,
              help="Leave the keyring alone (e.g. no keyring on this machine; secrets from the environment).")
@click.pass_obj
def remove(app: App, mailbox: str, name: str, yes: bool, keep_secrets: bool) -> None:
    """Remove a credential from a mailbox, and its secrets from the keyring."""
    from halo_integrator import credentials as svc

    mb = app.require(mailbox, "modify")
    svc.find(mb, name)
    if not yes:
        click.confirm(f"Remove credential {name!r} of {mb.name} and its secrets in the keyring?", abort=True)
    _, deleted = svc.remove(app.config, mb.name, name, keystore=None if keep_secrets else keystore_for(app),
                            actor=actor_for(app))
    app.reload()
    if deleted:
        click.echo(f"Deleted the {', '.join(deleted)} of {mb.name}/{name} from the keyring.")
    elif not keep_secrets:
        click.echo(f"No secret of {mb.name}/{name} was in the keyring.")
    click.echo(f"Removed credential {name} from {mb.name}.")


TEST_EXAMPLES = """
\b
Examples:
  integrator credentials test Support             # the credentials this instance uses
  integrator credentials test Support --name uat  # one credential, whatever its instance
"""


@credentials.command("test", epilog=TEST_EXAMPLES)
@click.argument("mailbox")
@click.option("--name", help="Test this credential (default: those this instance uses).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def test(app: App, mailbox: str, name: str | None, as_json: bool) -> None:
    """Connect and log in with a credential (its secret from the environment or the keyring)."""
    from halo_integrator import credentials as svc
    from halo_integrator.errors import SecretError
    from halo_integrator.mailboxes import test_credentials

    cfg = app.config
    mb = app.require(mailbox, "read")
    creds = [svc.find(mb, name)] if name else cfg.credentials_for(mb, app.instance)
    if not creds:
        raise SecretError(
            f"Mailbox {mb.name!r} has no credential for instance {app.instance!r}; name one with --name, or "
            f"add one with `integrator credentials add {mb.name}`."
        )
    results = test_credentials(cfg, mb, creds, secret_lookups(app, mb))
    code = max(output.report_exit_code(report) for _, report in results)
    if as_json:
        output.print_json([
            {"mailbox": mb.name, "credential": c.name, "instance": c.instance, "account": svc.account(mb, c),
             "ok": r.ok, "message_count": r.message_count,
             "checks": r.checks_json()}
            for c, r in results
        ])
    else:
        for c, r in results:
            output.print_report(r, f"{'OK' if r.ok else 'FAILED'}: {mb.name}/{c.name} "
                             f"(instance {c.instance or 'all'}) {svc.account(mb, c)}")
    click.get_current_context().exit(code)
