"""What `run` prints: on a terminal (a real pseudo-terminal) a progress bar and a summary table; without one
(cron) nothing but errors, unless -v."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from helpers import email_bytes, invoke, write_config

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")


def seed(directory: Path, count: int) -> None:
    for n in range(count):
        mail = email_bytes(f"Request number {n}", sender=f"User {n} <user{n}@example.org>", body=f"Body {n}")
        (directory / "mail" / f"{n:03}.eml").write_bytes(mail)


def run_in_pty(config: Path, *args: str) -> tuple[int, str]:
    """The real entry point with stdout and stderr on a pseudo-terminal 150 columns wide."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 150, 0, 0))
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "150"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "halo_integrator", "--config", str(config), *args],
        stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=120), b"".join(chunks).decode("utf-8", "replace")


def plain(screen: str) -> str:
    """The screen without terminal control sequences (bold, cursor moves)."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)


def test_terminal_shows_progress_and_a_summary_table(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra_incoming="batch_size = 10\n")
    seed(tmp_path, 30)
    code, screen = run_in_pty(config, "run")
    assert code == 0, screen
    assert "30/30" in screen  # the progress bar's last state, before it is cleared
    assert "\x1b[" in screen  # it was drawn with terminal control sequences
    text = plain(screen)
    assert "┃ Mailbox" in text and "Created" in text  # a rich table, not tab-separated text
    row = next(line for line in text.splitlines() if "│ Desk" in line)
    assert [cell.strip() for cell in row.split("│")[1:5]] == ["Desk", "-", "30", "30"]


def test_terminal_dry_run_shows_the_decisions(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    seed(tmp_path, 2)
    code, screen = run_in_pty(config, "run", "--dry-run")
    assert code == 0
    text = plain(screen)
    assert "Dry run: nothing was changed" in text and "Request number 1" in text


def test_no_terminal_success_prints_nothing(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    seed(tmp_path, 3)
    result = invoke(config, "run")
    assert result.exit_code == 0
    assert result.stdout == "" and result.stderr == ""


def test_no_terminal_verbose_prints_the_summary(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    seed(tmp_path, 3)
    result = invoke(config, "-v", "run")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Mailbox\tCredential\tFetched\tCreated")
    assert lines[1].split("\t")[:4] == ["Desk", "-", "3", "3"]
    assert "\x1b[" not in result.stdout


def test_no_terminal_prints_only_errors(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        '\n[[mailboxes]]\nname = "Remote"\nconnection = "imap"\n'
        '[[mailboxes.credentials]]\nhost = "127.0.0.1"\nport = 9\nsecurity = "none"\nusername = "u"\ntimeout = 5\n'
        '\n[[mailboxes]]\nname = "Elsewhere"\nconnection = "imap"\n'
        '[[mailboxes.credentials]]\ninstance = "other"\nhost = "127.0.0.1"\nusername = "u"\n',
    )
    seed(tmp_path, 2)
    result = invoke(config, "run", env={"INTEGRATOR_SECRET_REMOTE_DEFAULT_PASSWORD": "pw"})
    assert result.exit_code == 5
    assert result.stdout == ""
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("Error: Remote/default: ")
    # a mailbox this instance does not serve is not news under cron, but is said with -v
    verbose = invoke(config, "-v", "run", env={"INTEGRATOR_SECRET_REMOTE_DEFAULT_PASSWORD": "pw"})
    assert "Elsewhere: skipped, no credential for instance 'test'" in verbose.stderr


def test_quiet_wins_over_verbose_summary(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    seed(tmp_path, 1)
    result = invoke(config, "-v", "-q", "run")
    assert result.exit_code == 0 and result.stdout == ""


def test_incoming_off_is_said_plainly_even_under_cron(tmp_path: Path) -> None:
    config = write_config(tmp_path, "\n[services]\nincoming = false\n")
    seed(tmp_path, 1)
    result = invoke(config, "run")
    assert result.exit_code == 0
    assert "incoming service is off" in result.stderr
    assert list((tmp_path / "mail").glob("*.eml"))  # nothing was imported
