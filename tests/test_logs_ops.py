"""Logs a person can read: --follow, `logs show`, retention by `run`, the rotating diagnostic log file."""

from __future__ import annotations

import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from halo_integrator.store import Store
from helpers import email_bytes, invoke, write_config


class Lines:
    """Reads a child's stdout on a thread, so the test can wait for a line with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=lambda: [self.queue.put(line) for line in stream], daemon=True).start()

    def wait_for(self, text: str, deadline: float = 30.0) -> str:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                line = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} never appeared; got {self.seen!r}")


def follow(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "halo_integrator", "--config", str(config), "logs", "--follow", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_follow_prints_existing_then_new_entries_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "mail" / "a.eml").write_bytes(email_bytes("First printer problem"))
    assert invoke(config, "run").exit_code == 0
    proc = follow(config)
    try:
        lines = Lines(proc)
        lines.wait_for("ID\tTime\tDir")
        first = lines.wait_for("First printer problem")
        assert "\tcreated\t" in first
        (tmp_path / "mail" / "b.eml").write_bytes(email_bytes("Second: VPN is down"))
        assert invoke(config, "run").exit_code == 0
        second = lines.wait_for("Second: VPN is down")
        assert "\tin\tDesk\tcreated\t" in second
    finally:
        code = stop(proc)
    assert code == 0
    assert "Interrupted" not in (proc.stderr.read() if proc.stderr else "")
    assert sum("First printer problem" in line for line in lines.seen) == 1  # never printed twice


def test_follow_json_lines_with_a_filter(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    proc = follow(config, "--json", "--status", "created")
    try:
        lines = Lines(proc)
        (tmp_path / "mail" / "a.eml").write_bytes(email_bytes("Keyboard broken"))
        (tmp_path / "mail" / "b.eml").write_bytes(
            email_bytes("Out of office", headers={"Auto-Submitted": "auto-replied"})
        )
        assert invoke(config, "run").exit_code == 0
        line = lines.wait_for("Keyboard broken")
    finally:
        stop(proc)
    entry = json.loads(line)
    assert entry["status"] == "created" and entry["direction"] == "inbound" and entry["mailbox"] == "Desk"
    assert not any("Out of office" in seen for seen in lines.seen)


def test_logs_show_has_the_decision_and_headers(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "mail" / "a.eml").write_bytes(email_bytes("Monitor flickers", message_id="m1@example.org"))
    invoke(config, "run")
    (row,) = json.loads(invoke(config, "logs", "--json").stdout)
    shown = invoke(config, "logs", "show", str(row["id"]))
    assert shown.exit_code == 0
    assert "Decision" in shown.stdout and "Headers" in shown.stdout
    assert "Message-ID: <m1@example.org>" in shown.stdout
    assert "Subject: Monitor flickers" in shown.stdout


def test_run_prunes_log_rows_older_than_keep_days(tmp_path: Path) -> None:
    config = write_config(tmp_path, "\n[logs]\nkeep_days = 30\n")
    invoke(config, "run")  # creates the database
    old = (datetime.now(UTC) - timedelta(days=31)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    recent = (datetime.now(UTC) - timedelta(days=29)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with Store.open(tmp_path / "tickets.db") as store, store.transaction():
        store.log_inbound(mailbox="Desk", credential="", status="ignored", detail="old one", time=old)
        store.log_inbound(mailbox="Desk", credential="", status="ignored", detail="recent one", time=recent)
    (tmp_path / "mail" / "a.eml").write_bytes(email_bytes("Today"))
    assert invoke(config, "run").exit_code == 0
    details = {r["detail"] for r in json.loads(invoke(config, "logs", "--json").stdout)}
    assert "recent one" in details and "old one" not in details
    assert len(details) == 2


def test_log_file_records_scheduled_runs_privately_and_without_secrets(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        '\n[logs]\nfile = "logs/integrator.log"\n\n'
        '[[mailboxes]]\nname = "Remote"\nconnection = "imap"\n'
        '[[mailboxes.credentials]]\nhost = "127.0.0.1"\nport = 9\nsecurity = "none"\nusername = "u"\ntimeout = 5\n',
    )
    (tmp_path / "mail" / "a.eml").write_bytes(email_bytes("Laptop will not boot"))
    secret = "correct-horse-battery-staple"
    result = invoke(config, "run", env={"INTEGRATOR_SECRET_REMOTE_DEFAULT_PASSWORD": secret})
    assert result.exit_code == 5
    log_file = tmp_path / "logs" / "integrator.log"
    text = log_file.read_text(encoding="utf-8")
    assert "INFO halo_integrator.cli.run: run started" in text
    assert "Desk: fetched 1, created 1" in text
    assert "Remote/default: fetched 0" in text and "failed:" in text
    assert "finished with exit code 5" in text
    assert secret not in text
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    # the stderr of a cron run still shows only the error
    assert result.stdout == ""
    assert "INFO" not in result.stderr and "Remote/default" in result.stderr
    # a second run appends; other commands do not write to it
    invoke(config, "tickets", "list")
    invoke(config, "run", env={"INTEGRATOR_SECRET_REMOTE_DEFAULT_PASSWORD": secret})
    again = log_file.read_text(encoding="utf-8")
    assert again.startswith(text) and again.count("run started") == 2


def test_unwritable_log_file_is_a_warning_not_a_failed_run(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file, not a directory")
    config = write_config(tmp_path, '\n[logs]\nfile = "blocker/integrator.log"\n')
    (tmp_path / "mail" / "a.eml").write_bytes(email_bytes("Hello"))
    result = invoke(config, "run")
    assert result.exit_code == 0
    assert "cannot write the log file" in result.stderr
