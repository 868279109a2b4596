"""`integrator credentials add|list|remove|test`, no usable keyring (fail and null backends) through the real
CLI, and a test that no secret ever reaches a file the tool writes or its output."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import click
import pytest

from dovecot import Dovecot
from halo_integrator.cli import cli
from halo_integrator.config import SecretsSettings
from halo_integrator.config import load as load_config
from halo_integrator.keystore import Keystore, env_name
from halo_integrator.testing_keyring import MemoryKeyring
from helpers import invoke, run_subprocess
from instancesetup import PortOnly, imap_config, seed_subjects, store_password

SERVICE = "halo-integrator"
NO_BACKEND = "No usable keyring backend"


def add_args(server_port: int, user: str, *extra: str) -> list[str]:
    return ["credentials", "add", "Support", "--name", "uat", "--instance", "uat", "--host", "127.0.0.1",
            "--port", str(server_port), "--security", "none", "--username", user, "--secret-stdin", *extra]


# --------------------------------------------------------------------------------------------- add


@pytest.mark.dovecot
def test_add_tests_the_login_then_stores_the_secret_only_in_the_keyring(
    dovecot_server: Dovecot, tmp_path: Path
) -> None:
    prod, uat = dovecot_server.new_user(), dovecot_server.new_user()
    cfg = imap_config(tmp_path, dovecot_server, {"prod": (prod.name, "prod")})
    result = invoke(cfg, *add_args(dovecot_server.imap_port, uat.name), input=uat.password + "\n")
    assert result.exit_code == 0, result.output
    assert "[ok ] login" in result.stdout
    assert "Added credential uat to Support: instance uat" in result.stdout
    assert MemoryKeyring.entries() == {(SERVICE, "Support/uat/password"): uat.password}
    assert uat.password not in cfg.read_text()
    creds = load_config(cfg).mailbox("Support").credentials
    assert [(c.name, c.instance, c.username) for c in creds] == [("prod", "prod", prod.name), ("uat", "uat", uat.name)]


@pytest.mark.dovecot
def test_add_with_a_wrong_password_saves_nothing_and_exits_4(dovecot_server: Dovecot, tmp_path: Path) -> None:
    user = dovecot_server.new_user()
    cfg = imap_config(tmp_path, dovecot_server, {"prod": (user.name, "prod")})
    before = cfg.read_bytes()
    result = invoke(cfg, *add_args(dovecot_server.imap_port, user.name), input="not-the-password\n")
    assert result.exit_code == 4, result.output
    assert "nothing was saved" in result.stderr
    assert cfg.read_bytes() == before
    assert MemoryKeyring.entries() == {}


def test_add_no_test_then_list_shows_where_each_secret_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = imap_config(tmp_path, PortOnly(), {"prod": ("support", "prod")})
    result = invoke(cfg, *add_args(1143, "support-uat", "--no-test"), input="s3cret-uat\n")
    assert result.exit_code == 0, result.output

    listed = invoke(cfg, "credentials", "list", "Support")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0].split("\t") == ["", "Mailbox", "Credential", "Instance", "Account", "Auth", "Secrets"]
    assert lines[1].split("\t") == ["*", "Support", "prod", "prod", "support@127.0.0.1:1143", "password",
                                    "password: missing"]
    assert lines[2].split("\t") == ["", "Support", "uat", "uat", "support-uat@127.0.0.1:1143", "password",
                                    "password: present (keyring)"]
    assert "s3cret" not in listed.output

    monkeypatch.setenv(env_name("Support", "prod", "password"), "from-env")
    rows = json.loads(invoke(cfg, "credentials", "list", "--json").stdout)
    assert [(r["name"], r["secrets"]) for r in rows] == [
        ("prod", {"password": "environment"}),
        ("uat", {"password": "keyring"}),
    ]
    assert "from-env" not in json.dumps(rows)


def test_add_to_an_existing_credential_replaces_only_its_secret(tmp_path: Path) -> None:
    cfg = imap_config(tmp_path, PortOnly(), {"prod": ("support", "prod")})
    store_password("Support", "prod", "old-password")
    before = cfg.read_bytes()
    result = invoke(cfg, "credentials", "add", "Support", "--secret-stdin", "--no-test", input="new-password\n")
    assert result.exit_code == 0, result.output
    assert "Stored a new password for Support/prod" in result.stdout
    assert Keystore(SecretsSettings()).get("Support", "prod", "password") == "new-password"
    assert cfg.read_bytes() == before

    clash = invoke(cfg, "credentials", "add", "Support", "--name", "prod", "--host", "other.example.com",
                   "--secret-stdin", "--no-test", input="x\n")
    assert clash.exit_code == 2
    assert "mailbox edit Support --set credentials.prod." in clash.stderr


def test_add_without_a_secret_in_a_script_is_a_usage_error(tmp_path: Path) -> None:
    cfg = imap_config(tmp_path, PortOnly(), {"prod": ("support", "prod")})
    result = invoke(cfg, *add_args(1143, "support-uat", "--no-test")[:-2], "--no-test")
    assert result.exit_code == 2
    assert "--secret-stdin" in result.stderr
    assert MemoryKeyring.entries() == {}


# ------------------------------------------------------------------------------------ remove, test


def test_remove_deletes_the_credential_and_all_its_keyring_entries(tmp_path: Path) -> None:
    cfg = imap_config(tmp_path, PortOnly(), {"prod": ("support", "prod"), "uat": ("support-uat", "uat")})
    keystore = Keystore(SecretsSettings())
    keystore.set("Support", "uat", "password", "pw")
    keystore.set("Support", "uat", "token_cache", "t" * 5000)  # large: kept in pieces
    keystore.set("Support", "prod", "password", "keep-me")
    assert len(MemoryKeyring.entries()) > 3

    result = invoke(cfg, "credentials", "remove", "Support", "uat", "--yes")
    assert result.exit_code == 0, result.output
    assert "Deleted the password, token_cache of Support/uat from the keyring." in result.stdout
    assert MemoryKeyring.entries() == {(SERVICE, "Support/prod/password"): "keep-me"}
    assert [c.name for c in load_config(cfg).mailbox("Support").credentials] == ["prod"]

    last = invoke(cfg, "credentials", "remove", "Support", "prod", "--yes")
    assert last.exit_code == 3  # an IMAP mailbox needs a credential; nothing changed
    assert MemoryKeyring.entries() == {(SERVICE, "Support/prod/password"): "keep-me"}


@pytest.mark.dovecot
def test_mailbox_add_under_a_taken_name_stores_nothing(tmp_path: Path) -> None:
    """The name is checked before anything else: the existing mailbox's password is never overwritten."""
    cfg = imap_config(tmp_path, PortOnly(), {"prod": ("support", "prod")})
    store_password("Support", "prod", "the-real-one")
    before = cfg.read_bytes()
    result = invoke(cfg, "mailbox", "add", "Support", "--connection", "imap", "--host", "127.0.0.1",
                    "--port", "1", "--security", "none", "--username", "x", "--credential", "prod",
                    "--password-stdin", "--import-existing", "--yes", input="overwritten?\n")
    assert result.exit_code == 3, result.output
    assert "already exists" in result.stderr
    assert MemoryKeyring.entries() == {(SERVICE, "Support/prod/password"): "the-real-one"}
    assert cfg.read_bytes() == before


def test_mailbox_remove_deletes_every_secret_it_had(tmp_path: Path) -> None:
    cfg = imap_config(tmp_path, PortOnly(), {"prod": ("support", "prod")})
    keystore = Keystore(SecretsSettings())
    keystore.set("Support", "prod", "password", "pw")
    keystore.set("Support", "prod", "smtp_password", "smtp")
    keystore.set("Support", "outgoing", "smtp_password", "smtp-for-other-instances")
    keystore.set("Other", "prod", "password", "not-mine")

    result = invoke(cfg, "mailbox", "remove", "Support", "--yes")
    assert result.exit_code == 0, result.output
    assert "Deleted the password, smtp_password of credential prod from the keyring." in result.stdout
    assert "Deleted the smtp_password of credential outgoing from the keyring." in result.stdout
    assert MemoryKeyring.entries() == {(SERVICE, "Other/prod/password"): "not-mine"}


def test_test_logs_in_with_the_stored_secret(dovecot_server: Dovecot, tmp_path: Path) -> None:
    prod, uat = dovecot_server.new_user(), dovecot_server.new_user()
    seed_subjects(dovecot_server, uat, "One", "Two")
    cfg = imap_config(tmp_path, dovecot_server, {"prod": (prod.name, "prod"), "uat": (uat.name, "uat")})
    store_password("Support", "uat", uat.password)

    ok = invoke(cfg, "credentials", "test", "Support", "--name", "uat", "--json")
    assert ok.exit_code == 0, ok.output
    [report] = json.loads(ok.stdout)
    assert (report["credential"], report["ok"], report["message_count"]) == ("uat", True, 2)

    missing = invoke(cfg, "credentials", "test", "Support")  # this instance (prod) has no stored secret
    assert missing.exit_code == 4
    assert "FAILED: Support/prod" in missing.stdout
    assert "No password is stored for mailbox 'Support', credential 'prod'" in missing.stdout


def test_every_credentials_and_config_command_has_help_with_an_example() -> None:
    for group_name in ("credentials", "config"):
        ctx = click.Context(cli)
        group = cli.get_command(ctx, group_name)
        assert isinstance(group, click.Group)
        for name in [None, *group.list_commands(ctx)]:
            args = [group_name, *([name] if name else []), "--help"]
            result = invoke(None, *args)
            assert result.exit_code == 0, args
            assert "Example" in result.stdout, args
            example = result.stdout.split("Example", 1)[1]
            assert "integrator " in example and f" {group_name} " in example, args


# ------------------------------------------------------------------- no usable keyring (real CLI)


@pytest.fixture(params=["keyring.backends.fail.Keyring", "keyring.backends.null.Keyring"])
def no_backend(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"PYTHON_KEYRING_BACKEND": request.param}


def _assert_clear_no_backend_error(proc: object) -> None:
    stdout, stderr = proc.stdout, proc.stderr  # type: ignore[attr-defined]
    assert proc.returncode == 4, (stdout, stderr)  # type: ignore[attr-defined]
    text = stdout + stderr
    assert text.count(NO_BACKEND) == 1, text
    assert "pip install 'halo-integrator[headless]'" in text
    assert "INTEGRATOR_SECRET_" in text
    assert "Traceback" not in text


@pytest.mark.dovecot
def test_run_import_and_mailbox_test_stop_with_one_clear_message(
    dovecot_server: Dovecot, tmp_path: Path, no_backend: dict[str, str]
) -> None:
    user = dovecot_server.new_user()
    seed_subjects(dovecot_server, user, "Waiting")
    cfg = imap_config(tmp_path, dovecot_server, {"prod": (user.name, "prod")})
    for args in (["run"], ["run", "--json"], ["import", "Support"], ["mailbox", "test", "Support"],
                 ["credentials", "test", "Support"]):
        proc = run_subprocess(cfg, *args, env=no_backend)
        _assert_clear_no_backend_error(proc)
    client = dovecot_server.imap(user)
    try:
        assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 1  # nothing was touched
    finally:
        client.logout()


def test_credentials_commands_stop_with_one_clear_message(tmp_path: Path, no_backend: dict[str, str]) -> None:
    cfg = imap_config(tmp_path, PortOnly(), {"prod": ("support", "prod"), "dev": ("support-dev", "dev")})
    before = cfg.read_bytes()
    proc = run_subprocess(cfg, *add_args(1143, "support-uat", "--no-test"), env=no_backend, input="pw\n")
    _assert_clear_no_backend_error(proc)
    assert cfg.read_bytes() == before
    _assert_clear_no_backend_error(run_subprocess(cfg, "credentials", "list", env=no_backend))
    _assert_clear_no_backend_error(run_subprocess(cfg, "credentials", "remove", "Support", "dev", "--yes",
                                                  env=no_backend))
    assert cfg.read_bytes() == before


@pytest.mark.dovecot
def test_an_environment_override_works_with_no_keyring_at_all(
    dovecot_server: Dovecot, tmp_path: Path, no_backend: dict[str, str]
) -> None:
    user = dovecot_server.new_user()
    seed_subjects(dovecot_server, user, "Via env")
    cfg = imap_config(tmp_path, dovecot_server, {"prod": (user.name, "prod")})
    env = {**no_backend, env_name("Support", "prod", "password"): user.password}
    proc = run_subprocess(cfg, "run", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["created"] == 1


# ----------------------------------------------------------------------------------- the leak test


def _encodings(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, secret.encode("utf-16-le"), base64.b64encode(raw), raw.hex().encode()]


def _files_under(directory: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _assert_nowhere(secrets: list[str], outputs: list[tuple[list[str], str]], directory: Path) -> None:
    for secret in secrets:
        for args, text in outputs:
            assert secret not in text, f"{secret!r} in the output of {args}"
        for path, data in _files_under(directory).items():
            for form in _encodings(secret):
                assert form not in data, f"{secret!r} in {path.name}"


@pytest.mark.dovecot
def test_no_secret_reaches_any_file_or_output(
    dovecot_server: Dovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recognisable secret in the keyring and one in an environment override are used by a real login;
    then every command runs, and neither secret is in any byte under the config dir or in any output."""
    home = tmp_path / "conf"
    keyring_user, env_user = dovecot_server.new_user(), dovecot_server.new_user()
    seed_subjects(dovecot_server, keyring_user, "Printer on fire", "VPN down")
    seed_subjects(dovecot_server, env_user, "Laptop request")
    wrong_secret = "Wr0ng-Secr3t-" + os.urandom(6).hex()  # refused by the server: error paths must not echo it
    secrets = [keyring_user.password, env_user.password, wrong_secret]

    outputs: list[tuple[list[str], str]] = []

    def run(*args: str, input: str | None = None, codes: tuple[int, ...] = (0,)) -> str:
        result = invoke(cfg, *args, input=input)
        outputs.append((list(args), result.stdout + result.stderr))
        assert result.exit_code in codes, (args, result.output)
        _assert_nowhere(secrets, outputs, home)
        return result.stdout

    cfg = home / "integrator.toml"
    run("init", str(home))
    cfg = imap_config(
        home, dovecot_server, {"prod": (keyring_user.name, "prod")},
        extra="[config]\ntrack_changes = true\n",
    )
    store_password("Support", "prod", keyring_user.password)
    monkeypatch.setenv(env_name("Support", "env", "password"), env_user.password)

    run(*add_args(dovecot_server.imap_port, env_user.name)[:-1], "--name", "env", "--instance", "prod",
        "--secret-stdin", input=env_user.password + "\n")
    MemoryKeyring._store.pop((SERVICE, "Support/env/password"))  # from now on the env override is the source
    run(*add_args(dovecot_server.imap_port, keyring_user.name, "--no-test")[:-1], "--name", "wrong",
        "--instance", "wrong", "--secret-stdin", "--no-test", input=wrong_secret + "\n")

    run("credentials", "list")
    run("credentials", "list", "--json")
    run("credentials", "test", "Support")
    run("credentials", "test", "Support", "--json")
    run("credentials", "test", "Support", "--name", "wrong", codes=(4,))
    run("--instance", "wrong", "credentials", "test", "Support", "--json", codes=(4,))
    run("mailbox", "list")
    run("mailbox", "list", "--json")
    run("mailbox", "show", "Support")
    run("mailbox", "show", "Support", "--json")
    run("mailbox", "test", "Support")
    run("mailbox", "test", "Support", "--json")
    run("mailbox", "edit", "Support", "--set", "incoming.ticket_tag=[#{id}]")
    run("-vv", "run", "--dry-run")
    run("-vv", "run")
    run("run", "--json")
    run("-vv", "--instance", "wrong", "run", codes=(4,))
    run("--instance", "wrong", "run", "--json", codes=(4,))
    run("-vv", "--instance", "wrong", "import", "Support", codes=(4,))
    run("import", "Support", "--json")
    tickets = json.loads(run("tickets", "list", "--json"))
    assert sorted(t["subject"] for t in tickets) == ["Laptop request", "Printer on fire", "VPN down"]
    run("tickets", "list")
    run("tickets", "show", str(tickets[0]["id"]))
    run("tickets", "show", str(tickets[0]["id"]), "--json")
    logs = json.loads(run("logs", "--json"))
    run("logs")
    run("logs", "show", str(logs[0]["id"]), "--json")
    run("config", "history")
    run("config", "history", "Support", "--json")
    run("config", "check")
    run("config", "show")
    run("config", "show", "--json")

    ctx = click.Context(cli)
    covered = {"init", "run", "import", "mailbox", "credentials", "tickets", "logs", "config"}
    for name in cli.list_commands(ctx):
        if name in covered:
            continue
        run(name, "--help")
        command = cli.get_command(ctx, name)
        if isinstance(command, click.Group):
            for sub in ("show", "list"):
                if sub in command.commands:
                    run(name, sub, codes=(0, 1, 2, 3, 4, 5))
        else:
            run(name, codes=(0, 1, 2, 3, 4, 5))

    run("credentials", "remove", "Support", "wrong", "--yes")
    run("mailbox", "remove", "Support", "--yes")
    assert {p.name for p in _files_under(home)} >= {"integrator.toml", "integrator.toml.bak", "tickets.db"}
