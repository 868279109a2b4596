"""`integrator doctor`: everything an unattended install needs, checked in one pass.

Each :class:`Finding` has a ``check`` (a stable kind such as ``connection``), a ``subject`` (what it is about:
``"Support/prod"``, a path, or ""), a ``status`` (``ok``, ``warn``, ``fail``, ``skip``), a one-line ``reason``
and the ``fix``. :attr:`Finding.key` (``check:subject``) is stable from one pass to the next, so a monitor
or an alerting job can keep the failing keys it saw last time and speak only when that set changes (once per
incident, once on recovery). :attr:`Report.exit_code` is 1 when anything failed, else 0.

What is checked, in order: the config is valid (a :class:`ConfigError` is itself a finding), file
permissions, the incoming/outgoing services, the keyring backend (only when a secret is not given in the
environment), every credential of this instance has its secret, each mailbox can be reached and its
Deleted Items folder found (skipped with ``offline``), token health, a schedule is installed, the database's
integrity, and each mailbox's last successful run.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from halo_integrator.config import instance_override
from halo_integrator.errors import ConfigError, IntegratorError

if TYPE_CHECKING:
    from halo_integrator.config import Config, Credential, Mailbox
    from halo_integrator.keystore import Keystore
    from halo_integrator.store import Store

STATUSES = ("ok", "warn", "fail", "skip")
STALE_DEFAULT = timedelta(hours=1)  # when no schedule says how often runs should happen
STALE_MIN = timedelta(minutes=10)
STALE_FACTOR = 3  # × the schedule interval
FAILED_RUNS_FAIL = 3  # a mailbox failing this many runs in a row is a failure, fewer a warning
OAUTH_CONNECTIONS = ("microsoft365", "google", "ews")


@dataclass(frozen=True, kw_only=True)
class Finding:
    check: str
    status: str
    reason: str
    fix: str = ""
    subject: str = ""

    @property
    def key(self) -> str:
        """Stable identity of what this finding is about (for alert incidents)."""
        return f"{self.check}:{self.subject}" if self.subject else self.check

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    def add(self, check: str, status: str, reason: str, fix: str = "", subject: str = "") -> Finding:
        assert status in STATUSES, status
        finding = Finding(check=check, status=status, reason=_one_line(reason), fix=fix.strip(), subject=subject)
        self.findings.append(finding)
        return finding

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for f in self.findings if f.status == s) for s in STATUSES}

    @property
    def status(self) -> str:
        found = {f.status for f in self.findings}
        return "fail" if "fail" in found else ("warn" if "warn" in found else "ok")

    @property
    def exit_code(self) -> int:
        return 1 if self.status == "fail" else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "counts": self.counts(),
            "findings": [f.as_dict() for f in self.findings],
        }


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _split(text: str) -> tuple[str, str]:
    """A long message as (first sentence, the rest): the reason and the fix."""
    flat = _one_line(text)
    head, sep, tail = flat.partition(". ")
    if sep and tail:
        return head + ".", tail
    return flat, ""


def _span(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def _ago(delta: timedelta) -> str:
    return _span(delta) + " ago"


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _no_secrets(kind: str) -> str:
    raise KeyError(kind)  # a folder mailbox has no secrets


def _pair(mailbox: Mailbox, credential: Credential | None) -> str:
    return f"{mailbox.name}/{credential.name}" if credential else mailbox.name


class Doctor:
    """One diagnostic pass; ``now`` lets a caller (alerts, tests) judge run ages at a given moment."""

    def __init__(
        self,
        config_path: Path,
        *,
        instance: str | None = None,
        offline: bool = False,
        now: datetime | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        self.instance_override = instance
        self.offline = offline
        self.now = now or datetime.now(UTC)
        self.report = Report()
        self._missing_secret: set[str] = set()
        self._keyring_broken = ""

    # ------------------------------------------------------------------------------------------ the pass
    def run(self) -> Report:
        from halo_integrator import config as config_mod

        try:
            cfg = config_mod.load(self.config_path)
        except ConfigError as exc:
            self.report.add(
                "config",
                "fail",
                str(exc),
                "Correct the config file, then run `integrator doctor` again.",
                subject=str(self.config_path),
            )
            self._permissions(None)
            self._schedule()
            return self.report
        self.report.add(
            "config", "ok", f"{cfg.path} is valid ({len(cfg.mailboxes)} mailbox(es))", subject=str(cfg.path)
        )
        instance = instance_override(self.instance_override) or cfg.instance
        self._permissions(cfg)
        self._services(cfg)
        self._alerts(cfg)
        keystore = self._keyring(cfg, instance)
        self._secrets(cfg, instance, keystore)
        self._connections(cfg, instance, keystore)
        self._tokens(cfg, instance)
        interval = self._schedule()
        self._database_and_runs(cfg, instance, interval)
        return self.report

    def _pairs(self, cfg: Config, instance: str) -> list[tuple[Mailbox, Credential | None]]:
        return [(mb, c) for mb in cfg.mailboxes for c in cfg.read_credentials(mb, instance)]

    # -------------------------------------------------------------------------------------------- checks
    def _permissions(self, cfg: Config | None) -> None:
        from halo_integrator.permissions import check_private_file

        files: list[tuple[str, Path, bool]] = [("config", self.config_path.resolve(), False)]
        if cfg is not None:
            files.append(("database", cfg.database_path, False))
            if cfg.logs.file:
                files.append(("log file", cfg.resolve(cfg.logs.file), False))
            if cfg.secrets.master_key_file:
                files.append(("master key", cfg.resolve(cfg.secrets.master_key_file), True))
        for label, path, secret in files:
            verdict = check_private_file(path, secret=secret)
            if verdict.status == "skip" and label == "database":
                continue  # reported by the database check
            self.report.add("permissions", verdict.status, f"{label}: {verdict.reason}", verdict.fix, subject=str(path))

    def _services(self, cfg: Config) -> None:
        if cfg.services.incoming:
            self.report.add("services", "ok", "incoming service is enabled", subject="incoming")
        else:
            self.report.add(
                "services",
                "fail",
                "incoming service must be enabled: `integrator run` imports nothing",
                f"Set [services] incoming = true in {cfg.path}.",
                subject="incoming",
            )
        if cfg.services.outgoing:
            self.report.add("services", "ok", "outgoing service is enabled", subject="outgoing")
        else:
            self.report.add(
                "services",
                "warn",
                "outgoing service is off: no acknowledgements or replies are sent",
                f"Set [services] outgoing = true in {cfg.path} to send email.",
                subject="outgoing",
            )

    def _alerts(self, cfg: Config) -> None:
        """Whether alerts (alerts.py) can reach the admins."""
        if not cfg.alerts.enabled:
            self.report.add("alerts", "skip", "alerts are off ([alerts] enabled = false)")
            return
        from halo_integrator.alerts import _sender

        try:
            mailbox, why = _sender(cfg)
        except ConfigError as exc:
            mailbox, why = None, str(exc)
        if mailbox is None:
            fix = (
                f'Add [outgoing] mailbox = "<a mailbox that sends>" and admins = ["you@example.com"] to '
                f"{cfg.path}."
            )
            # nobody asked for alerts yet: say so without turning a healthy setup into a warning
            status = "warn" if cfg.outgoing.admins or cfg.outgoing.mailbox else "skip"
            self.report.add("alerts", status, f"alerts are recorded but cannot be emailed: {why}", fix)
        else:
            self.report.add(
                "alerts", "ok", f"alerts go to {', '.join(cfg.outgoing.admins)} through mailbox {mailbox.name}"
            )

    def _keyring(self, cfg: Config, instance: str) -> Keystore:
        from halo_integrator.credentials import needed_kinds
        from halo_integrator.keystore import Keystore, env_name

        keystore = Keystore(cfg.secrets, base_dir=cfg.base_dir, interactive=False)
        needing = [
            _pair(mb, cred)
            for mb, cred in self._pairs(cfg, instance)
            if cred is not None
            and any(not os.environ.get(env_name(mb.name, cred.name, kind)) for kind in needed_kinds(mb, cred))
        ]
        if not needing:
            self.report.add(
                "keyring", "skip", "no credential needs the keyring (none, or all given in the environment)"
            )
            return keystore
        try:
            backend = keystore.check_backend()
        except IntegratorError as exc:
            self._keyring_broken = str(exc)
            reason, fix = _split(str(exc))
            self.report.add("keyring", "fail", f"no usable keyring backend for {', '.join(needing)}: {reason}", fix)
            return keystore
        desktop = ("SecretService", "kwallet", "macOS", "libsecret")
        if any(word.lower() in backend.lower() for word in desktop):
            from halo_integrator.keystore import no_backend_help

            self.report.add(
                "keyring",
                "warn",
                f"keyring backend {backend} works in this session but needs a desktop login; a scheduled run "
                "may not reach it",
                no_backend_help(),
            )
        else:
            self.report.add("keyring", "ok", f"keyring backend {backend} is usable without a prompt")
        return keystore

    def _secrets(self, cfg: Config, instance: str, keystore: Keystore) -> None:
        from halo_integrator.credentials import needed_kinds

        for mb, cred in self._pairs(cfg, instance):
            if cred is None:
                continue
            for kind in needed_kinds(mb, cred):
                self._secret(keystore, mb, cred, kind)

    def _secret(self, keystore: Keystore, mb: Mailbox, cred: Credential, kind: str) -> None:
        from halo_integrator.keystore import env_name

        subject = _pair(mb, cred)
        env = env_name(mb.name, cred.name, kind)
        if os.environ.get(env):
            self.report.add("secret", "ok", f"{kind} from the environment ({env})", subject=subject)
            return
        if self._keyring_broken:
            self._missing_secret.add(subject)
            self.report.add("secret", "skip", "the keyring is not usable (see keyring)", subject=subject)
            return
        try:
            source = keystore.source(mb.name, cred.name, kind)
        except IntegratorError as exc:
            self._missing_secret.add(subject)
            reason, fix = _split(str(exc))
            self.report.add("secret", "fail", reason, fix, subject=subject)
            return
        if source:
            self.report.add("secret", "ok", f"{kind} stored in the {source}", subject=subject)
        else:
            self._missing_secret.add(subject)
            self.report.add(
                "secret",
                "fail",
                f"no {kind} is stored for {subject}",
                f"integrator credentials add {mb.name!r} (credential {cred.name!r}), or set {env} in the "
                "scheduled job's environment.",
                subject=subject,
            )

    def _connections(self, cfg: Config, instance: str, keystore: Keystore) -> None:
        from halo_integrator.mailboxes import test_mailbox

        for mb, cred in self._pairs(cfg, instance):
            subject = _pair(mb, cred)
            if self.offline and mb.connection != "folder":
                self.report.add("connection", "skip", "--offline: not contacted", subject=subject)
                continue
            if subject in self._missing_secret:
                self.report.add("connection", "skip", "no secret to log in with (see secret)", subject=subject)
                continue
            lookup = keystore.lookup(mb.name, cred.name) if cred is not None else _no_secrets
            try:
                report = test_mailbox(cfg, mb, cred, lookup)
            except IntegratorError as exc:
                self.report.add("connection", "fail", str(exc), subject=subject)
                continue
            failed = [c for c in report.checks if not c.ok and c.name != "deleted_folder"]
            if failed:
                first = failed[0]
                self.report.add(
                    "connection",
                    "fail",
                    f"{first.name}: {first.detail}",
                    first.fix or "Check the settings with `integrator mailbox test`.",
                    subject=subject,
                )
            else:
                waiting = f", {report.message_count} email(s) waiting" if report.message_count is not None else ""
                what = "reached and logged in" if cred else "readable"
                self.report.add("connection", "ok", f"{what}{waiting}", subject=subject)
            self._deleted_folder(
                mb,
                report,
                reached=not any(c.name in ("connect", "tls", "login") for c in failed),
                subject=subject,
            )

    def _deleted_folder(self, mb: Mailbox, report: Any, *, reached: bool, subject: str) -> None:
        if mb.incoming.after_import != "move_to_deleted":
            self.report.add("deleted_folder", "skip", f"after_import is {mb.incoming.after_import!r}", subject=subject)
            return
        check = next((c for c in report.checks if c.name == "deleted_folder"), None)
        if check is not None and not check.ok:
            self.report.add("deleted_folder", "fail", check.detail, check.fix, subject=subject)
        elif check is not None or report.deleted_folder:
            self.report.add("deleted_folder", "ok", f"Deleted Items folder: {report.deleted_folder!r}", subject=subject)
        elif not reached:
            self.report.add("deleted_folder", "skip", "the server was not reached", subject=subject)
        else:
            self.report.add(
                "deleted_folder",
                "skip",
                f"{mb.connection} has no folders (imported email is deleted)",
                subject=subject,
            )

    def _tokens(self, cfg: Config, instance: str) -> None:
        """Token health. Extend here when OAuth connectors store tokens: one finding per credential with the
        expiry of its refresh token / client secret (warn when near, fail when expired)."""
        pairs = [(mb, cred) for mb, cred in self._pairs(cfg, instance) if cred is not None]
        oauth = [_pair(mb, cred) for mb, cred in pairs if cred.auth == "oauth2" or mb.connection in OAUTH_CONNECTIONS]
        if not oauth:
            self.report.add("tokens", "skip", "no OAuth credentials")
            return
        for mb, cred in pairs:
            if mb.connection in ("imap", "pop3") and cred.auth == "oauth2" and cred.oauth_provider == "none":
                # a token kept as is: nothing here renews it, and Microsoft's and Google's last about an hour
                self.report.add(
                    "tokens",
                    "warn",
                    "XOAUTH2 uses the access token stored in the keyring as is; nothing renews it, and tokens "
                    "from Microsoft 365 or Google expire within about an hour",
                    f"integrator mailbox edit {mb.name} --set credentials.{cred.name}.oauth_provider=microsoft365 "
                    "(with tenant_id and client_id; or google), then `integrator credentials add` the client "
                    "secret or key; keep `none` only when something else renews the stored token",
                    subject=_pair(mb, cred),
                )
        self.report.add("tokens", "skip", f"token expiry is not checked yet ({', '.join(oauth)})")

    def _schedule(self) -> int | None:
        """Whether `integrator run` is scheduled for this config; returns the interval in minutes if known."""
        from halo_integrator import schedule

        job = schedule.Job(config_path=self.config_path.resolve())
        found, unknown = schedule.find_installed(job)
        if found:
            minutes = [e.every_minutes for e in found if e.every_minutes]
            every = schedule.describe_every(min(minutes)) if minutes else "interval unknown"
            where = ", ".join(f"{e.kind} ({e.where})" for e in found)
            self.report.add("schedule", "ok", f"installed: {where}, {every}")
            return min(minutes) if minutes else None
        foreign = schedule.foreign_cron_lines()
        if foreign:
            self.report.add(
                "schedule",
                "ok",
                f"a crontab line runs the integrator (not written by `schedule install`): {foreign[0].strip()}",
            )
            return None
        looked = "; ".join(unknown)
        self.report.add(
            "schedule",
            "warn",
            "no schedule runs `integrator run` for this config" + (f" (could not look at {looked})" if looked else ""),
            "integrator schedule install   (or --kind systemd; see `integrator schedule show`)",
        )
        return None

    def _database_and_runs(self, cfg: Config, instance: str, interval: int | None) -> None:
        from halo_integrator.store import Store

        path = cfg.database_path
        if not path.exists():
            self.report.add(
                "database",
                "warn",
                f"no database yet at {path}",
                "integrator run   (creates it)",
                subject=str(path),
            )
            for mb, cred in self._pairs(cfg, instance):
                self.report.add("last_run", "skip", "no database yet", subject=_pair(mb, cred))
            return
        try:
            store = Store.open(path, create=False)
        except IntegratorError as exc:
            reason, fix = _split(str(exc))
            self.report.add("database", "fail", reason, fix, subject=str(path))
            return
        try:
            problems = store.quick_check()
            if problems == ["ok"]:
                self.report.add("database", "ok", f"{path} passed PRAGMA quick_check", subject=str(path))
            else:
                self.report.add(
                    "database",
                    "fail",
                    f"{path} is damaged: {problems[0]}",
                    f"Stop the schedule and restore {path.name} from a backup; `sqlite3 {path.name} .recover` "
                    "may save what is in it.",
                    subject=str(path),
                )
            self._last_runs(cfg, instance, store, interval)
        finally:
            store.close()

    def _last_runs(self, cfg: Config, instance: str, store: Store, interval: int | None) -> None:
        stale = STALE_DEFAULT if interval is None else max(STALE_MIN, timedelta(minutes=interval * STALE_FACTOR))
        health = {(r["mailbox"].casefold(), r["credential"]): r for r in store.mailbox_health()}
        any_runs = store.run_count() > 0
        for mb, cred in self._pairs(cfg, instance):
            subject = _pair(mb, cred)
            row = health.get((mb.name.casefold(), cred.name if cred else ""))
            if row is None:
                if any_runs:
                    self.report.add(
                        "last_run",
                        "warn",
                        "never run yet (added since the last run?)",
                        "integrator run",
                        subject=subject,
                    )
                else:
                    self.report.add("last_run", "warn", "no run has happened yet", "integrator run", subject=subject)
                continue
            last_error = _one_line(row["last_error"] or "")
            if not row["last_ok"]:
                self.report.add(
                    "last_run",
                    "fail",
                    f"never imported successfully in {row['runs']} run(s): {last_error}",
                    "Fix the error above; `integrator mailbox test` shows each step.",
                    subject=subject,
                )
                continue
            ago = self.now - _parse_time(row["last_ok"])
            in_a_row = int(row["failures_in_a_row"] or 0)
            if in_a_row:
                status = "fail" if in_a_row >= FAILED_RUNS_FAIL else "warn"
                self.report.add(
                    "last_run",
                    status,
                    f"the last {in_a_row} run(s) failed; last success {_ago(ago)}: {last_error}",
                    "Fix the error above; `integrator mailbox test` shows each step.",
                    subject=subject,
                )
            elif ago > stale:
                self.report.add(
                    "last_run",
                    "warn",
                    f"last successful run {_ago(ago)} (expected within {_span(stale)})",
                    "Is the schedule running? `integrator schedule show`; look in the system log for cron.",
                    subject=subject,
                )
            else:
                self.report.add("last_run", "ok", f"last successful run {_ago(ago)}", subject=subject)


def diagnose(config_path: Path, *, instance: str | None = None, offline: bool = False) -> Report:
    """Run every check for the config at ``config_path``."""
    return Doctor(config_path, instance=instance, offline=offline).run()
