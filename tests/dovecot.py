"""A throw-away Dovecot (IMAP, IMAPS, POP3, POP3S) on 127.0.0.1 for the connector tests.

tests/conftest.py registers the fixtures once, so a test just names ``dovecot_server`` and ``dovecot_user``.

The server is started once per test session by ``start-dovecot.sh`` (beside this file) in a fresh directory
directly under the system temp dir (Dovecot's own processes cannot enter pytest's 0700 tmp dirs), with a
self-signed certificate for localhost/127.0.0.1, and stopped at the end. Any user name ``U`` logs in with the
password ``pw-U`` and gets a fresh, empty mailbox, so every test uses its own user.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
from imapclient import IMAPClient

START_DOVECOT = Path(__file__).resolve().parent / "start-dovecot.sh"

# Dovecot with MOVE hidden from the post-login CAPABILITY list (the commands still work; a client that
# honours capabilities falls back to COPY + UID EXPUNGE). The second variant also hides UIDPLUS.
_CAPS = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS "
    "THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE LIST-EXTENDED "
    "I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY "
    "SPECIAL-USE"
)
NO_MOVE_CONF = f"protocol imap {{\n  imap_capability = {_CAPS} UIDPLUS\n}}\n"
NO_MOVE_NO_UIDPLUS_CONF = f"protocol imap {{\n  imap_capability = {_CAPS}\n}}\n"
# Trash without its \Trash attribute and not created: as on servers that mark no special-use folders
NO_TRASH_CONF = "namespace inbox {\n  mailbox Trash {\n    special_use =\n    auto = no\n  }\n}\n"
# the \Trash attribute on a folder with an unusual name, and a plain "Trash" beside it as a decoy
BIN_TRASH_CONF = (
    "namespace inbox {\n  mailbox Trash {\n    special_use =\n    auto = create\n  }\n"
    "  mailbox Bin {\n    special_use = \\Trash\n    auto = create\n  }\n}\n"
)


@dataclass
class User:
    name: str
    password: str


@dataclass
class Dovecot:
    """One running instance: its ports, CA certificate and helpers for independent checks."""

    dir: Path
    conf: Path
    ca: Path
    imap_port: int
    imaps_port: int
    pop3_port: int
    pop3s_port: int
    proc: subprocess.Popen[bytes] = field(repr=False)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def new_user(self) -> User:
        name = "t" + uuid.uuid4().hex[:12]
        return User(name=name, password="pw-" + name)

    def imap(self, user: User) -> IMAPClient:
        """An independent, logged-in IMAP session (plain text on loopback) to seed and inspect mail."""
        client = IMAPClient("127.0.0.1", port=self.imap_port, ssl=False, timeout=10)
        client.login(user.name, user.password)
        return client

    def append(
        self, user: User, messages: list[bytes], folder: str = "INBOX", *, arrived: list[datetime] | None = None
    ) -> None:
        """Put messages into one of a user's folders (one APPEND each, in order), with their arrival times
        (INTERNALDATE) when given, else now."""
        client = self.imap(user)
        try:
            for n, message in enumerate(messages):
                client.append(folder, message, msg_time=arrived[n] if arrived else None)
        finally:
            client.logout()

    def renumber(self, user: User, uidvalidity: int, folder: str = "INBOX") -> None:
        """A new UIDVALIDITY for a folder, as after a migration or an index rebuild."""
        self.doveadm("mailbox", "update", "-u", user.name, "--uid-validity", str(uidvalidity), folder)

    def doveadm(self, *args: str, stdin: bytes | None = None) -> str:
        out = subprocess.run(
            ["doveadm", "-c", str(self.conf), *args], input=stdin, check=True, capture_output=True, timeout=30
        )
        return out.stdout.decode()

    def stop(self) -> None:
        self.proc.terminate()  # the script exec'd dovecot -F: this PID is the master
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _wait_greeting(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing answers on 127.0.0.1:{port}")
        time.sleep(0.02)


def start_dovecot(extra_conf: str = "") -> Dovecot:
    """Start an instance (retrying when a randomly chosen port was taken meanwhile)."""
    last_error = ""
    for _attempt in range(3):
        d = Path(tempfile.mkdtemp(prefix="halo-dovecot-"))
        errlog = d.parent / (d.name + ".stderr")
        env = dict(os.environ, DOVECOT_FOREGROUND="1", DOVECOT_EXTRA_CONF=extra_conf)
        with open(errlog, "wb") as err:
            proc = subprocess.Popen(
                ["bash", str(START_DOVECOT), str(d)], env=env, stdout=subprocess.DEVNULL, stderr=err
            )
        try:
            deadline = time.monotonic() + 30
            while not (d / "ports.env").exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(errlog.read_text())
                time.sleep(0.02)
            time.sleep(0.05)  # the file is written in one printf; let it land
            info = dict(line.split("=", 1) for line in (d / "ports.env").read_text().split())
            server = Dovecot(
                dir=d,
                conf=Path(info["DOVECOT_CONF"]),
                ca=Path(info["DOVECOT_CA"]),
                imap_port=int(info["IMAP_PORT"]),
                imaps_port=int(info["IMAPS_PORT"]),
                pop3_port=int(info["POP3_PORT"]),
                pop3s_port=int(info["POP3S_PORT"]),
                proc=proc,
            )
            for port in (server.imap_port, server.pop3_port):
                if proc.poll() is not None:
                    raise RuntimeError(errlog.read_text())
                _wait_greeting(port)
            return server
        except (RuntimeError, TimeoutError) as exc:
            last_error = str(exc)
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
            shutil.rmtree(d, ignore_errors=True)
        finally:
            errlog.unlink(missing_ok=True)
    raise RuntimeError(f"start-dovecot.sh failed three times: {last_error}")


def _require_dovecot() -> None:
    if shutil.which("dovecot") is None or shutil.which("doveadm") is None:
        why = "Dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d); CI installs it"
        if os.environ.get("CI"):
            pytest.fail(why)  # in CI a skipped real-server test would hide a missing install step
        pytest.skip(why)


def _serve(extra_conf: str = "") -> Iterator[Dovecot]:
    """A Dovecot for the whole session, stopped at its end."""
    _require_dovecot()
    server = start_dovecot(extra_conf)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[Dovecot]:
    """The session's Dovecot with default settings."""
    yield from _serve()


@pytest.fixture(scope="session")
def dovecot_no_move() -> Iterator[Dovecot]:
    """A Dovecot that does not advertise MOVE (UIDPLUS yes)."""
    yield from _serve(NO_MOVE_CONF)


@pytest.fixture(scope="session")
def dovecot_no_uidplus() -> Iterator[Dovecot]:
    """A Dovecot that advertises neither MOVE nor UIDPLUS."""
    yield from _serve(NO_MOVE_NO_UIDPLUS_CONF)


@pytest.fixture(scope="session")
def dovecot_no_trash() -> Iterator[Dovecot]:
    """A Dovecot with no folder marked \\Trash (and no Trash folder until a test creates one)."""
    yield from _serve(NO_TRASH_CONF)


@pytest.fixture(scope="session")
def dovecot_bin_trash() -> Iterator[Dovecot]:
    """A Dovecot whose \\Trash folder is called Bin, with an ordinary folder called Trash beside it."""
    yield from _serve(BIN_TRASH_CONF)


@pytest.fixture
def dovecot_user(dovecot_server: Dovecot) -> User:
    """A fresh, empty mailbox on the session's Dovecot."""
    return dovecot_server.new_user()
