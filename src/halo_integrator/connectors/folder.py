"""The ``folder`` connector: a directory of ``.eml`` files, or a Maildir (``new/`` and ``cur/``).

The embedded default that needs no server, and the simplest example of the connector contract.

* ``source_id`` is the file's path relative to the mailbox folder (``ticket.eml``). A Maildir message's is
  ``new/`` and its unique name (``new/1700000000.M1.host``) wherever it is now and whatever its flags: a mail
  client that reads it moves it to ``cur/`` and adds ``:2,S``, and it keeps its id.
* "Deleted Items" is a folder beside the mailbox folder: ``incoming.deleted_folder``, default
  ``<path>/../<name> Deleted Items`` for a plain directory and ``<maildir>/.Trash`` for a Maildir. Files move
  there only in :meth:`dispose`, after the commit; a name already taken there gets a numbered suffix, so
  nothing is overwritten.
* ``delete`` removes the file; ``move_to_folder`` moves it to ``incoming.move_folder``; ``mark_read`` moves a
  Maildir file from ``new/`` to ``cur/`` with the ``S`` flag, and leaves a plain file where it is (the importer
  remembers it). With ``mark_read`` a Maildir message someone has read (``S``) is still listed when it came
  after reading began (its file time is after the read mark) or a run listed it and has not settled it: only
  the mail read before reading began is left alone (see the read-mark section of :class:`FolderConnector`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from halo_integrator.connectors.base import Check, Connector, TestReport
from halo_integrator.errors import DisposeError, RetrievalError

log = logging.getLogger(__name__)

SKIP_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
EMAIL_SUFFIXES = {".eml", ".msg", ".txt", ".box", ".mbox", ""}


class FolderConnector(Connector):
    kind = "folder"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        rel = self.mailbox.incoming.folder or self.mailbox.path
        self.root = self.config.resolve(rel)
        self.maildir = is_maildir(self.root)
        self._paths: dict[str, str] = {}  # id -> where the file is now
        self._mtimes: dict[str, float] = {}  # id -> its file time

    # lifecycle -------------------------------------------------------------------------------------
    def open(self) -> None:
        if not self.root.exists():
            raise RetrievalError(
                f"Mailbox {self.mailbox.name!r}: the folder {self.root} does not exist. Create it or fix "
                f"`path` in the config."
            )
        if not self.root.is_dir():
            raise RetrievalError(f"Mailbox {self.mailbox.name!r}: {self.root} is not a folder.")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise RetrievalError(
                f"Mailbox {self.mailbox.name!r}: cannot read the folder {self.root}. Give this user read access."
            )

    def close(self) -> None:
        self._paths.clear()

    # reading ---------------------------------------------------------------------------------------
    @property
    def deleted_dir(self) -> Path:
        if self.mailbox.incoming.deleted_folder:
            return self.config.resolve(self.mailbox.incoming.deleted_folder)
        if self.maildir:
            return self.root / ".Trash"
        return self.root.parent / f"{self.root.name} Deleted Items"

    def _candidates(self) -> list[tuple[float, str, str]]:
        """(modification time, file name, path) of every email file there."""
        dirs = [self.root / "new", self.root / "cur"] if self.maildir else [self.root]
        found: list[tuple[float, str, str]] = []
        for d in dirs:
            try:
                entries = list(os.scandir(d))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise RetrievalError(f"Mailbox {self.mailbox.name!r}: cannot list {d}: {exc.strerror}.") from None
            for entry in entries:
                if entry.name.startswith(".") or entry.name in SKIP_NAMES:
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                if not self.maildir and os.path.splitext(entry.name)[1].lower() not in EMAIL_SUFFIXES:
                    continue
                try:
                    mtime = entry.stat(follow_symlinks=False).st_mtime  # delivery time: a rename keeps it
                except OSError:
                    mtime = 0.0
                found.append((mtime, entry.name, entry.path))
        return found

    def _source_id(self, path: str) -> str:
        if self.maildir:
            return "new/" + os.path.basename(path).partition(":2,")[0]
        return os.path.relpath(path, self.root).replace(os.sep, "/")

    def _scan(self) -> list[tuple[float, str, str]]:
        """Every email file there, oldest first; remembers where each id is now and its file time."""
        # plain strings, not Path objects: a folder of 100,000 emails stays small in memory
        candidates = sorted(self._candidates())
        self._paths, self._mtimes = {}, {}
        for mtime, _, path in candidates:
            source_id = self._source_id(path)
            self._paths[source_id], self._mtimes[source_id] = path, mtime
        return candidates

    def list_ids(self) -> list[str]:
        candidates = self._scan()
        if not self._keeps_read_mail:
            return list(self._paths)
        stored = self._read_state()
        mark, pending = stored if stored is not None else self._begin_reading()
        listed: list[str] = []
        for mtime, name, path in candidates:
            source_id = self._source_id(path)
            read = os.path.basename(os.path.dirname(path)) == "cur" and "S" in name.partition(":2,")[2]
            if read and mtime < mark and source_id not in pending:
                continue  # read before reading began: old mail, left alone
            listed.append(source_id)
        # what this scan did not see stays pending (a file being renamed can be missed once)
        waiting = pending | set(listed)
        if waiting != pending or stored is None:
            self._write_read_state(mark, waiting)
        return listed

    # mark_read on a Maildir: the read mark ---------------------------------------------------------------
    # Reading begins with the messages there then: the unread ones are imported, the ones already read are left
    # alone (unless earlier runs read the folder with another after_import: then what came since two days
    # before the last of them settled, ``settled`` in state, is unfinished, read or not). From
    # then on a new message is imported whether or not someone has read it first. One state key,
    # ``read_mark``, written in one go, holds the file time (modification time, which a Maildir keeps as the
    # delivery time) before which a read message is old (reading begins five minutes before the first
    # listing), and ``pending``, the ids a run listed and has not settled, listed until settled even once read.
    # At the end of each run (:meth:`settled`) the mark moves up to the newest file time it settled, but never
    # to within a day of now (a message whose file time is a little in the past still counts as new), and
    # pending becomes what it left (--limit, a stop, a failure, not fetched). A Maildir has no arrival order
    # beyond that: a message moved in from another folder keeps its file time, and if it is older than the
    # mark and already read it is taken for old mail.

    @property
    def _keeps_read_mail(self) -> bool:
        return self.maildir and self.mailbox.incoming.after_import == "mark_read"

    def _read_state(self) -> tuple[float, set[str]] | None:
        try:
            stored = json.loads(self.state.get("read_mark") or "")
            return float(stored["mark"]), {str(i) for i in stored["pending"]}
        except (ValueError, TypeError, KeyError):
            return None

    def _begin_reading(self) -> tuple[float, set[str]]:
        """The mark and the pending ids when reading begins (nothing is written)."""
        since = self._settled_since("settled")
        if since:  # runs with another after_import took out what they imported
            start = datetime.combine(since, datetime.min.time(), UTC).timestamp()
            return time.time() - 300, {i for i, mtime in self._mtimes.items() if mtime >= start}
        return time.time() - 300, set()

    def _write_read_state(self, mark: float, pending: set[str]) -> None:
        self.state.set("read_mark", json.dumps({"mark": mark, "pending": sorted(pending)}))

    def settled(self, done: Sequence[str], left: Sequence[str]) -> None:
        if not self.maildir:
            return
        self._note_settled("settled", left)
        if not self._keeps_read_mail:
            return
        stored = self._read_state()
        if stored is None:
            return
        mark, pending = stored
        newest = max((self._mtimes.get(i, 0.0) for i in done), default=0.0)
        # what is left stays pending; so does a pending file this listing missed, while it is still there
        missed = pending - set(done) - set(left)
        if missed:
            self._scan()
            missed &= set(self._paths)
        waiting = set(left) | missed
        new_mark = max(mark, min(newest, time.time() - 86400))
        if (new_mark, waiting) != (mark, pending):
            self._write_read_state(new_mark, waiting)

    def _path(self, source_id: str) -> Path | None:
        path = self._paths.get(source_id)
        if path is not None and os.path.exists(path):
            return Path(path)
        self._scan()  # a mail client may have renamed it (Maildir flags)
        path = self._paths.get(source_id)
        return Path(path) if path is not None else None

    def fetch(self, ids: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        for source_id in ids:
            path = self._path(source_id)
            if path is None:
                log.info("%s: %s vanished before it was read", self.mailbox.name, source_id)
                continue
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise RetrievalError(
                    f"Mailbox {self.mailbox.name!r}: cannot read {path}: {exc.strerror}. Give this user read access."
                ) from None
            yield source_id, data

    # writing ---------------------------------------------------------------------------------------
    def dispose(self, ids: Sequence[str]) -> None:
        action = self.mailbox.incoming.after_import
        for source_id in ids:
            path = self._path(source_id)
            if path is None:
                continue  # already gone: disposal is done
            try:
                if action == "delete":
                    path.unlink()
                elif action == "move_to_deleted":
                    _move_unique(path, self.deleted_dir)
                elif action == "move_to_folder":
                    _move_unique(path, self.config.resolve(self.mailbox.incoming.move_folder))
                elif action == "mark_read" and self.maildir:
                    name = path.name.partition(":2,")
                    flags = "".join(sorted(set(name[2]) | {"S"}))
                    path.rename(self.root / "cur" / f"{name[0]}:2,{flags}")
            except OSError as exc:
                raise DisposeError(
                    f"Mailbox {self.mailbox.name!r}: imported {source_id} but could not {action.replace('_', ' ')} "
                    f"it ({exc.strerror or exc}). It stays where it is and is not imported again."
                ) from None
            self._paths.pop(source_id, None)

    def quarantine(self, ids: Sequence[str]) -> None:
        target = self.root.parent / f"{self.root.name} {self.mailbox.incoming.quarantine_folder}"
        for source_id in ids:
            path = self._path(source_id)
            if path is not None:
                try:
                    _move_unique(path, target)
                except OSError as exc:
                    log.warning("could not move %s to %s: %s", path, target, exc)

    # diagnostics -----------------------------------------------------------------------------------
    def test(self) -> TestReport:
        report = TestReport(folder=str(self.root), deleted_folder=str(self.deleted_dir))
        try:
            self.open()
            ids = self.list_ids()
        except RetrievalError as exc:
            report.checks.append(Check(name="folder", ok=False, detail=str(exc), fix="Fix `path` in the config."))
            return report
        kind = "Maildir" if self.maildir else "folder of .eml files"
        report.checks.append(Check(name="folder", ok=True, detail=f"{self.root} is a readable {kind}"))
        report.message_count = len(ids)
        writable = os.access(self.root if not self.maildir else self.root / "new", os.W_OK)
        report.checks.append(
            Check(
                name="dispose",
                ok=writable or self.mailbox.incoming.after_import == "mark_read",
                detail="files can be moved after import" if writable else f"{self.root} is not writable",
                fix="Give this user write access so imported emails can be moved to Deleted Items.",
            )
        )
        return report


def _move_unique(path: Path, target_dir: Path) -> Path:
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / path.name
    n = 1
    while target.exists():
        target = target_dir / f"{path.stem}.{n}{path.suffix}"
        n += 1
    shutil.move(path, target)  # a rename on one file system, copy + delete across file systems
    return target


def is_maildir(root: Path) -> bool:
    """Whether a mailbox folder is a Maildir (it has ``new/`` or ``cur/``) rather than a folder of email files."""
    return (root / "new").is_dir() or (root / "cur").is_dir()
