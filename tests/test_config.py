"""The config file: every bad key or value is an error naming the file, the key path and what is allowed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from halo_integrator import config as config_mod
from halo_integrator.errors import ConfigError
from helpers import EXAMPLES, invoke, write_config


def test_example_config_loads() -> None:
    cfg = config_mod.load(EXAMPLES / "config.toml")
    assert [m.name for m in cfg.mailboxes] == ["Demo"]
    assert cfg.mailboxes[0].connection == "folder"
    assert cfg.database_path == (EXAMPLES / "integrator.db").resolve()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[mailboxes]]\nname = "A"\nconnection = "folder"\npath = "m"\nflavour = 1\n',
         "unknown key 'mailboxes[0].flavour'"),
        ('[[mailboxes]]\nname = "A"\nconnection = "folder"\npath = "m"\n[mailboxes.incoming]\nafter_import = "shred"\n',
         "mailboxes[0].incoming.after_import is 'shred'; allowed: move_to_deleted, delete, move_to_folder, mark_read"),
        ('[[mailboxes]]\nname = "A"\nconnection = "carrier-pigeon"\n',
         "mailboxes[0].connection is 'carrier-pigeon'; allowed: imap, pop3, ews, microsoft365, google, folder"),
        ('[[mailboxes]]\nname = "A"\nconnection = "imap"\n', "mailboxes[0] (A) has no [[mailboxes.credentials]]"),
        ('[[mailboxes]]\nname = "A"\nconnection = "folder"\n', "mailboxes[0].path is required"),
        ('[services]\nincoming = "yes"\n', "services.incoming must be true or false, not 'yes'"),
        ('[[mailboxes]]\nname = "A"\nconnection = "folder"\npath = "m"\n[mailboxes.incoming]\nbatch_size = -3\n',
         "mailboxes[0].incoming.batch_size must not be negative"),
        ('[[mailboxes]]\nname = "A"\nconnection = "folder"\npath = "m"\n[[mailboxes]]\nname = "a"\n'
         'connection = "folder"\npath = "n"\n', "mailboxes[1].name 'a' is used by another mailbox"),
        ('[[mailboxes]]\nname = "A"\nconnection = "folder"\npath = "m"\n[mailboxes.incoming]\nticket_tag = "#"\n',
         "must contain {id}"),
        ('[[message_groups]]\nname = "G"\n[message_groups.templates.new_ticket]\nsubject = "{subject}"\n'
         'body = "Dear {customer}"\n', "unknown placeholder {customer}"),
        ('[[mailboxes]]\nname = "A"\nconnection = "imap"\n[[mailboxes.credentials]]\nhost = "h"\n'
         'oauth_provider = "microsoft365"\n',
         'oauth_provider = \'microsoft365\' is for an IMAP or POP3 credential with auth = "oauth2"'),
        ('[[mailboxes]]\nname = "A"\nconnection = "imap"\n[[mailboxes.credentials]]\nhost = "h"\nauth = "oauth2"\n'
         'oauth_provider = "microsoft365"\ntenant_id = "t"\n', 'needs client_id and tenant_id'),
        ('[[mailboxes]]\nname = "A"\nconnection = "pop3"\n[[mailboxes.credentials]]\nhost = "h"\n'
         '[mailboxes.incoming]\nafter_import = "move_to_folder"\nmove_folder = "X"\n', "not possible over POP3"),
        ('database = 5\n', "database must be a string, not 5"),
        ('instance = \n', "is not valid TOML"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "integrator.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        config_mod.load(path)
    assert message in str(err.value)
    assert str(path.name) in str(err.value)


def test_missing_config_is_exit_3_with_the_fix(tmp_path: Path) -> None:
    result = invoke(tmp_path / "nope.toml", "run")
    assert result.exit_code == 3
    assert "No config file at" in result.stderr
    assert "integrator init" in result.stderr


def test_invalid_config_is_exit_3_one_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, '\n[services]\nincoming = 1\n')
    result = invoke(path, "tickets", "list")
    assert result.exit_code == 3
    assert result.stderr.strip().count("\n") == 0
    assert "services.incoming must be true or false" in result.stderr


def test_save_is_atomic_keeps_a_backup_and_round_trips(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    before = path.read_text()
    cfg = config_mod.load(path)
    config_mod.save(cfg)
    assert (tmp_path / "integrator.toml.bak").read_text() == before
    again = config_mod.load(path)
    assert again.mailboxes == cfg.mailboxes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".integrator.toml.")]


def test_save_refuses_an_invalid_config_and_leaves_the_file(tmp_path: Path) -> None:
    import dataclasses

    path = write_config(tmp_path)
    before = path.read_bytes()
    cfg = config_mod.load(path)
    bad = dataclasses.replace(cfg, mailboxes=(*cfg.mailboxes, cfg.mailboxes[0]))
    with pytest.raises(ConfigError):
        config_mod.save(bad)
    assert path.read_bytes() == before


def test_config_found_from_environment_then_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path)
    monkeypatch.setenv("INTEGRATOR_CONFIG", str(path))
    assert config_mod.find_config_path() == path
    monkeypatch.delenv("INTEGRATOR_CONFIG")
    monkeypatch.chdir(tmp_path)
    assert config_mod.find_config_path() == tmp_path / "integrator.toml"
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    assert config_mod.find_config_path().parent.name == "halo-integrator"


def test_new_config_file_is_private(tmp_path: Path) -> None:
    result = invoke(None, "init", str(tmp_path / "site"))
    assert result.exit_code == 0, result.stderr
    mode = os.stat(tmp_path / "site" / "integrator.toml").st_mode & 0o777
    assert mode == 0o600
    assert (tmp_path / "site" / "integrator.db").exists()
    again = invoke(None, "init", str(tmp_path / "site"))
    assert again.exit_code == 3
    assert "already exists" in again.stderr


def test_credentials_for_instance() -> None:
    cfg = config_mod.from_dict(
        {
            "instance": "production",
            "mailboxes": [
                {
                    "name": "S",
                    "connection": "imap",
                    "credentials": [
                        {"name": "prod", "instance": "production", "host": "h"},
                        {"name": "uat", "instance": "uat", "host": "h"},
                        {"name": "any", "host": "h"},
                    ],
                }
            ],
        },
        Path("x.toml"),
    )
    mb = cfg.mailboxes[0]
    assert [c.name for c in cfg.credentials_for(mb)] == ["prod", "any"]
    assert [c.name for c in cfg.credentials_for(mb, "uat")] == ["uat", "any"]
