"""`integrator schedule`: crontab, systemd, launchd and Windows entries. Never the real crontab or home:
INTEGRATOR_CRONTAB_FILE / INTEGRATOR_SYSTEMD_DIR / INTEGRATOR_LAUNCHD_DIR point at temporary files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import copy_examples, invoke, write_config

OTHER_LINES = (
    b"# my own jobs\n"
    b"MAILTO=ops@example.com\n"
    b"0 3 * * * /usr/local/bin/backup --all  # nightly\n"
    b"\n"
    b"*/10 * * * * echo caf\xc3\xa9 > /dev/null\n"
)


@pytest.fixture
def crontab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "crontab.txt"
    path.write_bytes(OTHER_LINES)
    monkeypatch.setenv("INTEGRATOR_CRONTAB_FILE", str(path))
    return path


def ours(crontab: Path) -> list[str]:
    return [line for line in crontab.read_text(encoding="utf-8").splitlines() if "# halo-integrator " in line]


def test_install_twice_is_one_line_and_remove_restores_the_crontab_byte_for_byte(
    tmp_path: Path, crontab: Path
) -> None:
    config = write_config(tmp_path)
    first = invoke(config, "schedule", "install", "--kind", "cron")
    assert first.exit_code == 0, first.output
    assert "MAILTO" in first.stdout
    second = invoke(config, "schedule", "install", "--kind", "cron", "--every", "15m")
    assert second.exit_code == 0, second.output
    data = crontab.read_bytes()
    assert data.startswith(OTHER_LINES)
    lines = ours(crontab)
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith("*/15 * * * * ")
    assert f"{sys.executable} -m halo_integrator --config {config.resolve()} run" in line
    assert line.endswith(f"# halo-integrator {config.resolve()}")

    removed = invoke(config, "schedule", "remove", "--kind", "cron")
    assert removed.exit_code == 0, removed.output
    assert crontab.read_bytes() == OTHER_LINES
    again = invoke(config, "schedule", "remove", "--kind", "cron")
    assert "Nothing to remove" in again.stdout
    assert crontab.read_bytes() == OTHER_LINES


def test_remove_leaves_the_line_of_another_config(tmp_path: Path, crontab: Path) -> None:
    a = write_config(tmp_path / "a")
    b = write_config(tmp_path / "b")
    assert invoke(a, "schedule", "install", "--kind", "cron").exit_code == 0
    assert invoke(b, "schedule", "install", "--kind", "cron", "--every", "1h").exit_code == 0
    assert len(ours(crontab)) == 2
    assert invoke(a, "schedule", "remove", "--kind", "cron").exit_code == 0
    left = ours(crontab)
    assert len(left) == 1 and left[0].startswith("0 * * * * ") and str(b.resolve()) in left[0]
    assert crontab.read_bytes().startswith(OTHER_LINES)


def test_the_installed_cron_command_really_runs(tmp_path: Path, crontab: Path) -> None:
    """The command part of the line, run by a shell as cron would, imports the mail (its comment ignored)."""
    config = write_config(tmp_path / "desk")
    copy_examples(tmp_path / "desk" / "mail")
    assert invoke(config, "schedule", "install").exit_code == 0
    line = ours(crontab)[0]
    command = line.split(" ", 5)[5]
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATOR_")}
    proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""  # no terminal: quiet on success, so cron mails nothing
    assert (tmp_path / "desk" / "tickets.db").exists()


def test_show_prints_the_line_and_whether_it_is_installed(tmp_path: Path, crontab: Path) -> None:
    config = write_config(tmp_path)
    before = invoke(config, "schedule", "show", "--kind", "cron")
    assert before.exit_code == 0
    assert f"-m halo_integrator --config {config.resolve()} run # halo-integrator" in before.stdout
    assert "Not installed" in before.stdout
    invoke(config, "schedule", "install", "--kind", "cron", "--every", "10m")
    after = invoke(config, "schedule", "show")
    assert "Installed: cron (every 10 minutes)" in after.stdout
    assert crontab.read_bytes().startswith(OTHER_LINES)


def test_bad_interval_is_a_usage_error(tmp_path: Path, crontab: Path) -> None:
    config = write_config(tmp_path)
    for every in ("7m", "0", "5 days", "5h"):
        result = invoke(config, "schedule", "install", "--every", every)
        assert result.exit_code == 2, (every, result.output)
    assert crontab.read_bytes() == OTHER_LINES


def test_systemd_units_are_written_replaced_and_removed_without_touching_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    units = tmp_path / "units"
    units.mkdir()
    foreign = units / "backup.timer"
    foreign.write_text("[Timer]\nOnCalendar=daily\n", encoding="utf-8")
    monkeypatch.setenv("INTEGRATOR_SYSTEMD_DIR", str(units))
    config = write_config(tmp_path / "desk")
    result = invoke(config, "schedule", "install", "--kind", "systemd", "--every", "5m")
    assert result.exit_code == 0, result.output
    assert "systemctl --user daemon-reload && systemctl --user enable --now halo-integrator-" in result.stdout
    written = sorted(p.name for p in units.iterdir() if p.name.startswith("halo-integrator-"))
    assert len(written) == 2 and written[0].endswith(".service") and written[1].endswith(".timer")
    service = (units / written[0]).read_text(encoding="utf-8")
    timer = (units / written[1]).read_text(encoding="utf-8")
    assert service.startswith(f"# halo-integrator {config.resolve()}\n")
    assert f"ExecStart={sys.executable} -m halo_integrator --config {config.resolve()} run" in service
    assert "\nSuccessExitStatus=143\n" in service  # a run stopped by SIGTERM stopped cleanly
    assert "OnCalendar=*:0/5:00" in timer and "Persistent=true" in timer and "WantedBy=timers.target" in timer

    invoke(config, "schedule", "install", "--kind", "systemd", "--every", "30m")
    assert sorted(p.name for p in units.iterdir() if p.name.startswith("halo-integrator-")) == written
    assert "OnCalendar=*:0/30:00" in (units / written[1]).read_text(encoding="utf-8")

    removed = invoke(config, "schedule", "remove", "--kind", "systemd")
    assert removed.exit_code == 0 and "systemctl --user stop" in removed.stdout
    assert sorted(p.name for p in units.iterdir()) == ["backup.timer"]
    assert foreign.read_text(encoding="utf-8") == "[Timer]\nOnCalendar=daily\n"


def test_systemd_refuses_to_overwrite_a_unit_it_did_not_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from halo_integrator.schedule import Job, systemd_unit_name

    units = tmp_path / "units"
    monkeypatch.setenv("INTEGRATOR_SYSTEMD_DIR", str(units))
    config = write_config(tmp_path / "desk")
    units.mkdir()
    name = systemd_unit_name(Job(config_path=config.resolve()))
    (units / f"{name}.service").write_text("[Service]\nExecStart=/bin/true\n", encoding="utf-8")
    result = invoke(config, "schedule", "install", "--kind", "systemd")
    assert result.exit_code == 1
    assert "was not written for" in result.stderr
    assert (units / f"{name}.service").read_text(encoding="utf-8") == "[Service]\nExecStart=/bin/true\n"
    assert not (units / f"{name}.timer").exists()


def test_windows_show_prints_schtasks_and_xml(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = invoke(config, "schedule", "show", "--kind", "windows", "--every", "15m")
    assert result.exit_code == 0, result.output
    assert "schtasks /Create /TN \\halo-integrator\\run-" in result.stdout
    assert "/SC MINUTE /MO 15 /F" in result.stdout
    assert "<Interval>PT15M</Interval>" in result.stdout
    assert f"<Command>{sys.executable}</Command>" in result.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="installs for real on Windows")
def test_windows_install_elsewhere_explains_itself(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = invoke(config, "schedule", "install", "--kind", "windows")
    assert result.exit_code == 1
    assert "only be installed on Windows" in result.stderr


def test_launchd_agent_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    agents = tmp_path / "LaunchAgents"
    monkeypatch.setenv("INTEGRATOR_LAUNCHD_DIR", str(agents))
    config = write_config(tmp_path / "desk")
    assert invoke(config, "schedule", "install", "--kind", "launchd", "--every", "5m").exit_code == 0
    (plist,) = agents.iterdir()
    text = plist.read_text(encoding="utf-8")
    assert "<integer>300</integer>" in text and f"<string>{config.resolve()}</string>" in text
    assert invoke(config, "schedule", "remove", "--kind", "launchd").exit_code == 0
    assert list(agents.iterdir()) == []


def test_shell_completion_lists_commands(tmp_path: Path) -> None:
    """What docs/operations.md tells bash, zsh and fish users to use: click's completion protocol."""
    env = {**os.environ, "_INTEGRATOR_COMPLETE": "bash_complete", "COMP_WORDS": "integrator sch", "COMP_CWORD": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "halo_integrator"], capture_output=True, text=True, env=env, timeout=60
    )
    assert "plain,schedule" in proc.stdout.splitlines()
    for shell in ("bash", "zsh", "fish"):
        env = {**os.environ, "_INTEGRATOR_COMPLETE": f"{shell}_source"}
        proc = subprocess.run(
            [sys.executable, "-m", "halo_integrator"], capture_output=True, text=True, env=env, timeout=60
        )
        assert "_INTEGRATOR_COMPLETE" in proc.stdout, shell
