"""`integrator doctor`: each fault the tests can stage is found, with a one-line reason and a fix; a healthy
setup exits 0. Mail servers are real (Dovecot on loopback) or a closed loopback port."""

from __future__ import annotations

import json
import os
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dovecot import Dovecot, User
from halo_integrator.config import SecretsSettings
from halo_integrator.doctor import Doctor
from halo_integrator.keystore import Keystore
from helpers import copy_examples, free_port, invoke, write_config


@pytest.fixture(autouse=True)
def _temp_crontab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "crontab.txt"
    monkeypatch.setenv("INTEGRATOR_CRONTAB_FILE", str(path))
    monkeypatch.setenv("INTEGRATOR_SYSTEMD_DIR", str(tmp_path / "units"))
    monkeypatch.setenv("INTEGRATOR_LAUNCHD_DIR", str(tmp_path / "agents"))
    return path


def doctor(config: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = invoke(config, "doctor", "--json", *args)
    data = json.loads(result.stdout)
    return result.exit_code, data


def find(data: dict[str, Any], check: str, subject: str | None = None) -> dict[str, Any]:
    hits = [f for f in data["findings"] if f["check"] == check and (subject is None or f["subject"] == subject)]
    assert hits, (check, subject, data)
    return hits[0]


def healthy(tmp_path: Path) -> Path:
    config = write_config(tmp_path)
    copy_examples(tmp_path / "mail")
    assert invoke(config, "run").exit_code == 0
    assert invoke(config, "schedule", "install").exit_code == 0
    os.chmod(config, 0o600)
    os.chmod(tmp_path / "tickets.db", 0o600)
    return config


def imap_config(tmp_path: Path, *, port: int, user: str, deleted_folder: str = "") -> Path:
    extra = f'deleted_folder = "{deleted_folder}"\n' if deleted_folder else ""
    path = tmp_path / "integrator.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            instance = "test"
            database = "tickets.db"

            [[mailboxes]]
            name = "Support"
            connection = "imap"

            [mailboxes.incoming]
            {extra}
            [[mailboxes.credentials]]
            name = "prod"
            host = "127.0.0.1"
            port = {port}
            security = "none"
            username = "{user}"
            timeout = 10
            """
        ),
        encoding="utf-8",
    )
    os.chmod(path, 0o600)
    return path


def store_password(config: Path, password: str) -> None:
    Keystore(SecretsSettings(), base_dir=config.parent).set("Support", "prod", "password", password)


# ------------------------------------------------------------------------------------------- healthy


def test_healthy_folder_setup_exits_0_and_json_has_the_documented_shape(tmp_path: Path) -> None:
    config = healthy(tmp_path)
    code, data = doctor(config)
    assert code == 0, data
    assert set(data) == {"status", "counts", "findings"}
    assert data["status"] == "ok"
    assert set(data["counts"]) == {"ok", "warn", "fail", "skip"}
    for f in data["findings"]:
        assert set(f) == {"check", "status", "reason", "fix", "subject"}
        assert f["status"] in ("ok", "warn", "fail", "skip")
        assert f["reason"] and "\n" not in f["reason"]
    checks = {f["check"] for f in data["findings"]}
    assert {"config", "permissions", "services", "keyring", "connection", "deleted_folder", "tokens", "schedule",
            "database", "last_run"} <= checks
    assert find(data, "tokens")["reason"] == "no OAuth credentials"
    assert find(data, "schedule")["status"] == "ok"
    assert find(data, "database")["reason"].endswith("passed PRAGMA quick_check")
    assert find(data, "last_run", "Desk")["status"] == "ok"
    assert find(data, "connection", "Desk")["status"] == "ok"

    text = invoke(config, "doctor")
    assert text.exit_code == 0
    assert text.stdout.rstrip().splitlines()[-1].startswith("OK: ")


def test_healthy_imap_mailbox_against_dovecot(tmp_path: Path, dovecot_server: Dovecot, dovecot_user: User) -> None:
    config = imap_config(tmp_path, port=dovecot_server.imap_port, user=dovecot_user.name)
    store_password(config, dovecot_user.password)
    code, data = doctor(config)
    assert find(data, "keyring")["status"] == "ok"
    assert find(data, "secret", "Support/prod") == {
        "check": "secret", "status": "ok", "reason": "password stored in the keyring", "fix": "",
        "subject": "Support/prod",
    }
    assert find(data, "connection", "Support/prod")["status"] == "ok"
    assert find(data, "deleted_folder", "Support/prod")["reason"] == "Deleted Items folder: 'Trash'"
    # no run and no schedule yet: warnings, not failures
    assert find(data, "schedule")["status"] == "warn"
    assert code == 0, [f for f in data["findings"] if f["status"] == "fail"]


# --------------------------------------------------------------------------------------------- faults


def test_bad_config_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    config = tmp_path / "integrator.toml"
    config.write_text('instance = "x"\n[[mailboxes]]\nname = "Desk"\nconnection = "carrier-pigeon"\n')
    os.chmod(config, 0o600)
    code, data = doctor(config)
    assert code == 1
    bad = find(data, "config")
    assert bad["status"] == "fail"
    assert "mailboxes[0].connection" in bad["reason"] and "carrier-pigeon" in bad["reason"]
    assert bad["fix"]
    assert find(data, "schedule")["status"] == "warn"  # what can be checked without a config still is


def test_missing_secret(tmp_path: Path) -> None:
    config = imap_config(tmp_path, port=free_port(), user="someone")
    code, data = doctor(config, "--offline")
    assert code == 1
    missing = find(data, "secret", "Support/prod")
    assert missing["status"] == "fail"
    assert missing["reason"] == "no password is stored for Support/prod"
    assert "integrator credentials add" in missing["fix"]
    assert "INTEGRATOR_SECRET_SUPPORT_PROD_PASSWORD" in missing["fix"]
    assert find(data, "connection", "Support/prod")["status"] == "skip"


@pytest.mark.parametrize(("provider", "status"), [("none", "warn"), ("microsoft365", "skip")])
def test_an_xoauth2_token_nothing_renews_is_a_warning(tmp_path: Path, provider: str, status: str) -> None:
    """An IMAP credential whose XOAUTH2 token is kept as is: it expires within the hour and nothing renews
    it, which doctor says, with the fix; one whose token comes from Entra ID draws no warning."""
    config = imap_config(tmp_path, port=free_port(), user="someone")
    extra = 'auth = "oauth2"\n' + (
        f'oauth_provider = "{provider}"\ntenant_id = "t"\nclient_id = "c"\n' if provider != "none" else ""
    )
    config.write_text(config.read_text(encoding="utf-8") + extra, encoding="utf-8")
    _, data = doctor(config, "--offline")
    finding = find(data, "tokens", "Support/prod") if status == "warn" else find(data, "tokens")
    assert finding["status"] == status, data
    if status == "warn":
        assert "nothing renews it" in finding["reason"] and "oauth_provider=microsoft365" in finding["fix"]


def test_environment_secret_needs_no_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = imap_config(tmp_path, port=free_port(), user="someone")
    monkeypatch.setenv("INTEGRATOR_SECRET_SUPPORT_PROD_PASSWORD", "s3cret-value")
    result = invoke(config, "doctor", "--json", "--offline")
    assert "s3cret-value" not in result.stdout
    data = json.loads(result.stdout)
    assert find(data, "keyring")["status"] == "skip"
    assert find(data, "secret", "Support/prod")["reason"].startswith("password from the environment")
    assert find(data, "connection", "Support/prod")["reason"] == "--offline: not contacted"


def test_unreachable_server_and_a_mailbox_that_never_succeeded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = imap_config(tmp_path, port=free_port(), user="someone")
    monkeypatch.setenv("INTEGRATOR_SECRET_SUPPORT_PROD_PASSWORD", "pw")
    assert invoke(config, "run").exit_code == 5  # the run records its failure
    code, data = doctor(config)
    assert code == 1
    conn = find(data, "connection", "Support/prod")
    assert conn["status"] == "fail" and "refused" in conn["reason"]
    assert find(data, "deleted_folder", "Support/prod")["status"] == "skip"
    last = find(data, "last_run", "Support/prod")
    assert last["status"] == "fail"
    assert last["reason"].startswith("never imported successfully in 1 run(s)")


def test_missing_trash_folder(tmp_path: Path, dovecot_server: Dovecot, dovecot_user: User) -> None:
    config = imap_config(
        tmp_path, port=dovecot_server.imap_port, user=dovecot_user.name, deleted_folder="Deleted Things"
    )
    store_password(config, dovecot_user.password)
    code, data = doctor(config)
    assert code == 1
    assert find(data, "connection", "Support/prod")["status"] == "ok"
    trash = find(data, "deleted_folder", "Support/prod")
    assert trash["status"] == "fail"
    assert "'Deleted Things'" in trash["reason"] and "does not exist" in trash["reason"]
    assert "deleted_folder" in trash["fix"]


def test_world_writable_config(tmp_path: Path) -> None:
    config = healthy(tmp_path)
    os.chmod(config, 0o666)
    code, data = doctor(config)
    assert code == 1
    perm = find(data, "permissions", str(config.resolve()))
    assert perm["status"] == "fail"
    assert "writable by others" in perm["reason"]
    assert perm["fix"] == f"chmod go-w {config.resolve()}"


def test_database_readable_by_others_is_a_warning(tmp_path: Path) -> None:
    config = healthy(tmp_path)
    os.chmod(tmp_path / "tickets.db", 0o644)
    code, data = doctor(config)
    assert code == 0
    perm = find(data, "permissions", str((tmp_path / "tickets.db").resolve()))
    assert perm["status"] == "warn" and "readable by others" in perm["reason"]


def test_incoming_service_off(tmp_path: Path) -> None:
    config = write_config(tmp_path, "\n[services]\nincoming = false\n")
    os.chmod(config, 0o600)
    code, data = doctor(config)
    assert code == 1
    off = find(data, "services", "incoming")
    assert off["status"] == "fail" and off["reason"].startswith("incoming service must be enabled")
    assert "incoming = true" in off["fix"]


def test_damaged_database(tmp_path: Path) -> None:
    config = healthy(tmp_path)
    (tmp_path / "tickets.db").write_bytes(b"this is not a database" * 100)
    code, data = doctor(config)
    assert code == 1
    assert find(data, "database")["status"] == "fail"


def test_stale_last_run_is_a_warning(tmp_path: Path) -> None:
    config = healthy(tmp_path)  # installed every 5 minutes: stale after 15
    later = datetime.now(UTC) + timedelta(hours=2)
    report = Doctor(config, now=later).run()
    last = next(f for f in report.findings if f.check == "last_run")
    assert last.status == "warn" and last.reason.startswith("last successful run 2 h ago")
    assert report.exit_code == 0


def test_a_google_mailbox_is_checked_for_its_service_account_key(tmp_path: Path) -> None:
    """Each connection's own secret kinds (credentials.needed_kinds), not the IMAP password."""
    config = tmp_path / "integrator.toml"
    config.write_text(
        textwrap.dedent(
            """\
            instance = "test"
            database = "tickets.db"

            [[mailboxes]]
            name = "Gmail"
            connection = "google"
            address = "desk@example.com"

            [[mailboxes.credentials]]
            name = "prod"
            instance = "test"
            username = "desk@example.com"
            """
        ),
        encoding="utf-8",
    )
    code, data = doctor(config, "--offline")
    assert code == 1
    missing = find(data, "secret", "Gmail/prod")
    assert missing["reason"] == "no service_account_json is stored for Gmail/prod"
    assert "INTEGRATOR_SECRET_GMAIL_PROD_SERVICE_ACCOUNT_JSON" in missing["fix"]
