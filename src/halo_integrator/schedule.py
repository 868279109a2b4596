"""Scheduling `integrator run`: a crontab line, a systemd user timer, a launchd agent or a Windows task.

Every entry runs this interpreter (``sys.executable -m halo_integrator``) with the absolute config path, and
marks itself with ``# halo-integrator <config path>`` (cron: a trailing shell comment on the line; systemd and
launchd: the first line of each file; Windows: the task folder ``\\halo-integrator\\``). ``install`` replaces
only an entry carrying the marker of the same config (so installing twice leaves one), and ``remove`` removes
only such entries; every other crontab line is kept byte for byte.

Overrides (tests, packagers):

* ``INTEGRATOR_CRONTAB_FILE=PATH``: read and write that file instead of ``crontab -l`` / ``crontab -``.
* ``INTEGRATOR_SYSTEMD_DIR=DIR``: where unit files go (default ``$XDG_CONFIG_HOME/systemd/user``).
* ``INTEGRATOR_LAUNCHD_DIR=DIR``: where the agent plist goes (default ``~/Library/LaunchAgents``).

Nothing here enables or starts anything: the caller prints the ``systemctl``/``launchctl`` command to run.
The scheduled run prints nothing but errors when it has no terminal, so cron mails the user (``MAILTO``) only
when something went wrong.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from html import escape as _html_escape
from pathlib import Path

from halo_integrator.errors import IntegratorError


def escape(text: str) -> str:
    """``&``, ``<`` and ``>`` as XML entities, for text between tags (xml.sax.saxutils.escape would load
    urllib.request, 45 ms, for the same three replacements)."""
    return _html_escape(text, quote=False)

KINDS = ("cron", "systemd", "launchd", "windows")
MARK = "# halo-integrator"
CRONTAB_ENV = "INTEGRATOR_CRONTAB_FILE"
SYSTEMD_ENV = "INTEGRATOR_SYSTEMD_DIR"
LAUNCHD_ENV = "INTEGRATOR_LAUNCHD_DIR"
DEFAULT_EVERY = "5m"

_EVERY_RE = re.compile(r"^\s*(\d+)\s*(m|min|h)?\s*$", re.IGNORECASE)


class ScheduleError(IntegratorError):
    """The schedule cannot be read or written (no crontab command, a unit file that is not ours, ...)."""


def default_kind(platform: str | None = None) -> str:
    platform = sys.platform if platform is None else platform
    if platform == "win32":
        return "windows"
    if platform == "darwin":
        return "launchd"  # the login keychain is out of cron's reach (see keystore.no_backend_help)
    return "cron"


def parse_every(text: str) -> int:
    """``"5m"``, ``"15"``, ``"2h"`` → minutes. Minutes must divide an hour (1-30, 60) and hours a day."""
    m = _EVERY_RE.match(text or "")
    if not m or int(m.group(1)) == 0:
        raise ScheduleError(f"--every {text!r} is not an interval; use minutes or hours such as 5m, 15m or 1h.")
    n = int(m.group(1))
    minutes = n * 60 if (m.group(2) or "m").lower() == "h" else n
    if minutes < 60 and 60 % minutes:
        raise ScheduleError(
            f"--every {text!r}: minutes must divide an hour evenly (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)."
        )
    if minutes >= 60 and (minutes % 60 or 24 % (minutes // 60)):
        raise ScheduleError(f"--every {text!r}: hours must divide a day evenly (1, 2, 3, 4, 6, 8, 12, 24).")
    return minutes


def describe_every(minutes: int) -> str:
    if minutes % 60 == 0:
        hours = minutes // 60
        return "every hour" if hours == 1 else f"every {hours} hours"
    return "every minute" if minutes == 1 else f"every {minutes} minutes"


@dataclass(frozen=True, kw_only=True)
class Job:
    """What is scheduled: this interpreter running `integrator run` with one config, every N minutes."""

    config_path: Path
    every_minutes: int = 5
    python: str = field(default_factory=lambda: sys.executable)
    instance: str = ""

    @property
    def marker(self) -> str:
        return f"{MARK} {self.config_path}"

    @property
    def argv(self) -> list[str]:
        args = [self.python, "-m", "halo_integrator", "--config", str(self.config_path)]
        if self.instance:
            args += ["--instance", self.instance]
        return [*args, "run"]

    @property
    def slug(self) -> str:
        """A short, stable name for this config's units and task."""
        return hashlib.sha256(str(self.config_path).encode()).hexdigest()[:8]


@dataclass(frozen=True, kw_only=True)
class Installed:
    """One entry of ours found on this machine."""

    kind: str
    where: str
    every_minutes: int | None = None


# ------------------------------------------------------------------------------------------------ cron


def cron_expression(minutes: int) -> str:
    if minutes == 1:
        return "* * * * *"
    if minutes < 60:
        return f"*/{minutes} * * * *"
    hours = minutes // 60
    return "0 * * * *" if hours == 1 else ("0 0 * * *" if hours == 24 else f"0 */{hours} * * *")


def cron_line(job: Job) -> str:
    # '%' is a newline in a crontab command unless escaped
    command = shlex.join(job.argv).replace("%", "\\%")
    return f"{cron_expression(job.every_minutes)} {command} {_cron_marker(job)}"


def _cron_marker(job: Job) -> str:
    return job.marker.replace("%", "\\%")


def _is_ours(line: str, job: Job) -> bool:
    return line.rstrip("\r\n").rstrip().endswith(_cron_marker(job))


def _cron_minutes(line: str) -> int | None:
    fields = line.split()
    if len(fields) < 5:
        return None
    minute, hour = fields[0], fields[1]
    if minute == "*" and hour == "*":
        return 1
    if minute.startswith("*/") and minute[2:].isdigit() and hour == "*":
        return int(minute[2:])
    if minute == "0" and hour == "*":
        return 60
    if minute == "0" and hour == "0":
        return 1440
    if minute == "0" and hour.startswith("*/") and hour[2:].isdigit():
        return int(hour[2:]) * 60
    return None


def read_crontab() -> str:
    """The current user's crontab ("" when there is none)."""
    override = os.environ.get(CRONTAB_ENV)
    if override:
        try:
            return Path(override).read_bytes().decode("utf-8", "surrogateescape")
        except FileNotFoundError:
            return ""
    try:
        proc = subprocess.run(["crontab", "-l"], capture_output=True, timeout=30, check=False)
    except FileNotFoundError:
        raise ScheduleError(
            "The crontab command is not installed. Install cron (Debian: apt-get install cron), or use --kind systemd."
        ) from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        if "no crontab" in err.lower():
            return ""
        raise ScheduleError(f"`crontab -l` failed: {err or proc.returncode}.")
    return proc.stdout.decode("utf-8", "surrogateescape")


def write_crontab(text: str) -> None:
    override = os.environ.get(CRONTAB_ENV)
    data = text.encode("utf-8", "surrogateescape")
    if override:
        Path(override).write_bytes(data)
        return
    try:
        proc = subprocess.run(["crontab", "-"], input=data, capture_output=True, timeout=30, check=False)
    except FileNotFoundError:
        raise ScheduleError("The crontab command is not installed; use --kind systemd.") from None
    if proc.returncode != 0:
        raise ScheduleError(f"`crontab -` refused the new crontab: {proc.stderr.decode('utf-8', 'replace').strip()}")


def install_cron(job: Job) -> str:
    """Put our line in the crontab (replacing our own older line); returns the line."""
    lines = read_crontab().splitlines(keepends=True)
    ours = cron_line(job) + "\n"
    kept: list[str] = []
    placed = False
    for line in lines:
        if _is_ours(line, job):
            if not placed:
                kept.append(ours)  # keep its position
                placed = True
            continue
        kept.append(line)
    if not placed:
        if kept and not kept[-1].endswith("\n"):
            kept[-1] += "\n"  # cron ignores a last line without a newline
        kept.append(ours)
    write_crontab("".join(kept))
    return ours.rstrip("\n")


def remove_cron(job: Job) -> int:
    """Remove our lines from the crontab; how many were removed."""
    text = read_crontab()
    lines = text.splitlines(keepends=True)
    kept = [line for line in lines if not _is_ours(line, job)]
    removed = len(lines) - len(kept)
    if removed:
        write_crontab("".join(kept))
    return removed


def find_cron(job: Job) -> list[Installed]:
    where = os.environ.get(CRONTAB_ENV) or "crontab"
    return [
        Installed(kind="cron", where=where, every_minutes=_cron_minutes(line))
        for line in read_crontab().splitlines()
        if _is_ours(line, job)
    ]


def foreign_cron_lines() -> list[str]:
    """Crontab lines that seem to run the integrator but were not written by `schedule install`."""
    try:
        text = read_crontab()
    except ScheduleError:
        return []
    return [
        line
        for line in text.splitlines()
        if not line.lstrip().startswith("#")
        and MARK not in line
        and ("halo_integrator" in line or re.search(r"\bintegrator\b.*\brun\b", line))
    ]


# --------------------------------------------------------------------------------------------- systemd


def systemd_dir() -> Path:
    override = os.environ.get(SYSTEMD_ENV)
    if override:
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def systemd_unit_name(job: Job) -> str:
    return f"halo-integrator-{job.slug}"


def _systemd_quote(arg: str) -> str:
    arg = arg.replace("%", "%%").replace("$", "$$")
    if re.search(r"[\s\"'\\;]", arg):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def _on_calendar(minutes: int) -> str:
    if minutes < 60:
        return "*:*:00" if minutes == 1 else f"*:0/{minutes}:00"
    hours = minutes // 60
    return "*-*-* 00:00:00" if hours == 24 else f"*-*-* 0/{hours}:00:00"


def systemd_units(job: Job) -> dict[str, str]:
    """File name → content of the service and timer pair."""
    name = systemd_unit_name(job)
    head = f"{job.marker}\n# every {job.every_minutes} minutes; written by `integrator schedule install`\n"
    service = (
        f"{head}[Unit]\nDescription=halo-integrator: import email into tickets ({job.config_path})\n\n"
        "[Service]\nType=oneshot\n"
        f"ExecStart={' '.join(_systemd_quote(a) for a in job.argv)}\n"
        "# stopped by `systemctl stop` or a shutdown, a run finishes what it fetched and exits 143: no failure\n"
        "SuccessExitStatus=143\n"
    )
    timer = (
        f"{head}[Unit]\nDescription=Run halo-integrator {describe_every(job.every_minutes)} "
        f"({job.config_path})\n\n"
        f"[Timer]\nOnCalendar={_on_calendar(job.every_minutes)}\nPersistent=true\nAccuracySec=10s\n"
        f"Unit={name}.service\n\n[Install]\nWantedBy=timers.target\n"
    )
    return {f"{name}.service": service, f"{name}.timer": timer}


def _owned(path: Path, job: Job) -> bool:
    try:
        first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    except (OSError, UnicodeDecodeError):
        return False
    return first.rstrip() == job.marker


def _write_files(directory: Path, files: dict[str, str], job: Job) -> list[Path]:
    for name in files:
        path = directory / name
        if path.exists() and not _owned(path, job):
            raise ScheduleError(f"{path} exists and was not written for {job.config_path}; leaving it alone.")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = directory / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    return written


def _remove_files(directory: Path, names: list[str], job: Job) -> list[Path]:
    removed = []
    for name in names:
        path = directory / name
        if path.exists() and _owned(path, job):
            path.unlink()
            removed.append(path)
    return removed


def _file_minutes(path: Path) -> int | None:
    try:
        second = path.read_text(encoding="utf-8").split("\n")[1]
    except (OSError, UnicodeDecodeError, IndexError):
        return None
    m = re.match(r"# every (\d+) minutes", second)
    return int(m.group(1)) if m else None


def systemd_enable_command(job: Job) -> str:
    return f"systemctl --user daemon-reload && systemctl --user enable --now {systemd_unit_name(job)}.timer"


def systemd_stop_command(job: Job) -> str:
    return f"systemctl --user stop {systemd_unit_name(job)}.timer; systemctl --user daemon-reload"


# --------------------------------------------------------------------------------------------- launchd


def launchd_dir() -> Path:
    override = os.environ.get(LAUNCHD_ENV)
    return Path(override) if override else Path.home() / "Library" / "LaunchAgents"


def launchd_label(job: Job) -> str:
    return f"com.halo-integrator.run-{job.slug}"


def launchd_plist(job: Job) -> str:
    args = "".join(f"\n    <string>{escape(a)}</string>" for a in job.argv)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<!-- {job.marker[2:]} -->\n'
        f"<!-- every {job.every_minutes} minutes; written by `integrator schedule install` -->\n"
        '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n'
        f'<plist version="1.0">\n<dict>\n  <key>Label</key>\n  <string>{launchd_label(job)}</string>\n'
        f"  <key>ProgramArguments</key>\n  <array>{args}\n  </array>\n"
        f"  <key>StartInterval</key>\n  <integer>{job.every_minutes * 60}</integer>\n"
        "  <key>RunAtLoad</key>\n  <true/>\n</dict>\n</plist>\n"
    )


def _launchd_owned(path: Path, job: Job) -> bool:
    try:
        return f"<!-- {job.marker[2:]} -->" in path.read_text(encoding="utf-8").split("\n")[1]
    except (OSError, UnicodeDecodeError, IndexError):
        return False


# --------------------------------------------------------------------------------------------- windows


def windows_task_name(job: Job) -> str:
    return f"\\halo-integrator\\run-{job.slug}"


def windows_args(job: Job) -> list[str]:
    """The schtasks arguments that create (or replace, /F) the task."""
    if job.every_minutes < 60:
        sched = ["/SC", "MINUTE", "/MO", str(job.every_minutes)]
    else:
        sched = ["/SC", "HOURLY", "/MO", str(job.every_minutes // 60)]
    return ["/Create", "/TN", windows_task_name(job), "/TR", subprocess.list2cmdline(job.argv), *sched, "/F"]


def windows_command(job: Job) -> str:
    """The schtasks command line, quoted for cmd.exe."""
    return subprocess.list2cmdline(["schtasks", *windows_args(job)])


def windows_xml(job: Job) -> str:
    """The same task as Task Scheduler XML (`schtasks /Create /XML FILE /TN NAME`)."""
    minutes = job.every_minutes
    interval = f"PT{minutes}M" if minutes < 60 else f"PT{minutes // 60}H"
    args = subprocess.list2cmdline(job.argv[1:])
    return (
        '<?xml version="1.0"?>\n'
        '<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">\n'
        f"  <RegistrationInfo><Description>{escape(job.marker[2:])}</Description></RegistrationInfo>\n"
        "  <Triggers>\n    <TimeTrigger>\n"
        f"      <Repetition><Interval>{interval}</Interval>"
        "<StopAtDurationEnd>false</StopAtDurationEnd></Repetition>\n"
        "      <StartBoundary>2000-01-01T00:00:00</StartBoundary>\n      <Enabled>true</Enabled>\n"
        "    </TimeTrigger>\n  </Triggers>\n"
        "  <Settings>\n    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>\n"
        "    <StartWhenAvailable>true</StartWhenAvailable>\n"
        "    <ExecutionTimeLimit>PT1H</ExecutionTimeLimit>\n  </Settings>\n"
        "  <Actions>\n    <Exec>\n"
        f"      <Command>{escape(job.python)}</Command>\n      <Arguments>{escape(args)}</Arguments>\n"
        "    </Exec>\n  </Actions>\n</Task>\n"
    )


def _require_windows() -> None:
    if sys.platform != "win32":
        raise ScheduleError(
            "A Windows scheduled task can only be installed on Windows. `integrator schedule show --kind "
            "windows` prints the schtasks command and the task XML to use there."
        )


def _schtasks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["schtasks", *args], capture_output=True, text=True, timeout=60, check=False)


# ----------------------------------------------------------------------------------------- the facade


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What install/remove did, for the CLI to report."""

    kind: str
    changed: list[str]
    next_step: str = ""


def render(job: Job, kind: str) -> dict[str, str]:
    """What `install` would write, as name → text (for `schedule show`)."""
    if kind == "cron":
        return {"crontab line": cron_line(job)}
    if kind == "systemd":
        return {str(systemd_dir() / name): text for name, text in systemd_units(job).items()}
    if kind == "launchd":
        return {str(launchd_dir() / f"{launchd_label(job)}.plist"): launchd_plist(job)}
    if kind == "windows":
        return {"schtasks command": windows_command(job), "task XML": windows_xml(job)}
    raise ScheduleError(f"Unknown schedule kind {kind!r}; allowed: {', '.join(KINDS)}.")


def install(job: Job, kind: str) -> Outcome:
    if kind == "cron":
        line = install_cron(job)
        return Outcome(kind=kind, changed=[line])
    if kind == "systemd":
        paths = _write_files(systemd_dir(), systemd_units(job), job)
        return Outcome(kind=kind, changed=[str(p) for p in paths], next_step=systemd_enable_command(job))
    if kind == "launchd":
        directory, name = launchd_dir(), f"{launchd_label(job)}.plist"
        path = directory / name
        if path.exists() and not _launchd_owned(path, job):
            raise ScheduleError(f"{path} exists and was not written for {job.config_path}; leaving it alone.")
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(launchd_plist(job), encoding="utf-8")
        return Outcome(kind=kind, changed=[str(path)], next_step=f"launchctl bootstrap gui/$(id -u) '{path}'")
    if kind == "windows":
        _require_windows()
        proc = _schtasks(*windows_args(job))
        if proc.returncode != 0:
            raise ScheduleError(f"schtasks failed: {(proc.stderr or proc.stdout).strip()}")
        return Outcome(kind=kind, changed=[windows_task_name(job)])
    raise ScheduleError(f"Unknown schedule kind {kind!r}; allowed: {', '.join(KINDS)}.")


def remove(job: Job, kind: str) -> Outcome:
    if kind == "cron":
        n = remove_cron(job)
        return Outcome(kind=kind, changed=[f"{n} crontab line(s)"] if n else [])
    if kind == "systemd":
        names = list(systemd_units(job))
        directory = systemd_dir()
        paths = _remove_files(directory, names, job)
        # the link `systemctl --user enable` made to our timer, now dangling
        link = directory / "timers.target.wants" / f"{systemd_unit_name(job)}.timer"
        if paths and link.is_symlink() and Path(os.readlink(link)).name == link.name:
            link.unlink()
            paths.append(link)
        step = systemd_stop_command(job) if paths else ""
        return Outcome(kind=kind, changed=[str(p) for p in paths], next_step=step)
    if kind == "launchd":
        path = launchd_dir() / f"{launchd_label(job)}.plist"
        if path.exists() and _launchd_owned(path, job):
            path.unlink()
            return Outcome(
                kind=kind,
                changed=[str(path)],
                next_step=f"launchctl bootout gui/$(id -u)/{launchd_label(job)}",
            )
        return Outcome(kind=kind, changed=[])
    if kind == "windows":
        _require_windows()
        proc = _schtasks("/Delete", "/TN", windows_task_name(job), "/F")
        return Outcome(kind=kind, changed=[windows_task_name(job)] if proc.returncode == 0 else [])
    raise ScheduleError(f"Unknown schedule kind {kind!r}; allowed: {', '.join(KINDS)}.")


def find_installed(job: Job) -> tuple[list[Installed], list[str]]:
    """Our entries for this config on this machine, and the places that could not be looked at (why)."""
    found: list[Installed] = []
    unknown: list[str] = []
    try:
        found += find_cron(job)
    except ScheduleError as exc:
        unknown.append(f"cron: {exc}")
    for name in systemd_units(job):
        path = systemd_dir() / name
        if name.endswith(".timer") and path.exists() and _owned(path, job):
            found.append(Installed(kind="systemd", where=str(path), every_minutes=_file_minutes(path)))
    plist = launchd_dir() / f"{launchd_label(job)}.plist"
    if plist.exists() and _launchd_owned(plist, job):
        m = re.search(r"<!-- every (\d+) minutes", plist.read_text(encoding="utf-8"))
        found.append(Installed(kind="launchd", where=str(plist), every_minutes=int(m.group(1)) if m else None))
    if sys.platform == "win32":
        proc = _schtasks("/Query", "/TN", windows_task_name(job))
        if proc.returncode == 0:
            found.append(Installed(kind="windows", where=windows_task_name(job)))
    return found, unknown
