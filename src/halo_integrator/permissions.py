"""Who may read and write the files that matter: the config, the database, the log file, the master key.

On POSIX a file another user can write could redirect mail or plant tickets, so group/other write access is
a failure; a file others can read leaks addresses and subjects (or, for a key file, secrets), a warning (a
failure for secrets). On Windows the mode bits say little about ACLs, so these checks are skipped there.
"""

from __future__ import annotations

import shlex
import stat
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class PermissionVerdict:
    status: str  # "ok" | "warn" | "fail" | "skip"
    reason: str
    fix: str = ""


def check_private_file(path: Path, *, secret: bool = False, platform: str | None = None) -> PermissionVerdict:
    """Judge one file's mode bits: writable by group/others → fail; readable by others → warn (fail when
    ``secret``); missing → skip."""
    platform = sys.platform if platform is None else platform
    if platform == "win32":
        return PermissionVerdict(status="skip", reason="mode bits are not checked on Windows (see its ACLs)")
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return PermissionVerdict(status="skip", reason=f"{path} does not exist")
    except OSError as exc:
        return PermissionVerdict(status="fail", reason=f"cannot look at {path}: {exc.strerror or exc}")
    quoted = shlex.quote(str(path))
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "others" if mode & stat.S_IWOTH else "its group"
        return PermissionVerdict(
            status="fail",
            reason=f"{path} is writable by {who} (mode {mode:04o})",
            fix=f"chmod go-w {quoted}" if not secret else f"chmod 600 {quoted}",
        )
    if mode & (stat.S_IROTH | (stat.S_IRGRP if secret else 0)):
        who_reads = "others" if mode & stat.S_IROTH else "its group"
        return PermissionVerdict(
            status="fail" if secret else "warn",
            reason=f"{path} is readable by {who_reads} (mode {mode:04o})",
            fix=f"chmod 600 {quoted}" if secret else f"chmod o-rwx {quoted}",
        )
    return PermissionVerdict(status="ok", reason=f"{path} is private (mode {mode:04o})")
