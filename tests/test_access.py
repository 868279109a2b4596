"""Agents, teams, departments and mailbox access lines: who may view and configure a mailbox (issue 7)."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from halo_integrator import config as config_mod
from helpers import email_bytes, invoke, invoke_json, write_config

TEAM = "3rd Line Support"

# Desk: the guide's second example (team read OR agent "Nina Peach" read-and-modify); Billing: owner Olga
# through her department. Omar is the admin; Theo is Nina's team-mate; Pia is in no team.
AGENTS = textwrap.dedent(
    f"""\
    [[mailboxes.access]]
    entity = "team"
    name = "{TEAM}"
    level = "read"

    [[mailboxes.access]]
    entity = "agent"
    name = "Nina Peach"
    level = "modify"

    [[mailboxes]]
    name = "Billing"
    address = "billing@example.com"
    connection = "folder"
    path = "billing"

    [[mailboxes.access]]
    entity = "department"
    name = "Finance"
    level = "owner"

    [config]
    track_changes = true

    [[agents]]
    name = "Omar"
    admin = true
    os_user = "omar-login"

    [[agents]]
    name = "Nina Peach"
    email = "nina@example.com"
    teams = ["{TEAM}"]
    os_user = "nina-login"

    [[agents]]
    name = "Theo"
    teams = ["{TEAM}"]

    [[agents]]
    name = "Olga"
    departments = ["Finance"]

    [[agents]]
    name = "Pia"
    """
)


@pytest.fixture(autouse=True)
def _private_umask() -> Iterator[None]:
    """Files the tests and commands create are private (0600), as on a well-kept server."""
    old = os.umask(0o077)
    yield
    os.umask(old)


def desk(tmp_path: Path, body: str = AGENTS) -> Path:
    """The config above, with one imported email and one quarantined one in Desk, one email in Billing."""
    (tmp_path / "billing").mkdir(parents=True, exist_ok=True)
    cfg = write_config(tmp_path, body, extra_incoming="max_email_mb = 0.01\n")
    (tmp_path / "mail" / "1.eml").write_bytes(email_bytes("Printer", message_id="p1@x"))
    (tmp_path / "mail" / "2.eml").write_bytes(email_bytes("Huge scan", message_id="h@x", body="x" * 30000))
    (tmp_path / "billing" / "1.eml").write_bytes(email_bytes("Invoice", message_id="i1@x"))
    assert invoke(cfg, "run").exit_code in (0, 5)  # using mailboxes needs no access line
    return cfg


def as_(cfg: Path, agent: str, *args: str, input: str | None = None) -> object:
    return invoke(cfg, "--as", agent, *args, input=input)


def denied(result: object, needed: str) -> bool:
    text = result.stderr  # type: ignore[attr-defined]
    return result.exit_code == 2 and f"needs {needed}" in text  # type: ignore[attr-defined]


def first_log_id(cfg: Path, mailbox: str) -> int:
    rows = invoke_json(cfg, "--as", "Omar", "logs", "--mailbox", mailbox)
    return int(rows[0]["id"])


def quarantined_id(cfg: Path) -> int:
    (entry,) = invoke_json(cfg, "--as", "Omar", "quarantine", "list")
    return int(entry["id"])


# ------------------------------------------------------------------------------------- the guide's examples


def test_the_whole_team_may_read(tmp_path: Path) -> None:
    team_only = AGENTS.replace('[[mailboxes.access]]\nentity = "agent"\nname = "Nina Peach"\nlevel = "modify"\n\n', "")
    cfg = desk(tmp_path, team_only)
    assert [ln.entity for ln in config_mod.load(cfg).mailbox("Desk").access] == ["team"]
    for member in ("Nina Peach", "Theo"):
        shown = as_(cfg, member, "mailbox", "show", "Desk")
        assert shown.exit_code == 0, shown.stderr
        assert invoke_json(cfg, "--as", member, "logs", "--mailbox", "Desk")
        assert denied(as_(cfg, member, "mailbox", "edit", "Desk", "--set", "incoming.after_import=mark_read"),
                      "modify")
    outsider = as_(cfg, "Pia", "mailbox", "show", "Desk")
    assert denied(outsider, "read")
    assert "Pia has no access to mailbox Desk" in outsider.stderr


def test_team_read_or_agent_read_and_modify(tmp_path: Path) -> None:
    cfg = desk(tmp_path)
    edit = ("mailbox", "edit", "Desk", "--set", "incoming.after_import=mark_read")
    # Nina: her own line gives modify
    assert as_(cfg, "Nina Peach", *edit).exit_code == 0
    assert config_mod.load(cfg).mailbox("Desk").incoming.after_import == "mark_read"
    # Theo, her team-mate: only read
    theo = as_(cfg, "Theo", *edit)
    assert denied(theo, "modify")
    assert theo.stderr.startswith("Error: Theo may only read mailbox Desk; changing its settings or credentials "
                                  "needs modify. An owner or admin can grant it: integrator access set Desk "
                                  "--entity agent --name Theo --level modify")
    assert as_(cfg, "Theo", "mailbox", "show", "Desk").exit_code == 0
    # anyone else: nothing
    assert denied(as_(cfg, "Pia", "mailbox", "show", "Desk"), "read")

    explained = as_(cfg, "Nina Peach", "access", "explain", "Desk")
    assert explained.stdout.strip() == f"Nina Peach: read (team {TEAM}), modify (agent Nina Peach)"
    pia = as_(cfg, "Omar", "access", "explain", "Desk", "--agent", "pia")
    assert pia.stdout.strip() == "Pia: no access (no line of Desk names Pia, their teams or their departments)"
    data = invoke_json(cfg, "--as", "Theo", "access", "explain", "Desk", "--agent", "Nina Peach")
    assert data["level"] == "modify"
    assert data["grants"] == [{"level": "read", "entity": "team", "name": TEAM},
                              {"level": "modify", "entity": "agent", "name": "Nina Peach"}]


# ---------------------------------------------------------------------------- each level against each command

# (command, level it needs); "{log}" and "{q}" become a Desk log entry and its quarantined email
COMMANDS: list[tuple[tuple[str, ...], str]] = [
    (("mailbox", "show", "Desk"), "read"),
    (("mailbox", "test", "Desk"), "read"),
    (("mailbox", "send-test", "Desk", "--to", "me@example.com"), "read"),
    (("credentials", "list", "Desk"), "read"),
    (("credentials", "test", "Desk"), "read"),
    (("access", "show", "Desk"), "read"),
    (("access", "explain", "Desk"), "read"),
    (("logs", "--mailbox", "Desk"), "read"),
    (("logs", "show", "{log}"), "read"),
    (("config", "history", "Desk"), "read"),
    (("quarantine", "list", "--mailbox", "Desk"), "read"),
    (("rules", "list", "--mailbox", "Desk"), "read"),
    (("rules", "test", "{cases}", "--mailbox", "Desk"), "read"),
    (("simulate", "{eml}", "--mailbox", "Desk"), "read"),
    (("mailbox", "edit", "Desk", "--set", "incoming.after_import=mark_read"), "modify"),
    (("credentials", "add", "Desk", "--name", "extra", "--host", "h.example.com", "--secret-stdin", "--no-test"),
     "modify"),
    (("credentials", "remove", "Desk", "nope", "--yes"), "modify"),
    (("quarantine", "retry", "{q}"), "modify"),
    (("quarantine", "release", "{q}"), "modify"),
    (("access", "set", "Desk", "--entity", "team", "--name", TEAM, "--level", "modify"), "owner"),
    (("mailbox", "edit", "Desk", "--set", "access=[]"), "owner"),
    (("mailbox", "remove", "Desk", "--yes"), "owner"),
]


@pytest.mark.parametrize("level", ["none", "read", "modify", "owner"])
@pytest.mark.parametrize(("command", "needed"), COMMANDS, ids=[" ".join(c[:2]) + f" ({n})" for c, n in COMMANDS])
def test_each_level_against_each_command(tmp_path: Path, level: str, command: tuple[str, ...], needed: str) -> None:
    body = AGENTS.replace('name = "Nina Peach"\nlevel = "modify"', f'name = "Pia"\nlevel = "{level}"')
    cfg = desk(tmp_path, body)
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "a.eml").write_bytes(email_bytes("Printer"))
    (cases / "a.toml").write_text('outcome = "created"\n')
    subs = {"{log}": str(first_log_id(cfg, "Desk")), "{q}": str(quarantined_id(cfg)), "{cases}": str(cases),
            "{eml}": str(cases / "a.eml")}
    argv = [subs.get(a, a) for a in command]
    result = as_(cfg, "Pia", *argv, input="s3cret\n")
    levels = ["none", "read", "modify", "owner"]
    if levels.index(level) >= levels.index(needed):
        assert not denied(result, needed) and "integrator access set" not in result.stderr, result.stderr
    else:
        assert denied(result, needed), (result.exit_code, result.stderr)
        held = "has no access to" if level == "none" else "may only"
        assert held in result.stderr and "integrator access set Desk --entity agent --name Pia" in result.stderr


def test_using_a_mailbox_needs_no_access_line(tmp_path: Path) -> None:
    cfg = desk(tmp_path)
    (tmp_path / "mail" / "3.eml").write_bytes(email_bytes("Another", message_id="p3@x"))
    assert as_(cfg, "Pia", "import", "Desk").exit_code == 0
    assert as_(cfg, "Pia", "run").exit_code in (0, 5)
    tickets = invoke_json(cfg, "--as", "Pia", "tickets", "list")
    assert {t["subject"] for t in tickets} >= {"Printer", "Another", "Invoice"}


def test_lists_show_only_readable_mailboxes(tmp_path: Path) -> None:
    cfg = desk(tmp_path)
    assert [m["name"] for m in invoke_json(cfg, "--as", "Theo", "mailbox", "list")] == ["Desk"]
    assert [m["name"] for m in invoke_json(cfg, "--as", "Olga", "mailbox", "list")] == ["Billing"]
    assert invoke_json(cfg, "--as", "Pia", "mailbox", "list") == []
    assert [m["name"] for m in invoke_json(cfg, "--as", "Omar", "mailbox", "list")] == ["Desk", "Billing"]

    assert {r["mailbox"] for r in invoke_json(cfg, "--as", "Theo", "logs")} == {"Desk"}
    assert {r["mailbox"] for r in invoke_json(cfg, "--as", "Olga", "logs")} == {"Billing"}
    assert invoke_json(cfg, "--as", "Pia", "logs") == []
    assert {r["mailbox"] for r in invoke_json(cfg, "--as", "Omar", "logs")} == {"Desk", "Billing"}
    assert len(invoke_json(cfg, "--as", "Theo", "logs", "--limit", "1")) == 1
    assert invoke_json(cfg, "--as", "Olga", "quarantine", "list") == []
    billing_log = first_log_id(cfg, "Billing")
    assert denied(as_(cfg, "Theo", "logs", "show", str(billing_log)), "read")
    assert as_(cfg, "Olga", "logs", "show", str(billing_log)).exit_code == 0

    shown = invoke_json(cfg, "--as", "Olga", "config", "show")
    assert [m["name"] for m in shown["mailboxes"]] == ["Billing"]
    assert "Desk" not in as_(cfg, "Olga", "config", "check").stdout


def test_logs_of_a_mailbox_no_longer_configured_are_for_admins(tmp_path: Path) -> None:
    cfg = desk(tmp_path)
    assert as_(cfg, "Omar", "mailbox", "remove", "Billing", "--yes").exit_code == 0
    assert as_(cfg, "Omar", "logs", "--mailbox", "Billing").exit_code == 0
    olga = as_(cfg, "Olga", "logs", "--mailbox", "Billing")
    assert olga.exit_code == 2 and "only an admin" in olga.stderr


# ---------------------------------------------------------------------------------------------- access set


def test_setting_none_removes_the_line(tmp_path: Path) -> None:
    cfg = desk(tmp_path)
    result = as_(cfg, "Omar", "access", "set", "Desk", "--entity", "agent", "--name", "nina peach", "--level", "none")
    assert result.exit_code == 0, result.stderr
    assert "removed the line of agent Nina Peach (was modify)" in result.stdout
    lines = config_mod.load(cfg).mailbox("Desk").access
    assert [(ln.entity, ln.name, ln.level) for ln in lines] == [("team", TEAM, "read")]
    assert "level = \"none\"" not in cfg.read_text()
    again = as_(cfg, "Omar", "access", "set", "Desk", "--entity", "agent", "--name", "Nina Peach", "--level", "none")
    assert again.exit_code == 0 and "nothing changed" in again.stdout
    assert denied(as_(cfg, "Nina Peach", "mailbox", "edit", "Desk", "--set", "incoming.after_import=delete"),
                  "modify")


def test_owner_may_change_access_modify_may_not(tmp_path: Path) -> None:
    cfg = desk(tmp_path)
    grant = ("access", "set", "Desk", "--entity", "agent", "--name", "Theo", "--level", "modify")
    nina = as_(cfg, "Nina Peach", *grant)
    assert denied(nina, "owner")
    assert "Nina Peach may only read and modify mailbox Desk; changing its access lines needs owner" in nina.stderr
    assert "--name 'Nina Peach' --level owner" in nina.stderr
    # Olga owns Billing through her department: she may change its lines, not Desk's
    assert as_(cfg, "Olga", "access", "set", "Billing", "--entity", "agent", "--name", "Theo",
               "--level", "read").exit_code == 0
    assert as_(cfg, "Theo", "mailbox", "show", "Billing").exit_code == 0
    assert denied(as_(cfg, "Olga", *grant), "owner")
    # an owner may make another owner, who may then change the lines too
    assert as_(cfg, "Omar", "access", "set", "Desk", "--entity", "agent", "--name", "Nina Peach",
               "--level", "owner").exit_code == 0
    assert as_(cfg, "Nina Peach", *grant).exit_code == 0
    assert as_(cfg, "Theo", "mailbox", "edit", "Desk", "--set", "incoming.after_import=delete").exit_code == 0


def test_access_set_checks_the_names(tmp_path: Path) -> None:
    cfg = desk(tmp_path)
    ghost = as_(cfg, "Omar", "access", "set", "Desk", "--entity", "agent", "--name", "Ghost", "--level", "read")
    assert ghost.exit_code != 0 and "No agent named 'Ghost'" in ghost.stderr
    assert "Ghost" not in cfg.read_text()
    team = as_(cfg, "Omar", "access", "set", "Desk", "--entity", "team", "--name", "Night Shift", "--level", "read")
    assert team.exit_code == 0
    assert "No agent is in team 'Night Shift' yet" in team.stderr
    # an existing team keeps the spelling its agents use
    assert as_(cfg, "Omar", "access", "set", "Billing", "--entity", "team", "--name", TEAM.upper(),
               "--level", "read").exit_code == 0
    assert [ln.name for ln in config_mod.load(cfg).mailbox("Billing").access] == ["Finance", TEAM]


def test_access_show(tmp_path: Path) -> None:
    cfg = desk(tmp_path)
    data = invoke_json(cfg, "--as", "Theo", "access", "show", "Desk")
    assert data["lines"] == [
        {"entity": "team", "name": TEAM, "level": "read", "agents": ["Nina Peach", "Theo"]},
        {"entity": "agent", "name": "Nina Peach", "level": "modify", "agents": ["Nina Peach"]},
    ]
    assert data["admins"] == ["Omar"] and data["single_admin"] is False
    text = as_(cfg, "Theo", "access", "show", "Desk").stdout
    assert f"team\t{TEAM}\tread\tNina Peach, Theo" in text and "Admins (may do everything): Omar" in text


# ------------------------------------------------------------------------------------------- admin, agents


def test_admin_may_do_everything(tmp_path: Path) -> None:
    cfg = desk(tmp_path)
    assert as_(cfg, "Omar", "access", "explain", "Billing").stdout.strip() == "Omar: owner (admin: may do everything)"
    (tmp_path / "drop").mkdir()
    add = ("mailbox", "add", "Drop", "--connection", "folder", "--path", "drop", "--yes", "--only-new")
    nina = as_(cfg, "Nina Peach", *add)
    assert nina.exit_code == 2 and "Adding a mailbox needs an admin agent, and Nina Peach is not one" in nina.stderr
    assert as_(cfg, "Omar", *add).exit_code == 0
    assert as_(cfg, "Omar", "access", "set", "Drop", "--entity", "team", "--name", TEAM,
               "--level", "owner").exit_code == 0
    assert as_(cfg, "Omar", "mailbox", "remove", "Billing", "--yes").exit_code == 0
    assert denied(as_(cfg, "Olga", "mailbox", "show", "Drop"), "read")
    assert as_(cfg, "Theo", "mailbox", "remove", "Drop", "--yes").exit_code == 0


def test_agents_commands_need_an_admin(tmp_path: Path) -> None:
    cfg = desk(tmp_path)
    denied_add = as_(cfg, "Nina Peach", "agents", "add", "Zed")
    assert denied_add.exit_code == 2 and "needs an admin agent" in denied_add.stderr
    assert as_(cfg, "Omar", "agents", "add", "Zed", "--team", TEAM, "--os-user", "zed").exit_code == 0
    assert as_(cfg, "Zed", "mailbox", "show", "Desk").exit_code == 0
    assert as_(cfg, "Omar", "agents", "edit", "Zed", "--remove-team", TEAM, "--add-department",
               "Finance").exit_code == 0
    assert denied(as_(cfg, "Zed", "mailbox", "show", "Desk"), "read")
    assert as_(cfg, "Zed", "mailbox", "show", "Billing").exit_code == 0
    listed = {a["name"]: a for a in invoke_json(cfg, "--as", "Pia", "agents", "list")}
    assert listed["Zed"]["departments"] == ["Finance"] and listed["Omar"]["admin"] is True

    removed = as_(cfg, "Omar", "agents", "remove", "Nina Peach", "--yes")
    assert removed.exit_code == 0 and "their access lines on Desk" in removed.stdout
    assert [ln.entity for ln in config_mod.load(cfg).mailbox("Desk").access] == ["team"]

    demoted = as_(cfg, "Omar", "agents", "edit", "Omar", "--no-admin")
    assert demoted.exit_code == 0 and "No agent is an admin now" in demoted.stderr


def test_single_admin_mode_allows_everything_and_bootstraps_agents(tmp_path: Path) -> None:
    cfg = desk(tmp_path, "")  # no agents, no access lines
    assert invoke(cfg, "mailbox", "show", "Desk").exit_code == 0
    assert invoke(cfg, "--as", "anyone", "mailbox", "edit", "Desk", "--set",
                  "incoming.after_import=mark_read").exit_code == 0
    assert invoke(cfg, "access", "set", "Desk", "--entity", "team", "--name", TEAM, "--level", "read").exit_code == 0
    explained = invoke(cfg, "access", "explain", "Desk")
    assert "single-admin mode" in explained.stdout
    assert "single-admin mode" in invoke(cfg, "agents", "list").stdout

    first = invoke(cfg, "agents", "add", "Omar", "--admin", "--os-user", "omar-login")
    assert first.exit_code == 0, first.stderr
    assert "every command acts as one" in first.stdout
    # agents exist now: nobody resolved is an error that says how to pick one
    nobody = invoke(cfg, "mailbox", "show", "Desk", env={"SUDO_USER": None, "LOGNAME": "someone-else"})
    assert nobody.exit_code == 2
    assert "--as NAME" in nobody.stderr and "INTEGRATOR_AGENT" in nobody.stderr and "--os-user" in nobody.stderr
    assert invoke(cfg, "--as", "Omar", "agents", "add", "Nina Peach", "--team", TEAM).exit_code == 0


def test_the_first_agent_not_being_an_admin_is_warned(tmp_path: Path) -> None:
    cfg = desk(tmp_path, "")
    result = invoke(cfg, "agents", "add", "Nina Peach")
    assert result.exit_code == 0 and "No agent is an admin now" in result.stderr


def test_removing_the_last_agent_returns_to_single_admin_mode(tmp_path: Path) -> None:
    cfg = desk(tmp_path, "")
    assert invoke(cfg, "agents", "add", "Omar", "--admin").exit_code == 0
    result = invoke(cfg, "--as", "Omar", "agents", "remove", "Omar", "--yes")
    assert result.exit_code == 0 and "single-admin mode again" in result.stderr


# --------------------------------------------------------------------------------------- who is acting


def test_unknown_agent_is_an_error_never_an_admin(tmp_path: Path) -> None:
    cfg = desk(tmp_path)
    result = as_(cfg, "Ghost", "mailbox", "show", "Desk")
    assert result.exit_code == 2 and "No agent named 'Ghost'" in result.stderr and "Omar" in result.stderr
    env = invoke(cfg, "mailbox", "list", env={"INTEGRATOR_AGENT": "Ghost"})
    assert env.exit_code == 2 and "No agent named 'Ghost'" in env.stderr
    assert invoke(cfg, "mailbox", "list", "--json", env={"INTEGRATOR_AGENT": "theo"}).exit_code == 0


def test_the_os_user_picks_the_agent(tmp_path: Path) -> None:
    cfg = desk(tmp_path)
    nina = {"SUDO_USER": None, "LOGNAME": "nina-login"}
    data = json.loads(invoke(cfg, "access", "explain", "Desk", "--json", env=nina).stdout)
    assert data["agent"] == "Nina Peach" and data["level"] == "modify"
    # under sudo the person who ran sudo is the login, not the service account
    via_sudo = {"SUDO_USER": "omar-login", "LOGNAME": "integrator"}
    assert json.loads(invoke(cfg, "access", "explain", "Desk", "--json", env=via_sudo).stdout)["agent"] == "Omar"
    # --as beats the login
    assert json.loads(invoke(cfg, "--as", "Theo", "access", "explain", "Desk", "--json",
                             env=nina).stdout)["agent"] == "Theo"
    # and the history records the agent, not the login
    assert invoke(cfg, "mailbox", "edit", "Desk", "--set", "incoming.after_import=mark_read", env=nina).exit_code == 0
    rows = invoke_json(cfg, "--as", "Omar", "config", "history", "Desk")
    assert rows[0]["agent"] == "Nina Peach"


# ------------------------------------------------------------------------------------------ the file system


def test_a_config_others_can_write_is_refused(tmp_path: Path) -> None:
    cfg = desk(tmp_path, "")
    os.chmod(cfg, 0o666)
    result = invoke(cfg, "mailbox", "list")
    assert result.exit_code == 1
    assert "Refusing to run" in result.stderr and "writable by others" in result.stderr
    assert f"chmod go-w {cfg.resolve()}" in result.stderr
    os.chmod(cfg, 0o600)
    os.chmod(tmp_path / "tickets.db", 0o620)
    db = invoke(cfg, "tickets", "list")
    assert db.exit_code == 1 and "database" in db.stderr and "writable by its group" in db.stderr
    os.chmod(tmp_path / "tickets.db", 0o600)
    assert invoke(cfg, "tickets", "list").exit_code == 0


def test_files_others_can_read_are_warned_about_once_agents_exist(tmp_path: Path) -> None:
    cfg = desk(tmp_path)
    os.chmod(cfg, 0o640)
    result = as_(cfg, "Omar", "mailbox", "list")
    assert result.exit_code == 0
    assert result.stderr.count("Warning:") == 1
    assert "readable by its group" in result.stderr and f"chmod 600 {cfg.resolve()}" in result.stderr
    os.chmod(tmp_path / "tickets.db", 0o604)
    assert "The database" in as_(cfg, "Omar", "mailbox", "list").stderr
    # single-admin mode: no access lines to undermine (doctor still reports it)
    plain = desk(tmp_path / "plain", "")
    os.chmod(plain, 0o644)
    assert invoke(plain, "mailbox", "list").stderr == ""


# ----------------------------------------------------------------------------------------------- history


def test_access_changes_are_recorded_in_the_config_history(tmp_path: Path) -> None:
    cfg = desk(tmp_path)
    assert as_(cfg, "Omar", "access", "set", "Desk", "--entity", "department", "--name", "Finance",
               "--level", "read").exit_code == 0
    assert as_(cfg, "Omar", "access", "set", "Desk", "--entity", "team", "--name", TEAM,
               "--level", "modify").exit_code == 0
    assert as_(cfg, "Omar", "access", "set", "Desk", "--entity", "agent", "--name", "Nina Peach",
               "--level", "none").exit_code == 0
    rows = invoke_json(cfg, "--as", "Theo", "config", "history", "Desk")
    assert [r["action"] for r in rows] == ["access changed"] * 3
    assert {r["agent"] for r in rows} == {"Omar"}
    assert rows[2]["changes"] == [{"key": "access.department:Finance", "before": None,
                                   "after": {"entity": "department", "name": "Finance", "level": "read"}}]
    assert rows[1]["changes"] == [{"key": f"access.team:{TEAM}.level", "before": "read", "after": "modify"}]
    assert rows[0]["changes"] == [{"key": "access.agent:Nina Peach", "after": None,
                                   "before": {"entity": "agent", "name": "Nina Peach", "level": "modify"}}]
    # agents' own changes are recorded too, for admins
    assert as_(cfg, "Omar", "agents", "edit", "Theo", "--admin").exit_code == 0
    agents_rows = invoke_json(cfg, "--as", "Omar", "config", "history", "(agents)")
    assert agents_rows[0]["changes"] == [{"key": "agents.Theo.admin", "before": False, "after": True}]
    assert all(r["mailbox"] != "(agents)" for r in invoke_json(cfg, "--as", "Olga", "config", "history"))
    assert invoke_json(cfg, "--as", "Pia", "config", "history") == []


def test_commands_have_help_with_an_example() -> None:
    for group in ("access", "agents"):
        for sub in ("show", "set", "explain") if group == "access" else ("list", "add", "edit", "remove"):
            result = invoke(None, group, sub, "--help")
            assert result.exit_code == 0 and "Example" in result.stdout, (group, sub)
