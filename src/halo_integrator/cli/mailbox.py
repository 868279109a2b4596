"""`integrator mailbox add|list|show|edit|remove|test`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from halo_integrator.cli import output
from halo_integrator.cli.app import App
from halo_integrator.cli.credentials import (
    actor_for,
    forget_earlier,
    keystore_for,
    secret_lookups,
    stdin_secret,
    warn_split,
)
from halo_integrator.errors import EXIT_USAGE, IntegratorError, LockHeld, SecretError

if TYPE_CHECKING:

    from halo_integrator.config import Credential, Mailbox

AFTER_IMPORT_PHRASE = {
    "move_to_deleted": "moved to Deleted Items",
    "delete": "deleted from the server",
    "move_to_folder": "moved to the folder {folder}",
    "mark_read": "marked as read and left on the server",
}
POP3_AFTER_IMPORT_PHRASE = {  # POP3 has neither folders nor flags
    "move_to_deleted": "deleted from the server (POP3 has no Deleted Items folder)",
    "delete": "deleted from the server",
    "mark_read": "left on the server (POP3 has no read flag; the store remembers what it imported)",
}


def _fate(mailbox: Mailbox) -> str:
    """What happens to an email on the server once it is a ticket, in words."""
    action = mailbox.incoming.after_import
    phrases = POP3_AFTER_IMPORT_PHRASE if mailbox.connection == "pop3" else AFTER_IMPORT_PHRASE
    return phrases.get(action, AFTER_IMPORT_PHRASE[action]).format(folder=mailbox.incoming.move_folder)


def _instance_credentials(app: App, mb: Mailbox) -> list[Credential | None]:
    """The credentials this instance reads a mailbox with (``[None]`` for a folder mailbox); SecretError when
    there are none."""
    creds = app.config.read_credentials(mb, app.instance)
    if not creds:
        raise SecretError(
            f"Mailbox {mb.name!r} has no credential for instance {app.instance!r}; add one with "
            f"`integrator credentials add {mb.name}` or run with --instance."
        )
    return creds


@click.group()
def mailbox() -> None:
    """Add, inspect, change and test mailboxes.

    \b
    Examples:
      integrator mailbox add Support --connection imap --host imap.example.com --username support@example.com
      integrator mailbox test Support
      integrator mailbox edit Support --set incoming.after_import=mark_read
    """


@mailbox.command("list", epilog="\b\nExample:\n  integrator mailbox list --json")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_(app: App, as_json: bool) -> None:
    """List the mailboxes and the credentials this instance uses for each."""
    from halo_integrator.mailboxes import account

    cfg = app.config
    rows = []
    for mb in app.readable():  # only the mailboxes the acting agent may read
        creds = cfg.credentials_for(mb, app.instance)
        rows.append(
            {
                "name": mb.name,
                "connection": mb.connection,
                "address": mb.address,
                "after_import": mb.incoming.after_import,
                "credentials": [c.name for c in mb.credentials],
                "this_instance_uses": [f"{c.name} ({account(mb, c)})" for c in creds]
                if mb.connection != "folder" else [mb.path],
            }
        )
    if as_json:
        output.print_json(rows)
        return
    if not rows:
        output.info("No mailboxes yet. Add one with `integrator mailbox add`.")
        return
    output.table(
        None,
        ["Name", "Connection", "Address", "After import", f"Instance {app.instance or '(none)'} uses"],
        [
            [r["name"], r["connection"], r["address"], r["after_import"],
             ", ".join(r["this_instance_uses"]) or "-"]
            for r in rows
        ],
    )


@mailbox.command("show", epilog="\b\nExample:\n  integrator mailbox show Support")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show(app: App, name: str, as_json: bool) -> None:
    """Show a mailbox's settings and which credential this instance processes. Never shows a secret."""
    from halo_integrator.mailboxes import describe

    cfg = app.config
    mb = app.require(name, "read")
    data = describe(cfg, mb, app.instance)
    warn_split(app, [mb.name])
    if as_json:
        output.print_json(data)
        return
    click.echo(f"Mailbox {mb.name} ({mb.connection}) {mb.address}")
    if mb.connection == "folder":
        click.echo(f"Folder: {cfg.resolve(mb.path)}")
    used = data["processed_by_this_instance"]
    inst = app.instance or "(no instance)"
    if mb.connection != "folder":
        if used:
            for u in used:
                click.echo(
                    f"Instance {inst} processes it with credential {u['credential']!r}: {u['account']}"
                )
        else:
            click.echo(f"Instance {inst} has no credential for it: runs skip it.")
    inc = mb.incoming
    click.echo(f"After import: {inc.after_import}; new tickets: {'on' if inc.log_new_tickets else 'off'}; "
               f"updates: {'on' if inc.update_existing else 'off'}; ticket tag: {inc.ticket_tag}")
    for cred in mb.credentials:
        marker = "*" if any(u["credential"] == cred.name for u in used) else " "
        click.echo(
            f" {marker} credential {cred.name}: instance={cred.instance or '(all)'} {cred.security} "
            f"{cred.username}@{cred.host}:{cred.port or 'default'} auth={cred.auth}"
        )


@mailbox.command("test", epilog="\b\nExample:\n  integrator mailbox test Support --json")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def test(app: App, name: str, as_json: bool) -> None:
    """Connect, log in, find the folder read and the Deleted Items folder, and count the emails."""
    from halo_integrator.mailboxes import account, test_credentials

    cfg = app.config
    mb = app.require(name, "read")
    creds = _instance_credentials(app, mb)
    results = test_credentials(cfg, mb, creds, secret_lookups(app, mb))
    code = max(output.report_exit_code(report) for _, report in results)
    if as_json:
        output.print_json(
            [
                {
                    "mailbox": mb.name,
                    "credential": cred.name if cred else None,
                    "account": account(mb, cred),
                    "ok": r.ok,
                    "folder": r.folder,
                    "deleted_folder": r.deleted_folder,
                    "message_count": r.message_count,
                    "capabilities": r.capabilities,
                    "checks": r.checks_json(),
                }
                for cred, r in results
            ]
        )
    else:
        for cred, r in results:
            label = f"{mb.name}" + (f" / credential {cred.name} ({account(mb, cred)})" if cred else "")
            output.print_report(r, f"{'OK' if r.ok else 'FAILED'}: {label}")
    click.get_current_context().exit(code)


ADD_EXAMPLES = """
\b
Examples:
  integrator mailbox add                     # asks for everything
  integrator mailbox add Support --connection imap --host imap.example.com \\
      --username support@example.com --password-stdin --yes --only-new < password.txt
  integrator mailbox add Drop --connection folder --path /srv/maildrop --yes --import-existing
"""


@mailbox.command("add", epilog=ADD_EXAMPLES)
@click.argument("name", required=False)
@click.option("--connection", type=click.Choice(["imap", "pop3", "folder"]), help="How to reach the mailbox.")
@click.option("--address", help="The mailbox's email address.")
@click.option("--host", help="Server host name.")
@click.option("--port", type=click.IntRange(1, 65535),
              help="Server port (default: by protocol and security).")
@click.option("--security", type=click.Choice(["ssl", "starttls", "none"]), help="Default: ssl.")
@click.option("--username", help="Login name (default: the address).")
@click.option("--auth", type=click.Choice(["password", "oauth2"]), default="password", show_default=True)
@click.option("--oauth-provider", type=click.Choice(["none", "microsoft365", "google"]), default="none",
              show_default=True,
              help="With --auth oauth2: who issues the access token at each login (none: a token kept as is).")
@click.option("--tenant-id", default="", help="--oauth-provider microsoft365: the directory (tenant) id.")
@click.option("--client-id", default="", help="--oauth-provider microsoft365: the application (client) id.")
@click.option("--authority", default="", help="--oauth-provider microsoft365: another authority URL.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password (or token, client secret, JSON key file) from standard input.")
@click.option("--folder", default="", help="Folder to read (IMAP; default INBOX).")
@click.option("--move-folder", default="",
              help="With --after-import move_to_folder: the folder (IMAP) or directory (folder) to move to.")
@click.option("--deleted-folder", default="",
              help="The Deleted Items folder (IMAP) or directory (folder), where it is not found by itself.")
@click.option("--path", "folder_path",
              help="For --connection folder: the directory of .eml files or Maildir.")
@click.option("--after-import",
              type=click.Choice(["move_to_deleted", "delete", "move_to_folder", "mark_read"]),
              default="move_to_deleted", show_default=True)
@click.option("--ca-file", default="", help="Trust this CA certificate file (PEM) for a private CA.")
@click.option("--insecure-skip-verify", is_flag=True, help="Do not verify the server certificate (warned).")
@click.option("--credential", "cred_name", default="default", show_default=True,
              help="Name of the credential.")
@click.option("--credential-instance", default=None,
              help="Instance this credential serves (default: this config's instance; '' for all).")
@click.option("--import-existing", is_flag=True, help="Import every email already there.")
@click.option("--only-new", is_flag=True, help="Leave existing email alone; import only new mail.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask; needs --import-existing or --only-new.")
@click.pass_obj
def add(
        app: App, name: str | None, connection: str | None, address: str | None, host: str | None,
        port: int | None, security: str | None, username: str | None, auth: str, oauth_provider: str,
        tenant_id: str, client_id: str, authority: str, password_stdin: bool,
        folder: str, move_folder: str, deleted_folder: str, folder_path: str | None, after_import: str,
        ca_file: str, insecure_skip_verify: bool,
        cred_name: str, credential_instance: str | None, import_existing: bool, only_new: bool, yes: bool) -> None:
    """Add a mailbox: test the connection, say what will happen to the email already there, then save.

    The password goes to the OS keyring, never into the config file.
    """
    from halo_integrator import config as config_mod
    from halo_integrator import mailboxes as svc
    from halo_integrator.credentials import needed_kinds

    app.require_admin("adding a mailbox")
    cfg = app.config
    # Without --yes every missing answer is asked for (a script that pipes nothing gets "Aborted!");
    # with --yes nothing is asked and whatever is missing is a usage error.
    interactive = not yes
    ctx = click.get_current_context()

    def ask(value: Any, text: str, **kw: Any) -> Any:
        if value not in (None, ""):
            return value
        if not interactive:
            if "default" in kw:
                return kw["default"]
            raise click.UsageError(f"{text} is needed: pass it as an option (see --help).")
        return click.prompt(text, **kw)

    if import_existing and only_new:
        raise click.UsageError("--import-existing and --only-new exclude each other: choose one.")
    choice = "all" if import_existing else "new" if only_new else None
    name = ask(name, "Mailbox name")
    connection = ask(connection, "Connection", type=click.Choice(["imap", "pop3", "folder"]), default="imap")
    if connection == "pop3":
        given = [option for option, value in (("--folder", folder), ("--move-folder", move_folder),
                                               ("--deleted-folder", deleted_folder)) if value]
        if given or after_import == "move_to_folder":
            raise click.UsageError(
                f"{', '.join(given) or '--after-import move_to_folder'}: POP3 has no folders. Use --after-import "
                "delete or mark_read, or --connection imap."
            )
    elif connection == "folder" and folder:
        raise click.UsageError("--folder is for IMAP; a folder mailbox reads the directory given with --path.")
    if after_import == "move_to_folder":
        move_folder = ask(move_folder, "Folder to move imported emails to")
    elif move_folder:
        raise click.UsageError("--move-folder goes with --after-import move_to_folder.")
    address = ask(address, "Email address of the mailbox", default="")
    credentials: tuple[config_mod.Credential, ...] = ()
    secret = ""
    if connection == "folder":
        folder_path = ask(folder_path, "Folder of .eml files or Maildir")
        cred = None
    else:
        host = ask(host, "Server host")
        security = ask(security, "Security", type=click.Choice(["ssl", "starttls", "none"]), default="ssl")
        username = ask(username, "Login name", default=address or "")
        inst = cfg.instance if credential_instance is None else credential_instance
        cred = config_mod.Credential(
            name=cred_name, instance=inst, host=host or "", port=port or 0, security=security or "ssl",
            username=username or "", auth=auth, ca_file=ca_file, tls_verify=not insecure_skip_verify,
            oauth_provider=oauth_provider if auth == "oauth2" else "none", tenant_id=tenant_id,
            client_id=client_id, authority=authority,
        )
        credentials = (cred,)
        (kind,) = needed_kinds(config_mod.Mailbox(name=name, connection=connection), cred)
        if password_stdin:
            secret = stdin_secret(kind)
        elif kind == "service_account_json":
            raise click.UsageError("Pipe the service account's JSON key file in: --password-stdin < key.json.")
        elif interactive:
            secret = click.prompt(kind.replace("_", " ").capitalize(), hide_input=True)
        if not secret:
            raise click.UsageError("No password given: use --password-stdin in scripts.")
    if insecure_skip_verify:
        output.warn(
            "Certificate checks are off for this server: anyone on the network path could read this mail."
        )
    new_mailbox = config_mod.Mailbox(
        name=name, address=address or "", connection=connection, path=folder_path or "",
        incoming=config_mod.Incoming(
            after_import=after_import, folder=folder, move_folder=move_folder, deleted_folder=deleted_folder
        ),
        credentials=credentials,
    )
    test_cfg = svc.check_new(cfg, new_mailbox)  # a taken name or a bad setting stops here, before any test

    def secrets(kind: str) -> str:
        return secret

    report = svc.test_mailbox(test_cfg, new_mailbox, cred, secrets)
    output.print_report(report, f"Testing {name}:")
    if not report.ok:
        output.error(
            "The connection test failed, so nothing was saved. Fix the settings above and try again."
        )
        ctx.exit(output.report_exit_code(report))
    count = report.message_count or 0
    where = report.folder or "the mailbox"
    fate = _fate(new_mailbox)
    if count:
        from halo_integrator.connectors.folder import is_maildir

        maildir = connection == "folder" and is_maildir(cfg.resolve(folder_path or ""))
        unread = "unread " if after_import == "mark_read" and (connection == "imap" or maildir) else ""
        if count == 1:
            click.echo(f"The one {unread}email in {where} will be turned into a ticket and {fate}.")
        else:
            click.echo(f"All {count:,} {unread}emails in {where} will be turned into tickets and {fate}.")
        click.echo("Emails older than a day get no acknowledgement, so customers are not flooded.")
    if choice is None:
        if not interactive:
            output.error("Say what to do with the emails already there: --import-existing or --only-new.")
            ctx.exit(EXIT_USAGE)
        answer = click.prompt(
            "Import them all (a), import only email arriving from now on (n), or cancel (c)?",
            type=click.Choice(["a", "n", "c"]), default="n",
        )
        if answer == "c":
            click.echo("Cancelled; nothing was saved.")
            ctx.exit(0)
        choice = "all" if answer == "a" else "new"
    stored = {kind: secret for kind in needed_kinds(new_mailbox, cred)} if cred is not None else {}
    forget_earlier(app, name)  # a mailbox removed earlier under this name read another account, maybe
    if choice != "new":
        added = svc.add_mailbox(cfg, new_mailbox, secrets=stored, keystore=keystore_for(app), actor=actor_for(app))
        if after_import == "mark_read" and connection != "pop3":
            try:
                svc.begin_reading(added, name, secrets=stored, store=app.store())
            except LockHeld:
                output.warn("A run is in progress, so reading this mailbox begins at the next run instead of now.")
            except IntegratorError as exc:  # the mailbox is added; its first run begins reading instead
                output.warn(f"Reading begins at the first run instead of now: {exc}")
        click.echo(f"Saved. The next `integrator run` imports {count:,} email(s) from {name}.")
        return
    if connection == "pop3" and count:
        _say_pop3_reads_every_header(f"the {count:,} emails")
    try:
        left = svc.add_mailbox_only_new(
            cfg, new_mailbox, secrets=stored, keystore=keystore_for(app), actor=actor_for(app), store=app.store()
        )
    except IntegratorError:
        output.error(
            f"Marking the emails already in {name} as old failed (below), so the mailbox was not added; "
            "run `integrator mailbox add` again once the server answers."
        )
        raise
    click.echo(f"Saved. The {left:,} emails there now are left alone; new mail is imported from now on.")


@mailbox.command("edit", epilog="\b\nExamples:"
                 "\n  integrator mailbox edit Support --set incoming.after_import=mark_read"
                 "\n  integrator mailbox edit Support --set credentials.prod.port=1993"
                 "\n  integrator mailbox edit Support --only-new")
@click.argument("name")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="A setting under the mailbox, dotted (repeatable).")
@click.option("--only-new", is_flag=True,
              help="Leave every email now in the mailbox alone: only mail arriving from now on is imported.")
@click.pass_obj
def edit(app: App, name: str, assignments: tuple[str, ...], only_new: bool) -> None:
    """Change a mailbox's settings, or (--only-new) set its only-new watermark again. The whole config is
    checked before it is written."""
    from halo_integrator.access import edit_level
    from halo_integrator.mailboxes import edit_mailbox

    if not assignments and not only_new:
        raise click.UsageError("Say what to change: --set KEY=VALUE (repeatable) or --only-new.")
    mb = app.require(name, edit_level(assignments))  # modify; owner when a setting reaches access lines
    if assignments:
        _, changes = edit_mailbox(app.config, name, list(assignments), actor=actor_for(app))
        for key, (before, after) in changes.items():
            click.echo(f"{name}: {key}: {before!r} -> {after!r}")
    if only_new:
        _only_new_again(app, app.reload().mailbox(mb.name) if assignments else mb)


def _say_pop3_reads_every_header(which: str) -> None:
    """Marking a POP3 mailbox's emails as old reads each one's headers: say so before the wait."""
    output.info(
        f"Reading the headers of {which} there, one request each (POP3 has no other way), so they are "
        "recognised even if the server renumbers them; on a big mailbox this takes a while."
    )


def _only_new_again(app: App, mb: Mailbox) -> None:
    """Mark every email now in the mailbox as old, for each credential this instance reads it with."""
    from halo_integrator.mailboxes import only_new

    creds = _instance_credentials(app, mb)
    if mb.connection == "pop3":
        _say_pop3_reads_every_header("every email")
    results = zip(creds, only_new(app.config, mb, creds, secret_lookups(app, mb), app.store()), strict=True)
    for cred, left in results:
        where = f" (credential {cred.name})" if cred is not None and len(creds) > 1 else ""
        click.echo(f"{mb.name}{where}: the {left:,} emails there now are left alone; new mail is imported from now "
                   "on.")


@mailbox.command("remove", epilog="\b\nExample:\n  integrator mailbox remove Old --yes")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@click.pass_obj
def remove(app: App, name: str, yes: bool) -> None:
    """Remove a mailbox from the config and its secrets from the keyring. Tickets and logs stay."""
    from halo_integrator.mailboxes import remove_mailbox

    mb = app.require(name, "owner", "removing it")
    if not yes:
        click.confirm(f"Remove mailbox {mb.name!r} and its secrets? Its tickets and logs stay.", abort=True)
    _, removed, deleted = remove_mailbox(app.config, name, keystore=keystore_for(app), actor=actor_for(app))
    for cred_name, gone in deleted.items():
        click.echo(f"Deleted the {', '.join(gone)} of credential {cred_name} from the keyring.")
    click.echo(f"Removed mailbox {removed.name}.")


@mailbox.command("send-test", epilog="\b\nExample:\n  integrator mailbox send-test Support --to me@example.com")
@click.argument("name")
@click.option("--to", "to", required=True, metavar="ADDRESS", help="Who receives the test email.")
@click.pass_obj
def send_test(app: App, name: str, to: str) -> None:
    """Send a test email through a mailbox's outgoing settings and show the server's answer.

    A mailbox that sends nothing (outgoing.method = "none") uses the outgoing defaults mailbox
    ([outgoing] mailbox). Exit code 4 when the server refuses the credentials, 1 for any other failure.
    """
    from halo_integrator.cli.reply import open_outbox

    app.require(name, "read")
    box = open_outbox(app)
    sender = box.test_mailbox(name)
    if sender.name != app.config.mailbox(name).name:
        click.echo(f"{name} sends no email; using the outgoing defaults mailbox {sender.name}.")
    answer = box.send_test(sender, to)  # errors (exit 4 for credentials, 1 otherwise) are mapped by the CLI
    click.echo(f"Sent a test email from {sender.address} to {to}. The server answered: {answer}")
