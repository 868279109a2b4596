"""Instances (DESIGN contract 7): one config, one Dovecot with two accounts, two instances that each import
only the mail of their own account; the split warning; a mailbox with no credential for the instance."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from dovecot import Dovecot
from helpers import invoke
from instancesetup import PortOnly, imap_config, inbox_count, seed_subjects, store_password

SPLIT = "the mail will be split between the instances"


@pytest.mark.dovecot
def test_each_instance_imports_only_its_own_account(dovecot_server: Dovecot, tmp_path: Path) -> None:
    prod, uat = dovecot_server.new_user(), dovecot_server.new_user()
    seed_subjects(dovecot_server, prod, "Prod one", "Prod two")
    seed_subjects(dovecot_server, uat, "UAT one")
    cfg = imap_config(tmp_path, dovecot_server, {"prod": (prod.name, "prod"), "uat": (uat.name, "uat")})
    store_password("Support", "prod", prod.password)
    store_password("Support", "uat", uat.password)

    first = invoke(cfg, "--instance", "prod", "run", "--json")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert [(r["credential"], r["created"]) for r in summary] == [("prod", 2)]
    assert inbox_count(dovecot_server, prod) == 0
    assert inbox_count(dovecot_server, uat) == 1  # the UAT account is untouched by the prod instance

    second = invoke(cfg, "run", "--json", env={"INTEGRATOR_INSTANCE": "uat"})
    assert second.exit_code == 0, second.output
    assert [(r["credential"], r["created"]) for r in json.loads(second.stdout)] == [("uat", 1)]
    assert inbox_count(dovecot_server, uat) == 0

    tickets = json.loads(invoke(cfg, "tickets", "list", "--json").stdout)
    assert sorted(t["subject"] for t in tickets) == ["Prod one", "Prod two", "UAT one"]
    logs = json.loads(invoke(cfg, "logs", "--json").stdout)
    assert {r["subject"]: r.get("credential") for r in logs if r["status"] == "created"}.keys() == {
        "Prod one", "Prod two", "UAT one"
    }


@pytest.mark.dovecot
def test_a_credential_without_instance_serves_every_instance(dovecot_server: Dovecot, tmp_path: Path) -> None:
    user = dovecot_server.new_user()
    seed_subjects(dovecot_server, user, "Shared")
    cfg = imap_config(tmp_path, dovecot_server, {"shared": (user.name, "")}, instance="uat")
    store_password("Support", "shared", user.password)
    result = invoke(cfg, "run", "--json")
    assert result.exit_code == 0, result.output
    assert [(r["credential"], r["created"]) for r in json.loads(result.stdout)] == [("shared", 1)]


def test_mailbox_with_no_credential_for_the_instance_is_skipped_with_a_log_line(tmp_path: Path) -> None:
    cfg = tmp_path / "integrator.toml"
    cfg.write_text(
        textwrap.dedent(
            """\
            instance = "prod"
            database = "tickets.db"

            [[mailboxes]]
            name = "Support"
            connection = "imap"
            [[mailboxes.credentials]]
            name = "uat"
            instance = "uat"
            host = "127.0.0.1"
            port = 9
            username = "support"
            """
        ),
        encoding="utf-8",
    )
    result = invoke(cfg, "run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"mailbox": "Support", "credential": None, "skipped": "no credential for instance 'prod'"}
    ]
    rows = json.loads(invoke(cfg, "logs", "--json").stdout)
    assert len(rows) == 1
    assert rows[0]["mailbox"] == "Support"
    assert rows[0]["detail"].startswith("Mailbox skipped: no credential for instance 'prod'")

    shown = invoke(cfg, "mailbox", "show", "Support")
    assert "Instance prod has no credential for it: runs skip it." in shown.stdout


def test_mailbox_show_and_credentials_list_name_the_credential_and_account(tmp_path: Path) -> None:
    cfg = imap_config(
        tmp_path,
        PortOnly(),
        {"prod": ("support-prod", "prod"), "uat": ("support-uat", "uat")},
    )
    shown = invoke(cfg, "--instance", "uat", "mailbox", "show", "Support")
    assert shown.exit_code == 0, shown.output
    assert "Instance uat processes it with credential 'uat': support-uat@127.0.0.1:1143" in shown.stdout
    data = json.loads(invoke(cfg, "--instance", "uat", "mailbox", "show", "Support", "--json").stdout)
    assert data["processed_by_this_instance"] == [{"credential": "uat", "account": "support-uat@127.0.0.1:1143"}]

    listed = json.loads(invoke(cfg, "--instance", "prod", "credentials", "list", "--json").stdout)
    assert [(r["name"], r["instance"], r["account"], r["used_by_this_instance"]) for r in listed] == [
        ("prod", "prod", "support-prod@127.0.0.1:1143", True),
        ("uat", "uat", "support-uat@127.0.0.1:1143", False),
    ]
    assert SPLIT not in shown.stderr


def test_two_instances_on_one_account_warn_that_mail_is_split(tmp_path: Path) -> None:
    cfg = imap_config(
        tmp_path, PortOnly(), {"prod": ("support", "prod"), "uat": ("Support", "uat")}
    )
    shown = invoke(cfg, "mailbox", "show", "Support")
    assert SPLIT in shown.stderr
    assert "Support/prod (instance prod) and Support/uat (instance uat)" in shown.stderr
    assert SPLIT in invoke(cfg, "config", "check").stderr
    assert SPLIT in invoke(cfg, "credentials", "list").stderr
    # run warns too (the connection then fails: nothing listens on that port)
    assert SPLIT in invoke(cfg, "run").stderr


def test_credentials_add_warns_when_it_splits_an_account(tmp_path: Path) -> None:
    cfg = imap_config(tmp_path, PortOnly(), {"prod": ("support", "prod")})
    result = invoke(
        cfg, "credentials", "add", "Support", "--name", "uat", "--instance", "uat", "--host", "127.0.0.1",
        "--port", "1143", "--security", "none", "--username", "support", "--secret-stdin", "--no-test",
        input="uat-password\n",
    )
    assert result.exit_code == 0, result.output
    assert SPLIT in result.stderr
    other = invoke(
        cfg, "credentials", "add", "Support", "--name", "dev", "--instance", "dev", "--host", "127.0.0.1",
        "--port", "1143", "--security", "none", "--username", "support-dev", "--secret-stdin", "--no-test",
        input="dev-password\n",
    )
    assert other.exit_code == 0, other.output
    assert "support-dev" not in other.stderr  # a different account: no new warning about it
