"""The TOML config file, read into frozen dataclasses and written back atomically.

Every key is declared by a dataclass field below; an unknown key or a bad value is a :class:`ConfigError`
naming the file, the key path (``mailboxes[2].incoming.after_import``) and what is allowed. Paths inside the
file (database, folders, CA files) are relative to the file. The config never holds a secret: those live in
the keyring (see :mod:`halo_integrator.keystore`).

The file is found from ``--config``, then ``$INTEGRATOR_CONFIG``, then ``./integrator.toml``, then the user
config dir (``click.get_app_dir("halo-integrator")``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import string
import tempfile
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halo_integrator.errors import ConfigError

CONFIG_NAME = "integrator.toml"
APP_NAME = "halo-integrator"

CONNECTIONS = ("imap", "pop3", "ews", "microsoft365", "google", "folder")
AFTER_IMPORT = ("move_to_deleted", "delete", "move_to_folder", "mark_read")
SECURITY = ("ssl", "starttls", "none")
AUTH = ("password", "oauth2")
OAUTH_PROVIDERS = ("none", "microsoft365", "google")  # who issues an IMAP / POP3 XOAUTH2 access token
OUTGOING_METHODS = ("smtp", "microsoft365", "google", "none")
CLOSED_REPLY = ("reopen", "new_linked", "ignore")
UNKNOWN_SENDER_ON_TAG = ("new_linked", "update", "ignore")
RULE_OPS = ("exact", "contains", "regex")
LEVELS = ("none", "read", "modify", "owner")
ENTITIES = ("agent", "team", "department")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,63}$")


def _choices(*allowed: str) -> dict[str, Any]:
    return {"choices": allowed}


@dataclass(frozen=True, kw_only=True)
class Services:
    incoming: bool = True
    outgoing: bool = True


@dataclass(frozen=True, kw_only=True)
class SecretsSettings:
    # a keyring backend class path such as "keyrings.cryptfile.cryptfile.CryptFileKeyring"; "" = keyring's choice
    backend: str = ""
    # where the cryptfile backend's master key is read from (a 0600 file); or $INTEGRATOR_KEYRING_KEY
    master_key_file: str = ""
    # plaintext storage is an explicit, warned opt-in
    allow_plaintext: bool = False


@dataclass(frozen=True, kw_only=True)
class LogSettings:
    keep_days: int = 90
    file: str = ""  # optional rotating diagnostic log for scheduled runs


@dataclass(frozen=True, kw_only=True)
class AlertSettings:
    """Email the admins ([outgoing] admins) once when something breaks and once when it recovers."""

    enabled: bool = True
    after_failed_runs: int = 3  # a mailbox that fails this many runs in a row is an incident


@dataclass(frozen=True, kw_only=True)
class ConfigSettings:
    track_changes: bool = False


@dataclass(frozen=True, kw_only=True)
class Agent:
    name: str
    email: str = ""
    teams: tuple[str, ...] = ()
    departments: tuple[str, ...] = ()
    admin: bool = False
    os_user: str = ""
    signature: str = ""


@dataclass(frozen=True, kw_only=True)
class AccessLine:
    entity: str = field(metadata=_choices(*ENTITIES))
    name: str
    level: str = field(metadata=_choices(*LEVELS))


@dataclass(frozen=True, kw_only=True)
class Credential:
    """How one instance reaches the server account behind a mailbox. The secret itself is in the keyring."""

    name: str = "default"
    instance: str = ""  # "" serves every instance
    host: str = ""
    port: int = 0  # 0 = the protocol's default for the security chosen
    security: str = field(default="ssl", metadata=_choices(*SECURITY))
    username: str = ""
    auth: str = field(default="password", metadata=_choices(*AUTH))
    # with auth = "oauth2" over IMAP or POP3: "none" uses an access token kept in the keyring as is (renewed
    # elsewhere); "microsoft365" asks Entra ID for an app-only token at every run (tenant_id, client_id, the
    # client secret in the keyring); "google" a service account's token acting as the mailbox (its JSON key in
    # the keyring)
    oauth_provider: str = field(default="none", metadata=_choices(*OAUTH_PROVIDERS))
    ca_file: str = ""
    tls_verify: bool = True
    timeout: float = 60.0  # seconds, for connect and for every read
    # cloud connections (microsoft365, google, ews)
    tenant_id: str = ""
    client_id: str = ""
    authority: str = ""
    endpoint: str = ""


@dataclass(frozen=True, kw_only=True)
class Condition:
    field: str  # from | to | cc | subject | body | attachment | header:<Name>
    op: str = dataclasses.field(default="contains", metadata=_choices(*RULE_OPS))
    value: str
    negate: bool = False
    case_sensitive: bool = False


@dataclass(frozen=True, kw_only=True)
class RuleActions:
    ignore: bool = False
    type: str = ""
    priority: str = ""
    status: str = ""
    category: str = ""
    team: str = ""
    agent: str = ""
    no_acknowledgement: bool = False
    # for suppliers' ticketing systems that strip our headers: a regex whose first group is our ticket number
    update_ticket_pattern: str = ""
    update_ticket_in: str = field(default="subject", metadata=_choices("subject", "body", "both"))


@dataclass(frozen=True, kw_only=True)
class Rule:
    name: str
    match: str = field(default="all", metadata=_choices("all", "any"))
    stop: bool = False
    conditions: tuple[Condition, ...] = ()
    actions: RuleActions = field(default_factory=RuleActions)


@dataclass(frozen=True, kw_only=True)
class Exclusions:
    """Senders that never create tickets; our own mailbox addresses are always among them."""

    addresses: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()  # regular expressions on the sender address


@dataclass(frozen=True, kw_only=True)
class Incoming:
    log_new_tickets: bool = True
    update_existing: bool = True
    after_import: str = field(default="move_to_deleted", metadata=_choices(*AFTER_IMPORT))
    acknowledge_new_tickets: bool = True
    folder: str = ""  # the folder read; "" = INBOX (IMAP) / the whole path (folder connector)
    deleted_folder: str = ""  # "" = found by \Trash attribute, then by the usual names
    move_folder: str = ""  # for after_import = "move_to_folder"
    quarantine_folder: str = "Quarantine"
    ticket_tag: str = "[#{id}]"  # how the ticket number appears in subjects
    search_body_for_tag: bool = False
    max_email_mb: float = 50.0
    tell_sender_when_too_big: bool = False
    closed_ticket_reply: str = field(default="reopen", metadata=_choices(*CLOSED_REPLY))
    # a ticket tag from someone who is neither the requester nor anyone on the ticket
    unknown_sender_on_tag: str = field(default="new_linked", metadata=_choices(*UNKNOWN_SENDER_ON_TAG))
    default_type: str = ""
    default_priority: str = ""
    default_status: str = "open"
    # loop throttle: more than this many new tickets from one sender within the window are quarantined
    sender_limit: int = 10
    sender_window_minutes: int = 60
    # emails fetched, parsed and committed together (and at most this many MB of them); a batch's emails leave
    # the server only after its commit. 250 rather than 100: fewer commands and commits, 8% faster on an IMAP
    # import of 5,000, while a connection lost mid-import costs at most one batch's fetch again
    batch_size: int = 250
    batch_mb: float = 20.0
    only_after_uid: int = 0  # the "only new" watermark recorded by `mailbox add --only-new`


@dataclass(frozen=True, kw_only=True)
class Outgoing:
    method: str = field(default="none", metadata=_choices(*OUTGOING_METHODS))
    host: str = ""
    port: int = 0
    security: str = field(default="starttls", metadata=_choices(*SECURITY))
    username: str = ""
    auth: str = field(default="password", metadata=_choices(*AUTH))
    ca_file: str = ""
    tls_verify: bool = True
    timeout: float = 60.0
    message_group: str = "Default"
    signature: str = ""
    send_restrictions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    signature_overrides: dict[str, str] = field(default_factory=dict)
    ack_limit_per_hour: int = 10


PLACEHOLDERS = (
    "ticket_id",
    "subject",
    "requester_name",
    "requester_email",
    "agent_name",
    "mailbox_name",
    "mailbox_address",
    "body",
    "status",
)


@dataclass(frozen=True, kw_only=True)
class MessageTemplate:
    subject: str
    body: str


def _default_group_templates() -> dict[str, MessageTemplate]:
    return {
        "new_ticket": MessageTemplate(
            subject="{subject}",
            body=(
                "Hello {requester_name},\n\nThank you for your email. We have logged it as ticket {ticket_id} "
                "and will be in touch.\n\nPlease keep the ticket number in the subject when you reply."
            ),
        ),
        "agent_reply": MessageTemplate(subject="{subject}", body="{body}"),
        "ticket_closed": MessageTemplate(
            subject="{subject}",
            body="Hello {requester_name},\n\nTicket {ticket_id} is now closed. Reply to this email to reopen it.",
        ),
    }


TEMPLATE_KINDS = ("new_ticket", "agent_reply", "ticket_closed")


def template_problem(text: str) -> str | None:
    """What is wrong with a template text (a bad brace, a name that is not a placeholder), or None."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        return f"is not a valid template: {exc}"
    for name in fields:
        if name not in PLACEHOLDERS:
            return (
                f"uses the unknown placeholder {{{name}}}; allowed: {', '.join('{' + x + '}' for x in PLACEHOLDERS)}"
            )
    return None


@dataclass(frozen=True, kw_only=True)
class MessageGroup:
    """A named set of email templates; each mailbox names its group in ``outgoing.message_group``."""

    name: str
    templates: dict[str, MessageTemplate] = field(default_factory=_default_group_templates)


@dataclass(frozen=True, kw_only=True)
class OutgoingDefaults:
    mailbox: str = ""  # the mailbox that sends mail no mailbox owns (alerts, test emails)
    admins: tuple[str, ...] = ()  # addresses that receive alerts


@dataclass(frozen=True, kw_only=True)
class Mailbox:
    name: str
    address: str = ""
    connection: str = field(metadata=_choices(*CONNECTIONS))
    path: str = ""  # folder connection: a directory of .eml files or a Maildir, relative to the config file
    incoming: Incoming = field(default_factory=Incoming)
    outgoing: Outgoing = field(default_factory=Outgoing)
    credentials: tuple[Credential, ...] = ()
    access: tuple[AccessLine, ...] = ()
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Config:
    instance: str = ""
    database: str = "integrator.db"
    services: Services = field(default_factory=Services)
    secrets: SecretsSettings = field(default_factory=SecretsSettings)
    logs: LogSettings = field(default_factory=LogSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    config: ConfigSettings = field(default_factory=ConfigSettings)
    outgoing: OutgoingDefaults = field(default_factory=OutgoingDefaults)
    message_groups: tuple[MessageGroup, ...] = ()
    rules: tuple[Rule, ...] = ()  # global rules, run before each mailbox's own
    exclusions: Exclusions = field(default_factory=Exclusions)
    agents: tuple[Agent, ...] = ()
    mailboxes: tuple[Mailbox, ...] = ()
    # where the file was read from; not a key in the file
    path: Path = field(default=Path(CONFIG_NAME), metadata={"internal": True})

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """A path from the file, relative to the file's directory."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def database_path(self) -> Path:
        return self.resolve(self.database)

    def mailbox(self, name: str) -> Mailbox:
        for mb in self.mailboxes:
            if mb.name.casefold() == name.casefold():
                return mb
        known = ", ".join(m.name for m in self.mailboxes) or "none"
        raise ConfigError(f"No mailbox named {name!r} in {self.path} (mailboxes: {known}).")

    def own_addresses(self) -> frozenset[str]:
        """Every address that is one of ours: mailbox addresses, and login names (incoming credentials,
        outgoing SMTP) that are addresses. Mail from them never opens a ticket or gets an acknowledgement.
        Worked out once per config (the importer asks for every email)."""
        found = self.__dict__.get("_own_addresses")
        if found is None:
            found = frozenset(
                address.strip().lower()
                for mb in self.mailboxes
                for address in (mb.address, mb.outgoing.username, *(c.username for c in mb.credentials))
                if "@" in address
            )
            self.__dict__["_own_addresses"] = found  # a frozen dataclass: a cache, not a field
        return found

    def message_group(self, name: str) -> MessageGroup:
        for group in self.message_groups:
            if group.name == name:
                return group
        if name == "Default":
            return MessageGroup(name="Default")
        raise ConfigError(f"No message group named {name!r} in {self.path}.")

    def credentials_for(self, mailbox: Mailbox, instance: str | None = None) -> list[Credential]:
        """The credentials this instance uses for a mailbox (DESIGN contract 7)."""
        inst = self.instance if instance is None else instance
        return [c for c in mailbox.credentials if not c.instance or c.instance == inst]

    def read_credentials(self, mailbox: Mailbox, instance: str | None = None) -> list[Credential | None]:
        """What this instance reads a mailbox with: its credentials, or ``[None]`` for a folder mailbox, which
        needs none. Empty when a server mailbox has no credential for the instance."""
        if mailbox.connection == "folder":
            return [None]
        return list(self.credentials_for(mailbox, instance))


# --------------------------------------------------------------------------------------------- loading


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where the config is: --config, $INTEGRATOR_CONFIG, ./integrator.toml, the user config dir."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("INTEGRATOR_CONFIG")
    if env:
        return Path(env)
    local = Path.cwd() / CONFIG_NAME
    if local.exists():
        return local
    import click

    return Path(click.get_app_dir(APP_NAME)) / CONFIG_NAME


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"No config file at {p}. Create one with `integrator init`, or name one with --config "
            f"or $INTEGRATOR_CONFIG."
        ) from None
    except OSError as exc:
        raise ConfigError(f"Cannot read the config file {p}: {exc.strerror or exc}.") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p} is not UTF-8 text; save it as UTF-8.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}.") from None
    return from_dict(data, p)


def from_dict(data: dict[str, Any], path: Path) -> Config:
    cfg = _build(Config, data, path, "")
    cfg = dataclasses.replace(cfg, path=path.resolve())
    _check(cfg)
    return cfg


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "a whole number"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is tuple:
        return "a list"
    if origin is dict:
        return "a table"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


def _build(cls: Any, data: Any, path: Path, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {where or 'the file'} must be a table.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(
            f"{path}: unknown key {key!r}. Allowed here: {', '.join(sorted(fields))}."
        )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{path}: {key} is required.")
            continue
        kwargs[name] = _value(hints[name], data[name], path, key, f)
    return cls(**kwargs)


def _value(tp: Any, value: Any, path: Path, key: str, f: dataclasses.Field[Any] | None) -> Any:
    origin = typing.get_origin(tp)
    if origin is types.UnionType or origin is typing.Union:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        origin = typing.get_origin(tp)
    bad = ConfigError(f"{path}: {key} must be {_type_name(tp)}, not {value!r}.")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, key)
    if origin is tuple:
        if not isinstance(value, list):
            raise bad
        item_tp = typing.get_args(tp)[0]
        return tuple(_value(item_tp, v, path, f"{key}[{i}]", None) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        _, val_tp = typing.get_args(tp)
        return {str(k): _value(val_tp, v, path, f"{key}.{k}", None) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        if value < 0:
            raise ConfigError(f"{path}: {key} must not be negative, not {value}.")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        if value < 0:
            raise ConfigError(f"{path}: {key} must not be negative, not {value}.")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        choices = f.metadata.get("choices") if f is not None else None
        if choices and value not in choices:
            raise ConfigError(f"{path}: {key} is {value!r}; allowed: {', '.join(choices)}.")
        return value
    raise bad  # pragma: no cover - every declared type is handled above


def _check(cfg: Config) -> None:
    """Rules that span keys."""
    p = cfg.path
    seen: set[str] = set()
    for i, mb in enumerate(cfg.mailboxes):
        where = f"mailboxes[{i}]"
        if not NAME_RE.match(mb.name):
            raise ConfigError(
                f"{p}: {where}.name {mb.name!r} must start with a letter or digit and use only letters, "
                "digits, spaces, '.', '_' and '-' (at most 64)."
            )
        if mb.name.casefold() in seen:
            raise ConfigError(f"{p}: {where}.name {mb.name!r} is used by another mailbox; names must be unique.")
        seen.add(mb.name.casefold())
        if mb.connection == "folder":
            if not mb.path:
                raise ConfigError(f"{p}: {where}.path is required for a folder mailbox (a directory of .eml files).")
        elif not mb.credentials:
            raise ConfigError(
                f"{p}: {where} ({mb.name}) has no [[mailboxes.credentials]]; a {mb.connection} mailbox needs "
                "at least one. Add one with `integrator mailbox add` or `integrator credentials add`."
            )
        if mb.incoming.after_import == "move_to_folder" and mb.connection == "pop3":
            raise ConfigError(
                f"{p}: {where}.incoming.after_import = \"move_to_folder\" is not possible over POP3, which has no "
                "folders: use \"delete\" or \"mark_read\" (leave the emails on the server), or connect with IMAP."
            )
        if mb.incoming.after_import == "move_to_folder" and not mb.incoming.move_folder:
            raise ConfigError(
                f"{p}: {where}.incoming.move_folder is required when after_import = \"move_to_folder\"."
            )
        if "{id}" not in mb.incoming.ticket_tag:
            raise ConfigError(
                f"{p}: {where}.incoming.ticket_tag {mb.incoming.ticket_tag!r} must contain {{id}}, e.g. \"[#{{id}}]\"."
            )
        if mb.incoming.batch_size < 1:
            raise ConfigError(f"{p}: {where}.incoming.batch_size must be at least 1.")
        names: set[str] = set()
        for j, cred in enumerate(mb.credentials):
            if not NAME_RE.match(cred.name):
                raise ConfigError(f"{p}: {where}.credentials[{j}].name {cred.name!r} is not a valid name.")
            if cred.name in names:
                raise ConfigError(f"{p}: {where}.credentials[{j}].name {cred.name!r} is used twice in this mailbox.")
            names.add(cred.name)
            if mb.connection in ("imap", "pop3") and not cred.host:
                raise ConfigError(f"{p}: {where}.credentials[{j}].host is required for a {mb.connection} mailbox.")
            if cred.oauth_provider != "none":
                at = f"{p}: {where}.credentials[{j}]"
                if mb.connection not in ("imap", "pop3") or cred.auth != "oauth2":
                    raise ConfigError(
                        f"{at}.oauth_provider = {cred.oauth_provider!r} is for an IMAP or POP3 credential with "
                        'auth = "oauth2"; remove it, or set auth = "oauth2".'
                    )
                ms_app = cred.client_id and (cred.tenant_id or cred.authority)
                if cred.oauth_provider == "microsoft365" and not ms_app:
                    raise ConfigError(
                        f'{at}: oauth_provider = "microsoft365" needs client_id and tenant_id (the app registration '
                        "in Entra ID that holds the IMAP.AccessAsApp or POP.AccessAsApp permission)."
                    )

    from halo_integrator.rules import FIELDS, check_pattern

    def check_rules(rules: tuple[Rule, ...], where: str) -> None:
        names: set[str] = set()
        for j, rule in enumerate(rules):
            at = f"{where}[{j}]"
            if rule.name in names:
                raise ConfigError(f"{p}: {at}.name {rule.name!r} is used twice; rule names must be unique.")
            names.add(rule.name)
            for k, cond in enumerate(rule.conditions):
                ck = f"{at}.conditions[{k}]"
                if cond.field not in FIELDS and not (cond.field.startswith("header:") and cond.field[7:].strip()):
                    raise ConfigError(
                        f"{p}: {ck}.field is {cond.field!r}; allowed: {', '.join(FIELDS)}, or header:<Name>."
                    )
                if cond.op == "regex" and (why := check_pattern(cond.value)):
                    raise ConfigError(f"{p}: {ck}.value {why}.")
            pattern = rule.actions.update_ticket_pattern
            if pattern and (why := check_pattern(pattern, needs_group=True)):
                raise ConfigError(f"{p}: {at}.actions.update_ticket_pattern {why}.")

    check_rules(cfg.rules, "rules")
    for i, mb in enumerate(cfg.mailboxes):
        check_rules(mb.rules, f"mailboxes[{i}].rules")
    for i, pattern in enumerate(cfg.exclusions.patterns):
        if why := check_pattern(pattern):
            raise ConfigError(f"{p}: exclusions.patterns[{i}] {why}.")

    for i, group in enumerate(cfg.message_groups):
        for kind, tmpl in group.templates.items():
            where = f"message_groups[{i}].templates.{kind}"
            if kind not in TEMPLATE_KINDS:
                raise ConfigError(f"{p}: {where} is not a template kind; allowed: {', '.join(TEMPLATE_KINDS)}.")
            for part, text in (("subject", tmpl.subject), ("body", tmpl.body)):
                if problem := template_problem(text):
                    raise ConfigError(f"{p}: {where}.{part} {problem}.")
    groups = {"Default"} | {g.name for g in cfg.message_groups}
    for i, mb in enumerate(cfg.mailboxes):
        if mb.outgoing.message_group not in groups:
            raise ConfigError(
                f"{p}: mailboxes[{i}].outgoing.message_group {mb.outgoing.message_group!r} is not defined; "
                f"defined: {', '.join(sorted(groups))}."
            )
    agents: set[str] = set()
    for i, agent in enumerate(cfg.agents):
        if agent.name.casefold() in agents:
            raise ConfigError(f"{p}: agents[{i}].name {agent.name!r} is used twice.")
        agents.add(agent.name.casefold())


# --------------------------------------------------------------------------------------------- writing


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config (or any part of one) as TOML-ready data, leaving out values equal to their defaults."""
    out: dict[str, Any] = _dump(cfg)
    return out


def _dump(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            if f.metadata.get("internal"):
                continue
            value = getattr(obj, f.name)
            default = (
                f.default
                if f.default is not dataclasses.MISSING
                else (f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
            )
            if value == default:
                continue
            out[f.name] = _dump(value)
        return out
    if isinstance(obj, tuple):
        return [_dump(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _dump(v) for k, v in obj.items()}
    return obj


def write_text_atomic(path: Path, text: str, *, backup: bool = True, mode: int = 0o600) -> None:
    """Write a file through a temporary file and a rename, keeping the old one as ``.bak``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
            if backup:
                shutil.copy2(path, path.with_name(path.name + ".bak"))
        else:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(cfg: Config, path: Path | None = None) -> None:
    """Validate and write the config atomically (temp file + rename), keeping a ``.bak``."""
    import tomli_w

    target = path or cfg.path
    data = to_dict(cfg)
    from_dict(data, target)  # never write what we could not read back
    write_text_atomic(target, tomli_w.dumps(data))


def replace_mailbox(cfg: Config, mailbox: Mailbox) -> Config:
    """A copy of the config with the mailbox of that name replaced (or added at the end)."""
    out = []
    found = False
    for mb in cfg.mailboxes:
        if mb.name.casefold() == mailbox.name.casefold():
            out.append(mailbox)
            found = True
        else:
            out.append(mb)
    if not found:
        out.append(mailbox)
    return dataclasses.replace(cfg, mailboxes=tuple(out))


def instance_override(option: str | None = None) -> str | None:
    """The instance asked for by ``--instance`` or else ``$INTEGRATOR_INSTANCE``; None means the config's."""
    return option or os.environ.get("INTEGRATOR_INSTANCE") or None


def env_number(
    name: str, default: float, *, whole: bool = False, minimum: float = 0, maximum: float = 1_000_000
) -> float:
    """The number in the environment variable ``name``, or ``default`` when it is unset or empty. Anything else
    is a ConfigError that names the variable, not a traceback in the middle of a run."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        value = None
    if value is None or not minimum <= value <= maximum:  # also refuses nan and inf
        kind = "a whole number" if whole else "a number"
        raise ConfigError(
            f"${name} must be {kind} from {minimum:g} to {maximum:,.0f}, not {raw!r}; unset it for the default."
        )
    return value
