"""The command surface: help text with an example everywhere, JSON shapes as DESIGN states them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from halo_integrator.cli import cli
from halo_integrator.store import Store
from helpers import copy_examples, invoke, invoke_json, run_subprocess, write_config


def all_commands() -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []

    def walk(prefix: str, group: click.Group) -> None:
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            assert cmd is not None, name
            full = f"{prefix} {name}".strip()
            out.append((full, cmd))
            if isinstance(cmd, click.Group):
                walk(full, cmd)

    walk("", cli)
    return out


@pytest.mark.parametrize(("name", "command"), all_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_command_has_help_with_an_example(name: str, command: click.Command) -> None:
    result = invoke(None, *name.split(), "--help")
    assert result.exit_code == 0, result.output
    assert (command.help or "").strip(), f"{name} has no help text"
    assert "Example" in result.output, f"`integrator {name} --help` shows no example"


def test_help_is_fast_because_heavy_modules_stay_unloaded() -> None:
    code = (
        "import sys; from halo_integrator.cli import main; sys.argv=['integrator','--help'];\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('imapclient','nh3','html_text','lxml','charset_normalizer','icalendar','tnefparse',"
        "'sqlite_utils','keyring','rich','msal','google.auth','exchangelib','requests') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in result.stderr, result.stderr


def test_schedule_commands_do_not_load_the_web_client() -> None:
    """`integrator schedule` writes a little XML (launchd, Task Scheduler); the stdlib's XML escaper would load
    urllib.request (45 ms) with it."""
    code = "import sys, halo_integrator.cli.schedule; print('WEB', 'urllib.request' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "WEB False" in result.stdout, result.stdout + result.stderr


_RUN_AND_REPORT = (
    "import sys; from halo_integrator.cli import main\n"
    "sys.argv = {argv!r}\n"
    "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
    "heavy = [m for m in ('halo_integrator.mail.parse', 'multiprocessing', 'concurrent.futures.process', 'nh3',"
    "'html_text', 'lxml', 'charset_normalizer', 'icalendar', 'tnefparse', 'zstandard') if m in sys.modules]\n"
    "server = sys.modules.get('multiprocessing.forkserver')\n"
    "started = server is not None and server._forkserver._forkserver_pid is not None\n"
    "print('EXIT', code, 'HEAVY', heavy, 'FORKSERVER', started, file=sys.stderr)"
)
"""A script that runs the CLI with ``argv``, then says what the run loaded and whether a fork server runs."""


def test_a_run_with_nothing_new_loads_neither_the_parser_nor_the_worker_pool(tmp_path: Path) -> None:
    """The run cron starts every few minutes mostly finds nothing: it must not pay for what an import needs.

    Only the first run of a mailbox starts the parse workers' fork server, before it connects: a first run
    imports what is already there, and the server loads the parser while this process logs in. Not so after
    `mailbox add --only-new`, which left what is there alone."""

    def run(directory: Path, *options: str, workers: str = "2") -> str:
        cfg = write_config(directory)  # an empty folder mailbox
        code = _RUN_AND_REPORT.format(argv=["integrator", "--config", str(cfg), "run", *options])
        env = {**os.environ, "INTEGRATOR_WORKERS": workers}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                              cwd=directory, env=env)
        return done.stderr

    assert "EXIT 0 HEAVY [] FORKSERVER False" in run(tmp_path / "one", workers="1")  # parsed in this process
    assert "EXIT 0 HEAVY [] FORKSERVER False" in run(tmp_path, "--dry-run")  # records no run: not a first run
    with Store.open(tmp_path / "only-new" / "tickets.db") as store:  # as `mailbox add --only-new` leaves it
        store.mark_seen("Desk", "", "old.eml", "skipped")
    assert "EXIT 0 HEAVY [] FORKSERVER False" in run(tmp_path / "only-new")  # no backlog to import
    first = run(tmp_path)
    assert "EXIT 0 HEAVY ['multiprocessing'] FORKSERVER True" in first, first
    later = run(tmp_path)
    assert "EXIT 0 HEAVY [] FORKSERVER False" in later, later


def test_unknown_command_and_bad_option_are_usage_errors(tmp_path: Path) -> None:
    assert invoke(None, "frobnicate").exit_code == 2
    cfg = write_config(tmp_path)
    assert invoke(cfg, "run", "--limit", "0").exit_code == 2


def test_json_shapes(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    copy_examples(tmp_path / "mail")
    run = invoke(cfg, "run", "--json")
    assert run.exit_code == 0
    (summary,) = json.loads(run.stdout)  # stdout is one JSON document and nothing else
    assert {"mailbox", "credential", "fetched", "created", "updated", "ignored", "errors", "disposed",
            "seconds"} <= set(summary)

    tickets = invoke_json(cfg, "tickets", "list")
    assert tickets
    for t in tickets:
        assert {"id", "subject", "status", "mailbox", "requester", "created_at", "updated_at",
                "action_count"} <= set(t)

    vpn = next(t for t in tickets if t["subject"] == "VPN client shows this error")
    shown = invoke_json(cfg, "tickets", "show", str(vpn["id"]))
    assert set(tickets[0]) <= set(shown)
    (action,) = shown["actions"]
    assert {"id", "kind", "message_id", "from", "to", "subject", "date", "body_text", "attachments"} <= set(action)
    assert action["kind"] == "email_in"
    assert action["from"] == "Zoë Martin <zoe.martin@contoso.example>"
    (att,) = action["attachments"]
    assert {"filename", "content_type", "size", "sha256", "content_id"} <= set(att)
    assert att["content_id"] == "screenshot-01@contoso.example" and att["content_type"] == "image/png"

    logs = invoke_json(cfg, "logs")
    assert len(logs) == 12
    for row in logs:
        assert {"id", "time", "direction", "mailbox", "status", "message_id", "subject", "sender", "ticket_id",
                "detail"} <= set(row)
        assert row["direction"] == "inbound"
        assert row["status"] in {"created", "updated", "duplicate", "ignored", "auto_reply", "bounce", "error",
                                 "quarantined"}
        assert row["detail"]


def test_logs_filters_and_show(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    copy_examples(tmp_path / "mail")
    invoke(cfg, "run")
    assert [r["status"] for r in invoke_json(cfg, "logs", "--status", "bounce")] == ["bounce"]
    assert len(invoke_json(cfg, "logs", "inbound", "--since", "1h")) == 12
    assert invoke_json(cfg, "logs", "--since", "2999-01-01") == []
    assert len(invoke_json(cfg, "logs", "--search", "Budget 2027")) == 1
    assert invoke_json(cfg, "logs", "outbound") == []
    bad = invoke(cfg, "logs", "--since", "yesterday-ish")
    assert bad.exit_code == 2
    first = invoke_json(cfg, "logs", "--status", "updated", "--limit", "1")[0]
    shown = invoke(cfg, "logs", "show", str(first["id"]))
    assert shown.exit_code == 0
    assert "Decision" in shown.stdout and "Message-ID:" in shown.stdout
    missing = invoke(cfg, "logs", "show", "99999")
    assert missing.exit_code == 1 and "No inbound log entry 99999" in missing.stderr


def test_tickets_show_missing_and_plain_output(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    copy_examples(tmp_path / "mail")
    invoke(cfg, "run")
    listing = invoke(cfg, "tickets", "list")
    header, *rows = listing.stdout.splitlines()
    assert header.split("\t")[:3] == ["ID", "Status", "Mailbox"]
    assert len(rows) == 8
    shown = invoke(cfg, "tickets", "show", "1")
    assert "Printer on the 3rd floor" in shown.stdout and "Error 13.A2" in shown.stdout
    assert invoke(cfg, "tickets", "show", "404").exit_code == 1


def test_python_dash_m_works(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "halo_integrator", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "integrator" in result.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [("INTEGRATOR_WORKERS", "two"), ("INTEGRATOR_WORKERS", "0"), ("INTEGRATOR_DB_TIMEOUT", "ten"),
     ("INTEGRATOR_DB_TIMEOUT", "inf"), ("INTEGRATOR_DB_TIMEOUT", "1e7")],  # past SQLite's 24 days it would be 0
)
def test_a_mistyped_number_in_the_environment_is_a_config_error(tmp_path: Path, variable: str, value: str) -> None:
    """Exit 3 naming the variable, before any email is touched, not a traceback halfway through an import."""
    cfg = write_config(tmp_path)
    copy_examples(tmp_path / "mail")
    result = run_subprocess(cfg, "run", env={variable: value})
    assert result.returncode == 3, result.stderr
    assert f"${variable} must be" in result.stderr and repr(value) in result.stderr
    assert "Traceback" not in result.stderr
    assert len(list((tmp_path / "mail").glob("*.eml"))) == 12  # nothing imported, nothing moved


def test_the_first_ctrl_c_or_sigterm_asks_the_run_to_stop_and_later_ones_stop_it_at_once(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """`run` and `import`: the first Ctrl-C or SIGTERM asks the importer to stop, saying which; a second Ctrl-C
    interrupts as Python does, a second SIGTERM ends the process as it would by default. Once a stopped run is
    over, further Ctrl-Cs are ignored (they would only cut its report short, or kill the interpreter as it
    exits). A run nobody stopped leaves both signals as it found them. A signal that lands after the run has
    settled its result (while it lets go of the lock, say) changes nothing and says nothing."""
    import signal

    from halo_integrator.cli.run import _first_signal_stops
    from halo_integrator.errors import Stop

    class Run:
        stopped_by: Stop | None = None
        over = False

        @property
        def stop_requested(self) -> bool:
            return self.stopped_by is not None

        def request_stop(self, by: Stop) -> bool:
            if self.over:
                return False
            self.stopped_by = self.stopped_by or by
            return True

    try:
        quiet = Run()
        with _first_signal_stops(quiet):  # type: ignore[arg-type]
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and not quiet.stop_requested
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

        stopped = Run()
        with _first_signal_stops(stopped):  # type: ignore[arg-type]
            signal.raise_signal(signal.SIGINT)
            assert stopped.stopped_by is Stop.CTRL_C
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the next one interrupts
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

        signal.signal(signal.SIGINT, signal.default_int_handler)
        terminated = Run()
        with _first_signal_stops(terminated):  # type: ignore[arg-type]
            signal.raise_signal(signal.SIGTERM)
            assert terminated.stopped_by is Stop.SIGTERM
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the next one ends the process
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler  # Ctrl-C still asks
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN

        signal.signal(signal.SIGINT, signal.default_int_handler)
        capfd.readouterr()
        settled = Run()
        with _first_signal_stops(settled):  # type: ignore[arg-type]
            settled.over = True  # the importer refuses a stop from now on
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGINT)
            assert settled.stopped_by is None
            # a second one would stop the process at once, as by default
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert "Stopping" not in capfd.readouterr().err
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # a run nobody stopped
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # started with SIGTERM ignored: it stays ignored
        with _first_signal_stops(Run()):  # type: ignore[arg-type]
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
