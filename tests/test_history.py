"""Config change tracking: `[config] track_changes = true` records who changed what; `config history` shows it."""

from __future__ import annotations

import json
from pathlib import Path

from halo_integrator import history
from halo_integrator.config import Credential, Incoming, Mailbox
from halo_integrator.store import Store
from helpers import invoke, write_config
from instancesetup import PortOnly, imap_config

TRACK = "\n[config]\ntrack_changes = true\n"


def _history(cfg: Path, *args: str) -> list[dict]:
    result = invoke(cfg, "config", "history", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_blank_database_gets_the_history_table(tmp_path: Path) -> None:
    with Store.open(tmp_path / "t.db") as store:
        names = [r[0] for r in store.db.execute("SELECT name FROM _migrations ORDER BY name").fetchall()]
        assert "m002_config_history" in names
        assert store.config_history() == []


def test_mailbox_and_credential_commands_write_history_rows(tmp_path: Path) -> None:
    cfg = imap_config(tmp_path, PortOnly(), {"prod": ("support", "prod")}, extra=TRACK)

    assert invoke(cfg, "--as", "nina", "mailbox", "edit", "Support", "--set", "incoming.after_import=mark_read",
                  "--set", "credentials.prod.port=1993").exit_code == 0
    added = invoke(cfg, "--as", "nina", "--instance", "uat", "credentials", "add", "Support", "--name", "uat",
                   "--host", "imap-uat.example.com", "--secret-stdin", "--no-test", input="uat-secret\n")
    assert added.exit_code == 0, added.output
    assert invoke(cfg, "credentials", "remove", "Support", "uat", "--yes").exit_code == 0
    (tmp_path / "drop").mkdir()
    assert invoke(cfg, "--as", "omar", "mailbox", "add", "Drop", "--connection", "folder", "--path", "drop",
                  "--yes", "--import-existing").exit_code == 0
    assert invoke(cfg, "--as", "omar", "mailbox", "remove", "Drop", "--yes").exit_code == 0

    rows = _history(cfg)
    assert [(r["mailbox"], r["action"]) for r in rows] == [
        ("Drop", "mailbox removed"),
        ("Drop", "mailbox added"),
        ("Support", "credential removed"),
        ("Support", "credential added"),
        ("Support", "mailbox edited"),
    ]
    edited = rows[-1]
    assert (edited["agent"], edited["instance"]) == ("nina", "prod")
    assert edited["changes"] == [
        {"key": "incoming.after_import", "before": "move_to_deleted", "after": "mark_read"},
        {"key": "credentials.prod.port", "before": 1143, "after": 1993},
    ]
    cred_added = rows[-2]
    assert cred_added["instance"] == "uat"
    assert cred_added["changes"] == [
        {"key": "credentials.uat", "before": None,
         "after": {"name": "uat", "instance": "uat", "host": "imap-uat.example.com"}},
        {"key": "credentials.uat.secret:password", "before": None, "after": "***"},
    ]
    assert rows[2]["agent"].startswith("os:")  # no --as: the operating-system user
    assert rows[2]["changes"][0]["before"]["host"] == "imap-uat.example.com"
    assert rows[0]["changes"] == [{"key": "mailbox", "before": {"name": "Drop", "connection": "folder",
                                                                "path": "drop"}, "after": None}]

    assert [r["action"] for r in _history(cfg, "support")] == ["credential removed", "credential added",
                                                               "mailbox edited"]
    text = invoke(cfg, "config", "history", "Support").stdout
    assert "nina (instance prod): Support: mailbox edited" in text
    assert 'incoming.after_import: "move_to_deleted" -> "mark_read"' in text
    assert "uat-secret" not in text + json.dumps(rows)


def test_a_new_secret_for_an_existing_credential_is_recorded_masked(tmp_path: Path) -> None:
    cfg = imap_config(tmp_path, PortOnly(), {"prod": ("support", "prod")}, extra=TRACK)
    assert invoke(cfg, "credentials", "add", "Support", "--secret-stdin", "--no-test",
                  input="first-secret\n").exit_code == 0
    [row] = _history(cfg)
    assert row["action"] == "credential secret replaced"
    assert row["changes"] == [{"key": "credentials.prod.secret:password", "before": "***", "after": "***"}]


def test_nothing_is_recorded_when_tracking_is_off(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    assert invoke(cfg, "mailbox", "edit", "Desk", "--set", "incoming.after_import=mark_read").exit_code == 0
    assert _history(cfg) == []
    result = invoke(cfg, "config", "history")
    assert "tracking is off" in result.stderr


def test_secret_like_keys_are_masked_in_every_diff() -> None:
    changes = history.diff(
        {"password": "a", "client_secret": "b", "api_key": "", "host": "h1", "oauth": {"refresh_token": "r"}},
        {"password": "a2", "client_secret": "b", "api_key": "k", "host": "h2", "oauth": {"refresh_token": None}},
    )
    assert changes == [
        {"key": "api_key", "before": "", "after": "***"},
        {"key": "host", "before": "h1", "after": "h2"},
        {"key": "oauth.refresh_token", "before": "***", "after": None},
        {"key": "password", "before": "***", "after": "*** (changed)"},
    ]
    assert not history.is_secret_key("incoming.ticket_tag")
    assert history.is_secret_key("credentials.prod.service_account_json")


def test_diff_of_mailboxes_names_credentials_and_access_lines() -> None:
    from halo_integrator.config import AccessLine

    before = Mailbox(name="S", connection="imap", credentials=(Credential(name="a", host="h"),),
                     access=(AccessLine(entity="team", name="Desk", level="read"),))
    after = Mailbox(name="S", connection="imap", incoming=Incoming(batch_size=5),
                    credentials=(Credential(name="a", host="h", port=993), Credential(name="b", host="h2")),
                    access=(AccessLine(entity="team", name="Desk", level="modify"),))
    assert history.diff_mailboxes(before, after) == [
        {"key": "incoming.batch_size", "before": 250, "after": 5},
        {"key": "credentials.a.port", "before": 0, "after": 993},
        {"key": "credentials.b", "before": None, "after": {"name": "b", "host": "h2"}},
        {"key": "access.team:Desk.level", "before": "read", "after": "modify"},
    ]
